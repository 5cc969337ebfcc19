//! A NaN / infinity check that runs on a safetensors file while its bytes stream past (an upload
//! being hashed), in one pass without seeking.
//!
//! The scanner keeps the 8-byte length prefix and the header (at most [`MAX_SCAN_HEADER`]
//! bytes), then checks each float tensor's elements as they arrive, carrying at most one split
//! element between chunks. Anything that is not a well-formed safetensors start (a config, a
//! tokenizer, a corrupt file) ends the scan as [`Outcome::NotSafetensors`]; the full validation
//! of the file happens at commit, as for every file.

use serde::{Deserialize, Serialize};

use crate::safetensors_header::{MAX_HEADER_LEN, check_finite, parse_header_unsized};

/// The largest header the scanner buffers: a header entry is ~100 bytes, so 16 MiB describes
/// ~160,000 tensors, far more than any real checkpoint shard. Files with larger (still valid)
/// headers end as [`Outcome::Unscanned`] and are checked at commit instead.
pub const MAX_SCAN_HEADER: u64 = 16 << 20;

/// What the scan found, once the last byte was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Not a safetensors file (or not a well-formed one): nothing to say about its weights.
    NotSafetensors,
    /// A header over [`MAX_SCAN_HEADER`]: the weights were not checked in the stream.
    Unscanned,
    /// Every float element that arrived is a finite number.
    Finite,
    /// The first tensor (in file order) with a NaN or infinite element, and that element's index.
    NonFinite { tensor: String, element: u64 },
}

/// The float dtypes the scan checks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Float {
    F16,
    BF16,
    F32,
    F64,
}

