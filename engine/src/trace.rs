//! TRACE dataset validation: a JSON array (or JSON Lines) of `{"prompt", "answer"}` objects.

use serde_json::Value;

use crate::error::FormatError;

/// Checks a TRACE dataset and returns its number of examples.
///
/// Accepts a JSON array of objects with string `prompt` and `answer` (other keys allowed), or
/// JSON Lines with one such object per line (blank lines skipped). Errors name the 0-based
/// example index and the 1-based line.
pub fn validate_trace(bytes: &[u8], file: &str) -> Result<usize, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "the file is not UTF-8 ({e}); save it as UTF-8 JSON"
        ))
    })?;
    match text.trim_start().chars().next() {
        Some('[') => validate_array(text, file),
        Some('{') => validate_lines(text, file),
        _ => Err(bad(
            "not a JSON array: TRACE data is a JSON array of {\"prompt\", \"answer\"} objects \
             (or JSON Lines, one object per line)"
                .to_string(),
        )),
    }
}

fn validate_array(text: &str, file: &str) -> Result<usize, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("not valid JSON: {e}; fix the JSON syntax")))?;
    let Value::Array(items) = value else {
        return Err(bad(
            "not a JSON array of {\"prompt\", \"answer\"} objects".to_string()
        ));
    };
    if items.is_empty() {
        return Err(bad(
            "the dataset has no examples; add at least one".to_string()
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if let Err(what) = check_example(item) {
            let line = element_lines(text).get(i).copied();
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            return Err(bad(format!("example {i}{at}: {what}")));
        }
    }
    Ok(items.len())
}

fn validate_lines(text: &str, file: &str) -> Result<usize, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = n + 1;
        let value: Value = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "line {line_no} (example {count}): not valid JSON ({e}); JSON Lines needs one \
                 complete object per line"
            ))
        })?;
        check_example(&value)
            .map_err(|what| bad(format!("line {line_no} (example {count}): {what}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(
            "the dataset has no examples; add at least one".to_string()
        ));
    }
    Ok(count)
}

/// What is wrong with one example, if anything.
fn check_example(v: &Value) -> Result<(), String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "is {}, not an object; each example must be {{\"prompt\": \"...\", \"answer\": \"...\"}}",
            kind(v)
        ));
    };
    for key in ["prompt", "answer"] {
        match map.get(key) {
            None => return Err(format!("`{key}` is missing; add a string `{key}`")),
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(format!(
                    "`{key}` is {}, not a string; make it a string",
                    kind(other)
                ));
            }
        }
    }
    Ok(())
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
