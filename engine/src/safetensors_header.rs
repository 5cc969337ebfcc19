//! Validation of a safetensors header without reading tensor data: length, JSON, dtypes, offsets.
//!
//! The `safetensors` crate's own parser keeps the last of two tensors with the same name and
//! accepts trailing bytes, so the header is parsed here with a visitor that sees every key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::error::FormatError;

/// The largest header clreg accepts (the same limit as the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100 << 20;

/// The dtypes clreg accepts, with their size in bytes.
const DTYPES: &[(&str, u64)] = &[
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E4M3", 1),
    ("F8_E5M2", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("I64", 8),
    ("U64", 8),
    ("F64", 8),
];

/// The size in bytes of one element of `dtype`, or `None` for a dtype clreg does not know.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    DTYPES.iter().find(|(d, _)| *d == dtype).map(|(_, s)| *s)
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// As written in the file, e.g. `F32`, `BF16`.
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte offsets relative to the start of the data section (after the header).
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    /// The number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// What a valid header holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SafetensorsInfo {
    /// Sorted by name.
    pub tensors: Vec<TensorInfo>,
    /// The optional `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsInfo {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    /// The total number of elements of all tensors.
    pub fn parameters(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::numel).sum()
    }
}

/// Reads the header length from the first 8 bytes and checks it fits in a file of `file_size`.
pub fn header_len(prefix: &[u8], file_size: u64, file: &str) -> Result<u64, FormatError> {
    let bytes: [u8; 8] = match prefix.get(..8).and_then(|p| p.try_into().ok()) {
        Some(b) if file_size >= 8 => b,
        _ => {
            return Err(FormatError::safetensors(
                file,
                format!(
                    "truncated: the file has {file_size} bytes, fewer than the 8-byte header length; \
                     upload the complete file"
                ),
            ));
        }
    };
    let n = u64::from_le_bytes(bytes);
    if n > MAX_HEADER_LEN {
        return Err(FormatError::safetensors(
            file,
            format!(
                "header length {n} is over the {MAX_HEADER_LEN}-byte limit; the file is corrupt \
                 or not safetensors: re-export it with the safetensors library"
            ),
        ));
    }
    if n.checked_add(8).is_none_or(|e| e > file_size) {
        return Err(FormatError::safetensors(
            file,
            format!(
                "header length {n} beyond the file ({file_size} bytes): the file is truncated or \
                 corrupt; upload the complete file"
            ),
        ));
    }
    Ok(n)
}

/// The JSON value of one tensor entry.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Every entry of the header object, duplicates kept.
struct RawHeader {
    tensors: Vec<(String, RawTensor)>,
    metadata: Vec<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut tensors = Vec::new();
                let mut metadata = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        let m = map.next_value::<BTreeMap<String, String>>().map_err(|e| {
                            de::Error::custom(format!(
                                "`__metadata__` must map strings to strings ({e})"
                            ))
                        })?;
                        metadata.push(m);
                    } else {
                        let t = map.next_value::<RawTensor>().map_err(|e| {
                            de::Error::custom(format!(
                                "tensor `{key}` must be {{\"dtype\", \"shape\", \"data_offsets\"}} ({e})"
                            ))
                        })?;
                        tensors.push((key, t));
                    }
                }
                Ok(RawHeader { tensors, metadata })
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses and checks a header (the `N` bytes after the length prefix) of a file of `file_size`
/// bytes: JSON, unique names, known dtypes, sizes, contiguous offsets, data ending at the file end.
pub fn parse_header(
    header_json: &[u8],
    file_size: u64,
    file: &str,
) -> Result<SafetensorsInfo, FormatError> {
    parse_header_in(header_json, Some(file_size), file)
}

/// [`parse_header`] for a file whose size is not known yet (its bytes are still arriving):
/// every check but those against the file's end.
pub fn parse_header_unsized(
    header_json: &[u8],
    file: &str,
) -> Result<SafetensorsInfo, FormatError> {
    parse_header_in(header_json, None, file)
}

