//! The GSM8K-style maths metric: does the final number of the prediction equal the answer's?

/// 1 when the final numbers of `pred` and `answer` are numerically equal (`18` = `18.0` =
/// `18.00`), else 0; 0 when either has no number.
///
/// The final number of a text, after removing every comma (thousands separators): the first
/// number after the last `####` (GSM8K's answer marker) if that part has one; else the first
/// number after the last "the answer is" (any ASCII case; MetaMath's marker) if that part has
/// one; else the last number in the text. A number is ASCII digits with an optional fractional
/// part (`12.5`) and an optional minus sign directly in front that does not follow a letter or
/// digit (`-3`, but `x-3` is 3). Equality allows a relative difference of 1e-9.
pub fn final_number(pred: &str, answer: &str) -> f64 {
    match (final_value(pred), final_value(answer)) {
        (Some(p), Some(a)) => {
            let scale = 1f64.max(p.abs()).max(a.abs());
            f64::from(u8::from((p - a).abs() <= 1e-9 * scale))
        }
        _ => 0.0,
    }
}

/// The value of the final number of `text`, as [`final_number`] defines it.
pub fn final_value(text: &str) -> Option<f64> {
    let text = text.replace(',', "");
    let lower = text.to_ascii_lowercase();
    let after = |marker: &str| {
        lower
            .rfind(marker)
            .and_then(|at| numbers(&text[at + marker.len()..]).into_iter().next())
    };
    let found = after("####")
        .or_else(|| after("the answer is"))
        .or_else(|| numbers(&text).pop())?;
    found.parse().ok()
}

/// The numbers of `text` in order, as written (`-12.5`).
fn numbers(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut start = i;
        if start > 0 && bytes[start - 1] == b'-' && (start < 2 || !is_word_byte(bytes[start - 2])) {
            start -= 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
        out.push(&text[start..i]);
    }
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
