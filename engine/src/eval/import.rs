//! Importers of scores computed by other tools: lm-evaluation-harness `results*.json` files and
//! TRACE's per-task inference outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EvalError, Metric, score};

/// One task's score from an lm-evaluation-harness results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessScore {
    pub task: String,
    /// The metric chosen: `acc_norm`, `acc` or `exact_match`.
    pub metric: String,
    /// The key it was read from (`acc_norm,none`, `exact_match,strict-match`, or an old `acc`).
    pub key: String,
    pub score: f64,
    /// Examples evaluated (`n-samples.<task>.effective`), when the file says.
    pub n: Option<usize>,
}

/// What an lm-evaluation-harness results file holds for clreg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessImport {
    /// Tasks (and groups) with a usable metric, in name order.
    pub tasks: Vec<HarnessScore>,
    /// Tasks with none of `acc_norm`, `acc`, `exact_match` (perplexity-only tasks …).
    pub skipped: Vec<String>,
}

/// The metrics clreg reads from harness results, best first (REFERENCE.md, "Evaluation").
const HARNESS_PREFERENCE: [&str; 3] = ["acc_norm", "acc", "exact_match"];

/// Reads an lm-evaluation-harness `results*.json` (`file` only names it in errors).
///
/// The file is an object whose `results` maps each task to its metrics. Keys are
/// `<metric>,<filter>` in harness ≥ 0.4 (`acc,none`, `exact_match,strict-match`) and bare
/// `<metric>` in older versions; `*_stderr` keys, `alias` and non-numeric values ("N/A") are
/// ignored. Per task the first present of `acc_norm`, `acc`, `exact_match` is taken, and for that
/// metric the filter `none`, then `strict-match`, then the first other filter by name.
pub fn import_harness(bytes: &[u8], file: &str) -> Result<HarnessImport, EvalError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| EvalError::results(file, format!("not JSON: {e}")))?;
    let results = doc
        .get("results")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            EvalError::results(
                file,
                "no `results` object: give the results_*.json that lm-evaluation-harness writes \
             with --output_path",
            )
        })?;
    let samples = doc.get("n-samples").and_then(Value::as_object);
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    let mut names: Vec<&String> = results.keys().collect();
    names.sort();
    for task in names {
        let Some(metrics) = results[task].as_object() else {
            return Err(EvalError::results(
                file,
                format!("results.{task} is not an object of metrics"),
            ));
        };
        let Some((metric, key, value)) = pick_harness_metric(metrics) else {
            skipped.push(task.clone());
            continue;
        };
        if !value.is_finite() {
            return Err(EvalError::results(
                file,
                format!("results.{task}.{key} is not a finite number"),
            ));
        }
        let n = samples
            .and_then(|s| s.get(task))
            .and_then(|s| s.get("effective"))
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        tasks.push(HarnessScore {
            task: task.clone(),
            metric: metric.to_string(),
            key,
            score: value,
            n,
        });
    }
    Ok(HarnessImport { tasks, skipped })
}

fn pick_harness_metric(
    metrics: &serde_json::Map<String, Value>,
) -> Option<(&'static str, String, f64)> {
    for metric in HARNESS_PREFERENCE {
        let mut filtered: Vec<(&str, f64)> = metrics
            .iter()
            .filter_map(|(k, v)| {
                let filter = match k.split_once(',') {
                    Some((m, f)) if m == metric => f,
                    None if k == metric => "",
                    _ => return None,
                };
                v.as_f64().map(|v| (filter, v))
            })
            .collect();
        let rank = |f: &str| match f {
            "" | "none" => 0,
            "strict-match" => 1,
            _ => 2,
        };
        filtered.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
        if let Some((filter, v)) = filtered.first() {
            let key = if filter.is_empty() {
                metric.to_string()
            } else {
                format!("{metric},{filter}")
            };
            return Some((metric, key, *v));
        }
    }
    None
}

