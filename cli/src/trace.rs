//! Local TRACE dataset validation (`[{"prompt": …, "answer": …}]`), so a bad file is refused
//! before anything is sent. The server validates again.

use std::fmt;

/// Why a file is not a TRACE dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError(pub String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

/// Checks `bytes` (the content of `file`) and returns the number of examples.
pub fn validate_trace(bytes: &[u8], file: &str) -> Result<usize, TraceError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        TraceError(format!(
            "{file}: not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Array(items) = value else {
        return Err(TraceError(format!(
            "{file}: a TRACE dataset is a JSON array of {{\"prompt\", \"answer\"}} objects"
        )));
    };
    if items.is_empty() {
        return Err(TraceError(format!("{file}: the dataset has no examples")));
    }
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(TraceError(format!("{file}: example {i} (0-based) is not an object")));
        };
        for field in ["prompt", "answer"] {
            match obj.get(field) {
                Some(serde_json::Value::String(_)) => {}
                Some(_) => {
                    return Err(TraceError(format!(
                        "{file}: example {i} (0-based): `{field}` must be a string"
                    )));
                }
                None => {
                    return Err(TraceError(format!(
                        "{file}: example {i} (0-based) has no `{field}`"
                    )));
                }
            }
        }
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        let ok = br#"[{"prompt": "2+2?", "answer": "4"}, {"prompt": "p", "answer": "a", "x": 1}]"#;
        assert_eq!(validate_trace(ok, "d.json"), Ok(2));
        let cases: [(&[u8], &str); 6] = [
            (b"[{\"prompt\": \"a\",\n \"answer\": }]", "line 2"),
            (b"{}", "JSON array"),
            (b"[]", "no examples"),
            (b"[1]", "example 0"),
            (br#"[{"prompt": "a", "answer": "b"}, {"prompt": "a"}]"#, "example 1"),
            (br#"[{"prompt": 1, "answer": "b"}]"#, "must be a string"),
        ];
        for (bytes, want) in cases {
            let err = validate_trace(bytes, "d.json").err().map(|e| e.0).unwrap_or_default();
            assert!(err.contains(want), "{err}");
        }
    }
}
