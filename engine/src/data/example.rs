//! TRACE examples and their reader: a JSON array (or JSON Lines) of `{"prompt", "answer"}` objects.
//!
//! Errors name the 0-based example and the 1-based line, so a user can jump to the bad record.
//! Blank lines between JSON Lines records are skipped, as before.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::FormatError;

/// One TRACE example.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub prompt: String,
    pub answer: String,
    /// Multiple-choice options; `answer` is one of them exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// The source text a simplification is scored against (SARI); `prompt` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Reads a TRACE file (JSON array or JSON Lines); see [`parse_trace`].
pub fn read_trace(path: &Path) -> Result<Vec<Example>, FormatError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(&file, e.to_string()))?;
    parse_trace(&bytes, &file)
}

/// Parses a TRACE dataset. Errors are [`FormatError::InvalidDataset`] naming the 1-based line and
/// 0-based example: malformed JSON lines, a non-object example, a missing or non-string `prompt`
/// or `answer` (null counts as missing an answer), `choices` that are not strings or do not
/// contain the answer, a non-string `source`, an empty file. Other keys are allowed.
pub fn parse_trace(bytes: &[u8], file: &str) -> Result<Vec<Example>, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "the file is not UTF-8 ({e}); save it as UTF-8 JSON"
        ))
    })?;
    let examples = match text.trim_start().chars().next() {
        Some('[') => parse_array(text, file)?,
        Some('{') => parse_lines(text, file)?,
        _ => {
            return Err(bad(
                "not a JSON array: TRACE data is a JSON array of {\"prompt\", \"answer\"} \
                 objects (or JSON Lines, one object per line)"
                    .to_string(),
            ));
        }
    };
    if examples.is_empty() {
        return Err(bad(
            "the dataset has no examples; add at least one".to_string()
        ));
    }
    Ok(examples)
}

fn parse_array(text: &str, file: &str) -> Result<Vec<Example>, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("not valid JSON: {e}; fix the JSON syntax")))?;
    let Value::Array(items) = value else {
        return Err(bad(
            "not a JSON array of {\"prompt\", \"answer\"} objects".to_string()
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match to_example(item) {
            Ok(ex) => out.push(ex),
            Err(what) => {
                let line = element_lines(text).get(i).copied();
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                return Err(bad(format!("example {i}{at}: {what}")));
            }
        }
    }
    Ok(out)
}

fn parse_lines(text: &str, file: &str) -> Result<Vec<Example>, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (line_no, count) = (n + 1, out.len());
        let value: Value = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "line {line_no} (example {count}): not valid JSON ({e}); JSON Lines needs one \
                 complete object per line"
            ))
        })?;
        let ex = to_example(value)
            .map_err(|what| bad(format!("line {line_no} (example {count}): {what}")))?;
        out.push(ex);
    }
    Ok(out)
}

/// The example in `v`, or what is wrong with it.
pub(crate) fn to_example(v: Value) -> Result<Example, String> {
    let Value::Object(mut map) = v else {
        return Err(format!(
            "is {}, not an object; each example must be {{\"prompt\": \"...\", \"answer\": \"...\"}}",
            kind(&v)
        ));
    };
    let prompt = required_string(&mut map, "prompt")?;
    let answer = required_string(&mut map, "answer")?;
    let choices = match map.remove("choices") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut choices = Vec::with_capacity(items.len());
            for (j, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => choices.push(s),
                    other => {
                        return Err(format!(
                            "`choices[{j}]` is {}, not a string; make every choice a string",
                            kind(&other)
                        ));
                    }
                }
            }
            if !choices.contains(&answer) {
                return Err(format!(
                    "`choices` does not contain the answer {answer:?}; the answer must be one \
                     of the choices exactly (spaces included)"
                ));
            }
            Some(choices)
        }
        Some(other) => {
            return Err(format!(
                "`choices` is {}, not an array of strings; make it an array of strings",
                kind(&other)
            ));
        }
    };
    let source = match map.remove("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "`source` is {}, not a string; make it a string or leave it out",
                kind(&other)
            ));
        }
    };
    Ok(Example {
        prompt,
        answer,
        choices,
        source,
    })
}

fn required_string(map: &mut Map<String, Value>, key: &str) -> Result<String, String> {
    match map.remove(key) {
        None => Err(format!("`{key}` is missing; add a string `{key}`")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "`{key}` is {}, not a string; make it a string",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The 1-based line on which each element of the top-level array starts. Only called on the
/// error path, on text already known to be valid JSON.
fn element_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut depth, mut line) = (0usize, 1usize);
    let (mut in_str, mut escaped, mut expect_value) = (false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if depth == 1 && expect_value && c != ']' {
            out.push(line);
            expect_value = false;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expect_value = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expect_value = true,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_lines_follow_the_array() {
        let text = "[\n {\"a\": \"x,\\\"[\"},\n\n {\"b\": [1,\n2]}, 3\n]";
        assert_eq!(element_lines(text), vec![2, 4, 5]);
    }
}