/// A TRACE inference output (BeyonderXX/TRACE `inference/infer_single.py`,
/// `save_inference_results`): one JSON object per task and round,
/// `{"eval": {...}, "prompts": [...], "results": [...], "labels": [...]}`, where `prompts` are
/// the inputs, `results` the generated texts and `labels` the answers (equal lengths), and `eval`
/// the task's metrics on TRACE's own scales: `accuracy` and `rouge-L` in [0, 1], `similarity`
/// (Py150's summed `fuzz.ratio` / n) and `sari` in [0, 100], `bleu-1`/`bleu-4` in [0, 1].
/// A metric value may be a number, or — as TRACE's `caculate_sari` returns a one-element tuple
/// of a dict — `[{"sari": x}]` or `{"sari": x}`; clreg reads the number inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResults {
    /// The `eval` metrics as numbers, on the file's scales.
    pub eval: BTreeMap<String, f64>,
    pub prompts: Vec<String>,
    pub results: Vec<String>,
    pub labels: Vec<String>,
}

/// TRACE's metric names, the scale each is on, best first: the score clreg reports for a file
/// is the first one present, divided by its scale.
const TRACE_PREFERENCE: [(&str, f64); 4] = [
    ("accuracy", 1.0),
    ("similarity", 100.0),
    ("sari", 100.0),
    ("rouge-L", 1.0),
];

impl TraceResults {
    /// The file's own headline score in [0, 1] and the `eval` key it came from: the first of
    /// `accuracy`, `similarity` (/100), `sari` (/100), `rouge-L`.
    pub fn score(&self) -> Option<(&'static str, f64)> {
        TRACE_PREFERENCE
            .iter()
            .find_map(|(k, scale)| self.eval.get(*k).map(|v| (*k, v / scale)))
    }

    /// Rescores the saved generations with clreg's `metric` (prompts as SARI sources): the mean
    /// over all examples; `None` when there are none or for [`Metric::Mc`], which needs the model.
    pub fn rescore(&self, metric: Metric) -> Option<f64> {
        if self.results.is_empty() || metric == Metric::Mc {
            return None;
        }
        let total: f64 = self
            .results
            .iter()
            .zip(&self.labels)
            .zip(&self.prompts)
            .map(|((pred, label), prompt)| score(metric, pred, label, prompt))
            .sum();
        Some(total / self.results.len() as f64)
    }
}

/// Reads a TRACE inference output (see [`TraceResults`]; `file` only names it in errors).
pub fn import_trace(bytes: &[u8], file: &str) -> Result<TraceResults, EvalError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| EvalError::results(file, format!("not JSON: {e}")))?;
    let obj = doc.as_object().ok_or_else(|| {
        EvalError::results(
            file,
            "expected an object with eval, prompts, results, labels",
        )
    })?;
    let strings = |key: &str| -> Result<Vec<String>, EvalError> {
        let arr = obj.get(key).and_then(Value::as_array).ok_or_else(|| {
            EvalError::results(file, format!("`{key}` is missing or not a list of strings"))
        })?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    EvalError::results(file, format!("`{key}[{i}]` is not a string"))
                })
            })
            .collect()
    };
    let (prompts, results, labels) = (strings("prompts")?, strings("results")?, strings("labels")?);
    if prompts.len() != results.len() || results.len() != labels.len() {
        return Err(EvalError::results(
            file,
            format!(
                "{} prompts, {} results and {} labels: the lists must be as long as each other",
                prompts.len(),
                results.len(),
                labels.len()
            ),
        ));
    }
    let mut eval = BTreeMap::new();
    match obj.get("eval") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match metric_number(k, v) {
                    Some(x) if x.is_finite() => {
                        eval.insert(k.clone(), x);
                    }
                    _ => {
                        return Err(EvalError::results(
                            file,
                            format!("eval.{k} is not a number (nor [{{\"{k}\": number}}])"),
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(EvalError::results(file, "`eval` is not an object")),
    }
    Ok(TraceResults {
        eval,
        prompts,
        results,
        labels,
    })
}

/// A metric value: a number, `{key: number}`, or a one-element list of either.
fn metric_number(key: &str, v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(m) => m.get(key).and_then(|x| metric_number(key, x)),
        Value::Array(a) if a.len() == 1 => metric_number(key, &a[0]),
        _ => None,
    }
}