impl Float {
    fn parse(dtype: &str) -> Option<Self> {
        Some(match dtype {
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F32" => Self::F32,
            "F64" => Self::F64,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F32 => "F32",
            Self::F64 => "F64",
        }
    }

    fn width(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// One float tensor's bytes, as absolute offsets in the file.
#[derive(Serialize, Deserialize)]
struct Span {
    name: String,
    dtype: Float,
    begin: u64,
    end: u64,
}

#[derive(Serialize, Deserialize)]
enum State {
    Prefix,
    Header { len: u64 },
    Data { spans: Vec<Span>, next: usize },
    Done(Outcome),
}

/// The scanner: feed it every byte of the file in order, then ask for [`FiniteScan::outcome`].
///
/// It serialises (serde) between any two bytes, so an upload that moves from one server process
/// to another carries its scan along: the state is the header (while it arrives) or the float
/// tensors' spans, plus at most one split element.
#[derive(Serialize, Deserialize)]
pub struct FiniteScan {
    state: State,
    /// Bytes seen so far: the absolute offset of the next byte.
    pos: u64,
    /// The prefix and header while they arrive; then the bytes of one split element.
    #[serde(with = "hex_bytes")]
    buf: Vec<u8>,
}

/// Bytes as one hex string (a JSON array of numbers would be four times larger).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl Default for FiniteScan {
    fn default() -> Self {
        Self::new()
    }
}

impl FiniteScan {
    pub fn new() -> Self {
        Self {
            state: State::Prefix,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// Whether the outcome is known whatever bytes follow (a NaN found, or not safetensors).
    pub fn is_settled(&self) -> bool {
        matches!(
            self.state,
            State::Done(Outcome::NonFinite { .. } | Outcome::NotSafetensors | Outcome::Unscanned)
        )
    }

    /// What the bytes seen so far show. A file that ends inside its header is not safetensors.
    pub fn outcome(&self) -> Outcome {
        match &self.state {
            State::Prefix | State::Header { .. } => Outcome::NotSafetensors,
            State::Data { .. } => Outcome::Finite,
            State::Done(o) => o.clone(),
        }
    }

    /// Scans the next bytes of the file.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Done(_) => return,
                State::Prefix => self.prefix(bytes),
                State::Header { len } => {
                    let len = *len;
                    self.header(bytes, len)
                }
                State::Data { .. } => self.data(bytes),
            };
            self.pos += used as u64;
            bytes = &bytes[used..];
        }
    }

    fn prefix(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(8 - self.buf.len());
        self.buf.extend_from_slice(&bytes[..take]);
        if let Ok(prefix) = <[u8; 8]>::try_from(self.buf.as_slice()) {
            let len = u64::from_le_bytes(prefix);
            self.buf.clear();
            self.state = if !(2..=MAX_HEADER_LEN).contains(&len) {
                State::Done(Outcome::NotSafetensors)
            } else if len > MAX_SCAN_HEADER {
                State::Done(Outcome::Unscanned)
            } else {
                State::Header { len }
            };
        }
        take
    }

    fn header(&mut self, bytes: &[u8], len: u64) -> usize {
        let missing = usize::try_from(len).unwrap_or(usize::MAX) - self.buf.len();
        let take = bytes.len().min(missing);
        self.buf.extend_from_slice(&bytes[..take]);
        if self.buf.len() as u64 == len {
            let header = std::mem::take(&mut self.buf);
            self.state = match parse_header_unsized(&header, "") {
                Ok(info) => {
                    let data_start = 8 + len;
                    let mut spans: Vec<Span> = info
                        .tensors
                        .into_iter()
                        .filter_map(|t| {
                            Some(Span {
                                dtype: Float::parse(&t.dtype)?,
                                name: t.name,
                                begin: data_start + t.begin,
                                end: data_start + t.end,
                            })
                        })
                        .filter(|s| s.end > s.begin)
                        .collect();
                    spans.sort_by_key(|s| s.begin);
                    State::Data { spans, next: 0 }
                }
                Err(_) => State::Done(Outcome::NotSafetensors),
            };
        }
        take
    }

    /// Checks what of `bytes` falls in float tensors; returns how many bytes were used (all of
    /// them, or up to the end of one tensor).
    fn data(&mut self, bytes: &[u8]) -> usize {
        let State::Data { spans, next } = &mut self.state else {
            return bytes.len();
        };
        let Some(span) = spans.get(*next) else {
            // Past the last float tensor: the rest cannot change the outcome.
            self.state = State::Done(Outcome::Finite);
            return bytes.len();
        };
        let pos = self.pos;
        if pos < span.begin {
            return usize::try_from(span.begin - pos)
                .map_or(bytes.len(), |gap| gap.min(bytes.len()));
        }
        let in_span = usize::try_from(span.end - pos).map_or(bytes.len(), |n| n.min(bytes.len()));
        let piece = &bytes[..in_span];
        let width = span.dtype.width();
        let mut checked = 0;
        let mut bad = None;
        // Complete an element split by the previous chunk.
        if !self.buf.is_empty() {
            let take = (width - self.buf.len()).min(piece.len());
            self.buf.extend_from_slice(&piece[..take]);
            checked = take;
            if self.buf.len() == width {
                if check_finite(span.dtype.name(), &self.buf).is_err() {
                    bad = Some((pos - span.begin) / width as u64);
                }
                self.buf.clear();
            }
        }
        if bad.is_none() {
            let rest = &piece[checked..];
            let whole = rest.len() - rest.len() % width;
            if let Err(i) = check_finite(span.dtype.name(), &rest[..whole]) {
                let at = pos + checked as u64 + (i * width) as u64;
                bad = Some((at - span.begin) / width as u64);
            }
            self.buf.extend_from_slice(&rest[whole..]);
        }
        if let Some(element) = bad {
            self.state = State::Done(Outcome::NonFinite {
                tensor: span.name.clone(),
                element,
            });
            return bytes.len();
        }
        if pos + in_span as u64 == span.end {
            self.buf.clear();
            *next += 1;
        }
        in_span
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A safetensors file built by hand: tensors in the given order, back to back.
    fn file(tensors: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, dtype, data) in tensors {
            let width = match *dtype {
                "F16" | "BF16" | "I16" => 2,
                "F32" | "I32" => 4,
                _ => 8,
            };
            header.insert(
                (*name).into(),
                serde_json::json!({"dtype": dtype, "shape": [data.len() / width],
                                   "data_offsets": [offset, offset + data.len()]}),
            );
            offset += data.len();
        }
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        for (_, _, data) in tensors {
            out.extend_from_slice(data);
        }
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Scans `bytes` in chunks, twice: in one scanner, and in one that is serialised and
    /// read back between every two chunks (an upload moving between server processes). Both
    /// must agree.
    fn scan_in_chunks(bytes: &[u8], chunk: usize) -> Outcome {
        let mut whole = FiniteScan::new();
        let mut moved = FiniteScan::new();
        for c in bytes.chunks(chunk.max(1)) {
            whole.update(c);
            moved.update(c);
            moved = serde_json::from_slice(&serde_json::to_vec(&moved).unwrap()).unwrap();
        }
        assert_eq!(whole.outcome(), moved.outcome(), "chunk {chunk}");
        whole.outcome()
    }

    #[test]
    fn finds_the_first_bad_element_whatever_the_chunking() {
        let mut b = f32s(&[1.0; 37]);
        b.extend(f32s(&[2.0, f32::NAN, 3.0]));
        let bf16_inf = vec![0x80, 0x3f, 0x80, 0x7f];
        let bytes = file(&[
            ("a.ints", "I32", vec![0xff; 16]),
            ("b.weight", "F32", b),
            ("c.weight", "BF16", bf16_inf),
        ]);
        let expected = Outcome::NonFinite {
            tensor: "b.weight".into(),
            element: 38,
        };
        for chunk in [1, 2, 3, 5, 7, 8, 13, 64, 1000, bytes.len()] {
            assert_eq!(scan_in_chunks(&bytes, chunk), expected, "chunk {chunk}");
        }
        // The independent computation: the file read whole, tensor by tensor.
        let info = crate::safetensors_header::inspect_bytes(&bytes, "x").unwrap();
        let start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let t = info.get("b.weight").unwrap();
        let data = &bytes[start + t.begin as usize..start + t.end as usize];
        assert_eq!(check_finite("F32", data), Err(38));
    }

    #[test]
    fn later_tensors_and_half_precision_are_checked() {
        let bytes = file(&[
            ("a", "F32", f32s(&[1.0, -2.0])),
            ("b", "F16", vec![0x00, 0x3c, 0x00, 0x3c, 0x00, 0xfc]),
        ]);
        for chunk in [1, 3, 4, 9, bytes.len()] {
            assert_eq!(
                scan_in_chunks(&bytes, chunk),
                Outcome::NonFinite {
                    tensor: "b".into(),
                    element: 2
                }
            );
        }
        let clean = file(&[
            ("a", "F32", f32s(&[1.0, -2.0])),
            ("i", "I32", vec![0xff; 8]),
        ]);
        for chunk in [1, 5, clean.len()] {
            assert_eq!(scan_in_chunks(&clean, chunk), Outcome::Finite);
        }
    }

    #[test]
    fn other_files_are_not_safetensors() {
        for bytes in [
            &b"{\"architectures\": [\"LlamaForCausalLM\"]}"[..],
            b"",
            b"short",
            &[0xff; 64][..],
            // A plausible length but a header that is not JSON.
            &[4, 0, 0, 0, 0, 0, 0, 0, b'n', b'o', b'p', b'e', 1, 2][..],
        ] {
            assert_eq!(scan_in_chunks(bytes, 3), Outcome::NotSafetensors);
        }
        let mut huge = (MAX_SCAN_HEADER + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(scan_in_chunks(&huge, 4), Outcome::Unscanned);
    }
}
