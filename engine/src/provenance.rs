//! The lineage a run's record implies: which inputs (named by the sha256 of their files) an
//! output was made from, how, and with which parameters. `clreg push` of a directory holding
//! `clreg_merge.json`, `clreg_mix.json` or `clreg_train.json` and a registry job read the same
//! record through [`read`], so a local run pushed and a server job give the same edges.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::FormatError;
use crate::merge::record::{FileHash, MergeRecord, RECORD as MERGE_RECORD};
use crate::moe::{MIX_RECORD, MixRecord};
use crate::train::{RECORD as TRAIN_RECORD, TrainRecord};

/// How an output relates to its inputs (the registry's lineage relation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Merge,
    Mix,
    /// A LoRA adapter trained on the input.
    Adapter,
    /// Full fine-tuning of the input, or training that continued from it.
    Finetune,
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    /// The path the run read it from (on the machine that ran it).
    pub path: PathBuf,
    /// The sha256 of each of its files the run read.
    pub files: Vec<FileHash>,
    pub relation: Relation,
    /// Every parameter of the run that concerns this input (role, weight, seed, …).
    pub params: Map<String, Value>,
    /// Hex sha256 of the datasets trained on (on the base's edge of a training run).
    pub datasets: Vec<String>,
}

/// What a record says about where an output came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// The record's file name.
    pub record: &'static str,
    /// `ties`, `mixtral`, `lora`, … as the record names it.
    pub method: String,
    /// `checkpoint` or `adapter` for merges and training, `mixtral` or `lora_moe` for mixes.
    pub output_kind: String,
    pub inputs: Vec<Input>,
}

/// The provenance of the output in `dir`, from the first record found there; `None` when it
/// holds none.
pub fn read(dir: &Path) -> Result<Option<Provenance>, FormatError> {
    let load = |name: &str| -> Result<Option<Vec<u8>>, FormatError> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FormatError::io(name, e.to_string())),
        }
    };
    let parse_err = |name: &str, e: serde_json::Error| {
        FormatError::io(
            name,
            format!("not a clreg record: {e}; remove it or restore it"),
        )
    };
    if let Some(bytes) = load(MERGE_RECORD)? {
        let r: MergeRecord =
            serde_json::from_slice(&bytes).map_err(|e| parse_err(MERGE_RECORD, e))?;
        return Ok(Some(from_merge(r)));
    }
    if let Some(bytes) = load(MIX_RECORD)? {
        let r: MixRecord = serde_json::from_slice(&bytes).map_err(|e| parse_err(MIX_RECORD, e))?;
        return Ok(Some(from_mix(r)));
    }
    if let Some(bytes) = load(TRAIN_RECORD)? {
        let r: TrainRecord =
            serde_json::from_slice(&bytes).map_err(|e| parse_err(TRAIN_RECORD, e))?;
        return Ok(Some(from_train(r)));
    }
    Ok(None)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(mut m) => {
            m.retain(|_, v| !v.is_null());
            m
        }
        _ => Map::new(),
    }
}

fn from_merge(r: MergeRecord) -> Provenance {
    let inputs = r
        .inputs
        .into_iter()
        .map(|i| Input {
            params: object(json!({
                "role": i.role, "weight": i.weight, "density": i.density,
                "flavour": r.flavour, "seed": r.recipe.seed,
            })),
            path: i.path,
            files: i.files,
            relation: Relation::Merge,
            datasets: vec![],
        })
        .collect();
    Provenance {
        record: MERGE_RECORD,
        method: r.method,
        output_kind: r.output_kind,
        inputs,
    }
}

fn from_mix(r: MixRecord) -> Provenance {
    let settings = json!({
        "gate_mode": r.router.init, "top_k": r.router.top_k, "gate_norm": r.router.gate_norm,
        "seed": r.router.seed,
    });
    let with = |extra: Value| {
        let mut m = object(settings.clone());
        m.extend(object(extra));
        m
    };
    // Router training, when it ran, is recorded on the base's edge with its dataset.
    let mut base_params = json!({"role": "base"});
    if let Some(t) = &r.training {
        base_params["router_training"] = json!({
            "steps": t.steps, "learning_rate": t.learning_rate, "aux_loss_coef": t.aux_loss_coef,
            "seed": t.seed, "sequences": t.sequences, "first_loss": t.first_loss,
            "last_loss": t.last_loss,
        });
    }
    let mut inputs = vec![Input {
        path: r.base,
        files: r.base_files,
        relation: Relation::Mix,
        params: with(base_params),
        datasets: r.training.iter().map(|t| t.data_sha256.clone()).collect(),
    }];
    for (i, e) in r.experts.into_iter().enumerate() {
        inputs.push(Input {
            params: with(json!({"role": "expert", "expert": i, "rank": e.rank,
                                "positive_prompts_sha256": e.positive_prompts_sha256})),
            path: e.source,
            files: e.files,
            relation: Relation::Mix,
            datasets: vec![],
        });
    }
    Provenance {
        record: MIX_RECORD,
        method: r.kind.clone(),
        output_kind: r.kind,
        inputs,
    }
}

fn from_train(r: TrainRecord) -> Provenance {
    let method = serde_json::to_value(r.config.method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let adapter = r.output_kind == "adapter";
    let mut inputs = vec![Input {
        path: r.base.path,
        files: r.base.files,
        relation: if adapter {
            Relation::Adapter
        } else {
            Relation::Finetune
        },
        // Every setting of the run is on the base's edge, as the record keeps it.
        params: object(serde_json::to_value(&r.config).unwrap_or_default()),
        datasets: r.data.iter().map(|d| d.sha256.clone()).collect(),
    }];
    for (round, a) in r.adapters.into_iter().enumerate() {
        inputs.push(Input {
            path: a.path,
            files: a.files,
            relation: Relation::Finetune,
            params: object(json!({"role": "earlier_adapter", "round": round + 1})),
            datasets: vec![],
        });
    }
    Provenance {
        record: TRAIN_RECORD,
        method,
        output_kind: r.output_kind,
        inputs,
    }
}
