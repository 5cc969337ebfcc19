//! TRACE dataset validation: a JSON array (or JSON Lines) of `{"prompt", "answer"}` objects.

use std::io::{BufRead, Read};

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

use crate::data::example::to_example;
use crate::error::FormatError;

/// Checks a TRACE dataset and returns its number of examples.
///
/// Accepts a JSON array of objects with string `prompt` and `answer` (other keys allowed), or
/// JSON Lines with one such object per line (blank lines skipped). Errors name the 0-based
/// example index and the 1-based line. The parsing is [`crate::data::parse_trace`]'s.
pub fn validate_trace(bytes: &[u8], file: &str) -> Result<usize, FormatError> {
    crate::data::parse_trace(bytes, file).map(|examples| examples.len())
}

/// [`validate_trace`] as a stream: the same rules on each example, read from `reader` one
/// example at a time, so memory is one example, not the file (the server validates dataset
/// content up to 1 GiB this way). Errors name the example and the line where it was found bad.
pub fn validate_trace_stream(mut reader: impl BufRead, file: &str) -> Result<usize, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let io = |e: std::io::Error| FormatError::io(file, e.to_string());
    // A UTF-8 byte-order mark, then whitespace, before the first character.
    if reader.fill_buf().map_err(io)?.starts_with(b"\xef\xbb\xbf") {
        reader.consume(3);
    }
    let mut line = 1usize;
    let first = loop {
        let buf = reader.fill_buf().map_err(io)?;
        let Some(&b) = buf.first() else { break None };
        if !b.is_ascii_whitespace() {
            break Some(b);
        }
        line += usize::from(b == b'\n');
        reader.consume(1);
    };
    let count = match first {
        Some(b'[') => stream_array(reader, file)?,
        Some(b'{') => stream_lines(reader, line, file)?,
        _ => {
            return Err(bad(
                "not a JSON array: TRACE data is a JSON array of {\"prompt\", \"answer\"} \
                 objects (or JSON Lines, one object per line)"
                    .to_string(),
            ));
        }
    };
    if count == 0 {
        return Err(bad(
            "the dataset has no examples; add at least one".to_string()
        ));
    }
    Ok(count)
}

/// Counts the elements of a JSON array, each checked as an example as it is read.
fn stream_array(reader: impl Read, file: &str) -> Result<usize, FormatError> {
    struct Examples;
    impl<'de> Visitor<'de> for Examples {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of {\"prompt\", \"answer\"} objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0usize;
            while let Some(value) = seq.next_element::<Value>()? {
                to_example(value)
                    .map_err(|what| serde::de::Error::custom(format!("example {n}: {what}")))?;
                n += 1;
            }
            Ok(n)
        }
    }
    impl<'de> DeserializeSeed<'de> for Examples {
        type Value = usize;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let n = Examples
        .deserialize(&mut de)
        .and_then(|n| de.end().map(|()| n));
    n.map_err(|e| {
        let reason = if e.is_data() {
            // One of ours: "example N: what (at line L column C)".
            e.to_string()
        } else if e.is_io() {
            return FormatError::io(file, e.to_string());
        } else {
            format!("not valid JSON: {e}; fix the JSON syntax")
        };
        FormatError::dataset(file, reason)
    })
}

/// Counts JSON Lines records (blank lines skipped), each checked as an example.
fn stream_lines(
    mut reader: impl BufRead,
    first_line: usize,
    file: &str,
) -> Result<usize, FormatError> {
    let bad = |reason: String| FormatError::dataset(file, reason);
    let (mut text, mut line_no, mut count) = (String::new(), first_line, 0usize);
    loop {
        text.clear();
        let read = reader.read_line(&mut text).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                bad(format!(
                    "line {line_no} is not UTF-8; save the file as UTF-8 JSON"
                ))
            } else {
                FormatError::io(file, e.to_string())
            }
        })?;
        if read == 0 {
            return Ok(count);
        }
        if !text.trim().is_empty() {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "line {line_no} (example {count}): not valid JSON ({e}); JSON Lines needs \
                     one complete object per line"
                ))
            })?;
            to_example(value)
                .map_err(|what| bad(format!("line {line_no} (example {count}): {what}")))?;
            count += 1;
        }
        line_no += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The stream and the in-memory parser agree on every case: the count, or an error naming
    /// the same example.
    #[test]
    fn the_stream_agrees_with_the_in_memory_parser() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"[{"prompt": "p", "answer": "a"}]"#, None),
            (
                "\u{feff}  \n[{\"prompt\": \"p\", \"answer\": \"a\", \"x\": [1, {}]},\n {\"prompt\": \"q\", \"answer\": \"b\"}]\n",
                None,
            ),
            (
                "{\"prompt\": \"p\", \"answer\": \"a\"}\n\n{\"prompt\": \"q\", \"answer\": \"b\"}\n",
                None,
            ),
            (
                r#"[{"prompt": "x", "answer": "y"}, {"prompt": "x"}]"#,
                Some("example 1"),
            ),
            (r#"[{"prompt": 3, "answer": "y"}]"#, Some("example 0")),
            (
                r#"[{"prompt": "p", "answer": "a", "choices": ["b"]}]"#,
                Some("example 0"),
            ),
            (
                "{\"prompt\": \"p\", \"answer\": \"a\"}\n{\"prompt\": \"p\"}\n",
                Some("line 2 (example 1)"),
            ),
            (r#"{"prompt": "x"}"#, Some("example 0")),
            ("[1, 2", Some("")),
            (r#"[{"prompt": "p", "answer": "a"}] trailing"#, Some("")),
            ("not json", Some("not a JSON array")),
            ("[]", Some("no examples")),
            ("", Some("")),
        ];
        for (text, error) in cases {
            let streamed = validate_trace_stream(text.as_bytes(), "d.json");
            let whole = validate_trace(text.as_bytes(), "d.json");
            match error {
                None => assert_eq!(streamed.unwrap(), whole.unwrap(), "{text}"),
                Some(needle) => {
                    let (s, w) = (streamed.unwrap_err(), whole.unwrap_err());
                    assert_eq!(s.code(), w.code(), "{text}");
                    assert!(s.to_string().contains(needle), "{text}: {s}");
                    assert!(w.to_string().contains(needle), "{text}: {w}");
                }
            }
        }
        // Invalid UTF-8 inside a string is refused by both.
        let bytes = b"[{\"prompt\": \"\xff\", \"answer\": \"a\"}]";
        assert!(validate_trace_stream(&bytes[..], "d").is_err());
        assert!(validate_trace(bytes, "d").is_err());
    }

    #[test]
    fn a_large_array_streams_in_small_reads() {
        let mut text = String::from("[");
        for i in 0..5000 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("{{\"prompt\": \"p{i}\", \"answer\": \"a\"}}\n"));
        }
        text.push(']');
        // A reader that hands out 7 bytes at a time.
        let reader = std::io::BufReader::with_capacity(7, text.as_bytes());
        assert_eq!(validate_trace_stream(reader, "d").unwrap(), 5000);
    }
}