fn parse_header_in(
    header_json: &[u8],
    file_size: Option<u64>,
    file: &str,
) -> Result<SafetensorsInfo, FormatError> {
    let bad = |reason: String| FormatError::safetensors(file, reason);
    let text = std::str::from_utf8(header_json).map_err(|e| {
        bad(format!(
            "the header is not UTF-8 ({e}); the file is corrupt or not safetensors"
        ))
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(bad(
            "the header is not a JSON object; the file is corrupt or not safetensors".to_string(),
        ));
    }
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "the header is not valid JSON: {e}; re-export the file"
        ))
    })?;
    if raw.metadata.len() > 1 {
        return Err(bad(
            "`__metadata__` appears twice in the header; keep one".to_string()
        ));
    }
    let metadata = raw.metadata.into_iter().next().unwrap_or_default();

    let header_end = 8u64.saturating_add(header_json.len() as u64);
    let data_len = match file_size {
        Some(file_size) => Some(file_size.checked_sub(header_end).ok_or_else(|| {
            bad(format!(
                "header length {} beyond the file ({file_size} bytes)",
                header_json.len()
            ))
        })?),
        None => None,
    };

    let mut seen = BTreeSet::new();
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, t) in raw.tensors {
        if !seen.insert(name.clone()) {
            return Err(bad(format!(
                "duplicate tensor name `{name}`: the header lists it more than once; \
                 re-export the file so each tensor appears once"
            )));
        }
        let size = dtype_size(&t.dtype).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has unknown dtype `{}`; clreg accepts {}: convert the tensor \
                 (quantised formats must be dequantised first)",
                t.dtype,
                DTYPES
                    .iter()
                    .map(|(d, _)| *d)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let (begin, end) = t.data_offsets;
        if end < begin {
            return Err(bad(format!(
                "tensor `{name}` has data_offsets [{begin}, {end}] that end before they begin; \
                 the header is corrupt: re-export the file"
            )));
        }
        let need = t
            .shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .and_then(|numel| numel.checked_mul(size))
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` has shape {:?} whose size overflows; the header is corrupt",
                    t.shape
                ))
            })?;
        if end - begin != need {
            return Err(bad(format!(
                "tensor `{name}` ({} {:?}) needs {need} bytes but its data_offsets [{begin}, {end}] \
                 hold {}; the header lies about the dtype, shape or offsets: re-export the file",
                t.dtype,
                t.shape,
                end - begin
            )));
        }
        tensors.push(TensorInfo {
            name,
            dtype: t.dtype,
            shape: t.shape,
            begin,
            end,
        });
    }

    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    if let Some(data_len) = data_len
        && let Some(t) = by_offset.iter().find(|t| t.end > data_len)
    {
        return Err(bad(format!(
            "tensor `{}` has out-of-bounds offsets [{}, {}]: the data section holds only \
                 {data_len} bytes, so the file is truncated or its header is wrong; upload the \
                 complete file",
            t.name, t.begin, t.end
        )));
    }
    let mut pos = 0u64;
    let mut prev: Option<&TensorInfo> = None;
    for t in &by_offset {
        if t.begin < pos {
            let other = prev.map(|p| p.name.as_str()).unwrap_or("?");
            return Err(bad(format!(
                "overlapping offsets: tensor `{}` [{}, {}] overlaps tensor `{other}` which ends \
                 at {pos}; each tensor needs its own bytes: re-export the file",
                t.name, t.begin, t.end
            )));
        }
        if t.begin > pos {
            return Err(bad(format!(
                "gap in the data: bytes {pos}..{} before tensor `{}` belong to no tensor; \
                 re-export the file",
                t.begin, t.name
            )));
        }
        pos = t.end;
        prev = Some(t);
    }
    if let Some(data_len) = data_len.filter(|&d| pos < d) {
        return Err(bad(format!(
            "trailing bytes: {} bytes follow the last tensor's data (the data section has \
             {data_len} bytes, the tensors use {pos}); remove them or re-export the file",
            data_len - pos
        )));
    }

    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(SafetensorsInfo { tensors, metadata })
}

/// Checks a whole safetensors file held in memory.
pub fn inspect_bytes(bytes: &[u8], file: &str) -> Result<SafetensorsInfo, FormatError> {
    let size = bytes.len() as u64;
    let n = header_len(bytes, size, file)?;
    // header_len guarantees 8 + n <= size.
    let end = usize::try_from(8 + n).unwrap_or(usize::MAX);
    let header = bytes
        .get(8..end)
        .ok_or_else(|| FormatError::safetensors(file, "header length beyond the file"))?;
    parse_header(header, size, file)
}

/// The index of the first NaN or infinite element of `data` in `dtype` (`F16`, `BF16`, `F32`,
/// `F64`); every other dtype is finite by nature.
pub fn check_finite(dtype: &str, data: &[u8]) -> Result<(), usize> {
    fn scan<const N: usize>(data: &[u8], bad: impl Fn([u8; N]) -> bool) -> Result<(), usize> {
        match data
            .chunks_exact(N)
            .position(|c| c.try_into().is_ok_and(&bad))
        {
            Some(i) => Err(i),
            None => Ok(()),
        }
    }
    match dtype {
        "F16" => scan::<2>(data, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        "BF16" => scan::<2>(data, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        "F32" => scan::<4>(data, |b| !f32::from_le_bytes(b).is_finite()),
        "F64" => scan::<8>(data, |b| !f64::from_le_bytes(b).is_finite()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finite_checks_each_float_dtype() {
        let f32s: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(check_finite("F32", &f32s), Err(1));
        let f64s: Vec<u8> = [f64::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(check_finite("F64", &f64s), Err(0));
        // f16: 1.0 = 0x3c00, +inf = 0x7c00; bf16: 1.0 = 0x3f80, NaN = 0x7fc0.
        assert_eq!(check_finite("F16", &[0x00, 0x3c, 0x00, 0x7c]), Err(1));
        assert_eq!(check_finite("BF16", &[0x80, 0x3f, 0xc0, 0x7f]), Err(1));
        assert_eq!(check_finite("BF16", &[0x80, 0x3f, 0x80, 0xbf]), Ok(()));
        assert_eq!(check_finite("I32", &[0xff; 8]), Ok(()));
    }

    #[test]
    fn header_len_limits() {
        let mut b = (16u64).to_le_bytes().to_vec();
        assert!(header_len(&b, 30, "x").is_ok());
        assert!(
            header_len(&b, 20, "x")
                .unwrap_err()
                .reason()
                .contains("beyond the file")
        );
        b = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
        assert!(
            header_len(&b, u64::MAX, "x")
                .unwrap_err()
                .reason()
                .contains("limit")
        );
        assert!(
            header_len(&b[..4], 4, "x")
                .unwrap_err()
                .reason()
                .contains("truncated")
        );
    }
}
