//! TRACE dataset validation: a JSON array (or JSON Lines) of `{"prompt", "answer"}` objects.

use crate::error::FormatError;

/// Checks a TRACE dataset and returns its number of examples.
///
/// Accepts a JSON array of objects with string `prompt` and `answer` (other keys allowed), or
/// JSON Lines with one such object per line (blank lines skipped). Errors name the 0-based
/// example index and the 1-based line. The parsing is [`crate::data::parse_trace`]'s.
pub fn validate_trace(bytes: &[u8], file: &str) -> Result<usize, FormatError> {
    crate::data::parse_trace(bytes, file).map(|examples| examples.len())
}
