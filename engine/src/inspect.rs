//! Whole-artifact inspection: every safetensors header, the shard index, the config, and the
//! tensor set a model or adapter must have, read through [`FileAccess`] without tensor data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapter::{self, AdapterSummary};
use crate::config::{self, LlamaConfig};
use crate::error::FormatError;
use crate::moe::lora_moe::{self, BUNDLE_FORMAT, BUNDLE_JSON, LoraMoeBundle};
use crate::safetensors_header::{self, SafetensorsInfo, TensorInfo};

/// The largest JSON file (config, index, adapter config) inspection reads.
pub const MAX_JSON_LEN: u64 = 64 << 20;

pub const CONFIG: &str = "config.json";
pub const INDEX: &str = "model.safetensors.index.json";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Read access to the files of one artifact, by their relative paths.
pub trait FileAccess {
    /// The size of `path`, or `None` when the artifact has no such file.
    fn size(&self, path: &str) -> Option<u64>;
    /// Bytes `start..end` of `path`.
    fn read_range(&self, path: &str, start: u64, end: u64) -> Result<Vec<u8>, FormatError>;
    /// A name for `path`'s content (the registry's blob digest), when known: files with the
    /// same content are read and parsed once.
    fn content_id(&self, _path: &str) -> Option<String> {
        None
    }
}

/// [`FileAccess`] over a local directory.
#[derive(Debug, Clone)]
pub struct DirAccess {
    root: PathBuf,
}

impl DirAccess {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The relative paths of every regular file under the directory, `/`-separated, sorted.
    pub fn list(&self) -> Result<Vec<String>, FormatError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        let io =
            |p: &Path, e: std::io::Error| FormatError::io(&p.display().to_string(), e.to_string());
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
                let entry = entry.map_err(|e| io(&dir, e))?;
                let path = entry.path();
                let ty = entry.file_type().map_err(|e| io(&path, e))?;
                if ty.is_dir() {
                    stack.push(path);
                } else if ty.is_file()
                    && let Ok(rel) = path.strip_prefix(&self.root)
                {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(parts.join("/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let rel = Path::new(path);
        rel.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then(|| self.root.join(rel))
    }
}

impl FileAccess for DirAccess {
    fn size(&self, path: &str) -> Option<u64> {
        let meta = std::fs::metadata(self.resolve(path)?).ok()?;
        meta.is_file().then_some(meta.len())
    }

    fn read_range(&self, path: &str, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
        let io = |e: std::io::Error| FormatError::io(path, e.to_string());
        let full = self
            .resolve(path)
            .ok_or_else(|| FormatError::io(path, "not a relative path inside the artifact"))?;
        let len = end
            .checked_sub(start)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| FormatError::io(path, format!("bad byte range {start}..{end}")))?;
        let mut f = std::fs::File::open(full).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = vec![0; len];
        f.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }
}

/// What an artifact claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Base,
    Checkpoint,
    Adapter,
    /// A mixture of experts: a Mixtral checkpoint (`config.json` with `num_local_experts`) or a
    /// LoRA-MoE bundle (`clreg_moe.json`, checked against the base's shapes).
    Mixture,
    /// Anything else: only the safetensors headers are checked.
    Other,
}

/// What inspection found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub architecture: Option<String>,
    /// The dtype all tensors share, or `"mixed"`.
    pub dtype: Option<String>,
    pub parameters: u64,
    pub tensors: u64,
    /// Every tensor of every `.safetensors` file; for adapters, the adapter tensors.
    pub shapes: BTreeMap<String, Vec<u64>>,
    pub adapter: Option<AdapterSummary>,
    pub config: Option<LlamaConfig>,
}

/// The kind the files suggest: a LoRA-MoE description makes a mixture, an adapter config an
/// adapter, a model config a base (the CLI makes it a checkpoint when a base is named),
/// safetensors alone `Other`.
pub fn detect_kind(paths: &[String]) -> Option<Kind> {
    let has = |p: &str| paths.iter().any(|x| x == p);
    if has(BUNDLE_JSON) {
        Some(Kind::Mixture)
    } else if has(ADAPTER_CONFIG) {
        Some(Kind::Adapter)
    } else if has(CONFIG) {
        Some(Kind::Base)
    } else if paths.iter().any(|p| p.ends_with(".safetensors")) {
        Some(Kind::Other)
    } else {
        None
    }
}

/// The most header bytes all safetensors files of one artifact may have together (one header
/// may have [`safetensors_header::MAX_HEADER_LEN`]): a manifest naming one large-header blob
/// under thousands of paths is refused after a few reads.
pub const MAX_TOTAL_HEADER_LEN: u64 = 256 << 20;

/// Reads and checks one safetensors header.
pub fn read_header(files: &dyn FileAccess, path: &str) -> Result<SafetensorsInfo, FormatError> {
    read_header_sized(files, path).map(|(info, _)| info)
}

/// [`read_header`] and the header's length.
fn read_header_sized(
    files: &dyn FileAccess,
    path: &str,
) -> Result<(SafetensorsInfo, u64), FormatError> {
    let size = files
        .size(path)
        .ok_or_else(|| FormatError::io(path, "listed but missing from the artifact"))?;
    let prefix = files.read_range(path, 0, size.min(8))?;
    let n = safetensors_header::header_len(&prefix, size, path)?;
    let header = files.read_range(path, 8, 8 + n)?;
    Ok((safetensors_header::parse_header(&header, size, path)?, n))
}

fn read_json(files: &dyn FileAccess, path: &str) -> Result<Vec<u8>, FormatError> {
    let size = files
        .size(path)
        .ok_or_else(|| FormatError::io(path, "listed but missing from the artifact"))?;
    if size > MAX_JSON_LEN {
        return Err(FormatError::io(
            path,
            format!("{size} bytes is over the {MAX_JSON_LEN}-byte limit for a JSON file"),
        ));
    }
    files.read_range(path, 0, size)
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// Inspects an artifact of `kind` made of `paths`. Adapters need the base's shapes; a
/// checkpoint given them must match them exactly.
pub fn inspect_artifact(
    kind: Kind,
    files: &dyn FileAccess,
    paths: &[String],
    base_shapes: Option<&BTreeMap<String, Vec<u64>>>,
) -> Result<Report, FormatError> {
    let has = |p: &str| paths.iter().any(|x| x == p);

    // Every safetensors header, and one owner per tensor name across files.
    let mut headers: BTreeMap<&str, SafetensorsInfo> = BTreeMap::new();
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut header_bytes = 0u64;
    // Headers already parsed, by content: a manifest naming one blob under many paths costs
    // one read and one parse (each path still counts towards the total header size).
    let mut parsed: BTreeMap<String, (SafetensorsInfo, u64)> = BTreeMap::new();
    for path in paths.iter().filter(|p| p.ends_with(".safetensors")) {
        let id = files.content_id(path);
        let (info, n) = match id.as_ref().and_then(|id| parsed.get(id)) {
            Some(seen) => seen.clone(),
            None => {
                let read = read_header_sized(files, path)?;
                if let Some(id) = id {
                    parsed.insert(id, read.clone());
                }
                read
            }
        };
        header_bytes += n;
        if header_bytes > MAX_TOTAL_HEADER_LEN {
            return Err(FormatError::safetensors(
                path,
                format!(
                    "the artifact's safetensors headers total over {MAX_TOTAL_HEADER_LEN} bytes \
                     by this file; an artifact's tensor index must be smaller"
                ),
            ));
        }
        headers.insert(path, info);
    }
    for (path, info) in &headers {
        for t in &info.tensors {
            if let Some(first) = owner.insert(&t.name, path) {
                return Err(FormatError::model(
                    path,
                    format!(
                        "duplicate tensor name `{}`: it is also in `{first}`; each tensor must be \
                         in exactly one file",
                        t.name
                    ),
                ));
            }
        }
    }

    if has(INDEX) && kind != Kind::Adapter {
        check_index(files, &headers)?;
    }

    let all: Vec<(&str, &TensorInfo)> = headers
        .iter()
        .flat_map(|(p, i)| i.tensors.iter().map(move |t| (*p, t)))
        .collect();

    match kind {
        Kind::Other => Ok(summarise(all.iter().map(|(_, t)| *t), None, None, None)),
        Kind::Mixture if has(BUNDLE_JSON) => {
            let bundle: LoraMoeBundle = serde_json::from_slice(&read_json(files, BUNDLE_JSON)?)
                .map_err(|e| {
                    FormatError::model(BUNDLE_JSON, format!("not a LoRA-MoE description: {e}"))
                })?;
            let weights = headers.get(bundle.weights.as_str()).ok_or_else(|| {
                FormatError::model(
                    &bundle.weights,
                    "the bundle's weights file is missing; push the whole bundle directory",
                )
            })?;
            let Some(base) = base_shapes else {
                return Err(FormatError::model(
                    BUNDLE_JSON,
                    "cannot check a LoRA-MoE bundle without its base model; name the base",
                ));
            };
            check_bundle(&bundle, weights, base)?;
            Ok(summarise(weights.tensors.iter(), None, None, None))
        }
        Kind::Base | Kind::Checkpoint | Kind::Mixture => {
            if !has(CONFIG) {
                return Err(FormatError::model(
                    CONFIG,
                    "config.json is missing; add the model's Hugging Face config.json",
                ));
            }
            let cfg = config::parse(&read_json(files, CONFIG)?, CONFIG)?;
            if headers.is_empty() {
                return Err(FormatError::model(
                    CONFIG,
                    "the model has no .safetensors weights; convert the weights to safetensors \
                     (e.g. save_pretrained(safe_serialization=True))",
                ));
            }
            let weights_file = if has(INDEX) {
                INDEX.to_string()
            } else {
                headers.keys().copied().collect::<Vec<_>>().join(", ")
            };
            if kind == Kind::Mixture && cfg.num_local_experts().is_none() {
                return Err(FormatError::model(
                    CONFIG,
                    "a mixture is a Mixtral checkpoint (config.json with num_local_experts) or a \
                     LoRA-MoE bundle (clreg_moe.json); this is neither",
                ));
            }
            check_model_tensors(&cfg, &all, &owner, &weights_file)?;
            if kind == Kind::Checkpoint
                && let Some(base) = base_shapes
            {
                check_same_shapes(&all, base, &weights_file)?;
            }
            let arch = cfg.architectures.first().cloned().or_else(|| {
                Some(match cfg.model_type.as_str() {
                    "mistral" => "MistralForCausalLM".to_string(),
                    _ => "LlamaForCausalLM".to_string(),
                })
            });
            Ok(summarise(
                all.iter().map(|(_, t)| *t),
                arch,
                None,
                Some(cfg),
            ))
        }
        Kind::Adapter => {
            if !has(ADAPTER_CONFIG) {
                return Err(FormatError::adapter(
                    ADAPTER_CONFIG,
                    "adapter_config.json is missing; add the PEFT adapter_config.json",
                ));
            }
            let cfg = adapter::parse(&read_json(files, ADAPTER_CONFIG)?, ADAPTER_CONFIG)?;
            let Some(weights) = headers.get(ADAPTER_WEIGHTS) else {
                return Err(FormatError::adapter(
                    ADAPTER_WEIGHTS,
                    "adapter_model.safetensors is missing; save the adapter with \
                     safe_serialization=True (adapter_model.bin is not accepted)",
                ));
            };
            let Some(base) = base_shapes else {
                return Err(FormatError::adapter(
                    ADAPTER_WEIGHTS,
                    "cannot check the adapter without its base model; name the base",
                ));
            };
            let summary = adapter::check_against_base(&cfg, weights, base, ADAPTER_WEIGHTS)?;
            // Adapters are small: every weight is read and must be a finite number.
            check_finite(files, ADAPTER_WEIGHTS, weights)?;
            Ok(summarise(weights.tensors.iter(), None, Some(summary), None))
        }
    }
}

/// Reads every float tensor of `path` and refuses the first that holds a NaN or an infinity.
pub fn check_finite(
    files: &dyn FileAccess,
    path: &str,
    info: &SafetensorsInfo,
) -> Result<(), FormatError> {
    let size = files
        .size(path)
        .ok_or_else(|| FormatError::io(path, "listed but missing from the artifact"))?;
    let prefix = files.read_range(path, 0, size.min(8))?;
    let data_start = 8 + safetensors_header::header_len(&prefix, size, path)?;
    for t in &info.tensors {
        let width = match t.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            "F64" => 8,
            _ => continue,
        };
        let bytes = files.read_range(path, data_start + t.begin, data_start + t.end)?;
        let bad = bytes
            .chunks_exact(width)
            .position(|w| match t.dtype.as_str() {
                "F32" => !f32::from_le_bytes([w[0], w[1], w[2], w[3]]).is_finite(),
                "F64" => !f64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
                    .is_finite(),
                // Half and bfloat16: all exponent bits set is an infinity or a NaN.
                "F16" => u16::from_le_bytes([w[0], w[1]]) & 0x7c00 == 0x7c00,
                _ => u16::from_le_bytes([w[0], w[1]]) & 0x7f80 == 0x7f80,
            });
        if let Some(i) = bad {
            return Err(FormatError::NonFiniteWeights {
                file: path.to_string(),
                reason: format!(
                    "tensor `{}` holds a NaN or infinite value (element {i}); fix the training \
                     run that produced it",
                    t.name
                ),
            });
        }
    }
    Ok(())
}

/// A LoRA-MoE bundle against its base: every routed module is a 2-D weight of the base, with
/// a router `[experts, in]` and per expert A `[r, in]`, B `[out, r]` (1 ≤ r ≤ the bundle's
/// rank), and nothing else in the weights file.
fn check_bundle(
    bundle: &LoraMoeBundle,
    weights: &SafetensorsInfo,
    base: &BTreeMap<String, Vec<u64>>,
) -> Result<(), FormatError> {
    let file = bundle.weights.as_str();
    let bad = |reason: String| FormatError::model(file, reason);
    if bundle.format != BUNDLE_FORMAT || bundle.version != 1 {
        return Err(FormatError::model(
            BUNDLE_JSON,
            format!(
                "format `{}` version {} is not {BUNDLE_FORMAT} version 1",
                bundle.format, bundle.version
            ),
        ));
    }
    let n = bundle.experts.len();
    if n == 0 || bundle.modules.is_empty() || bundle.router.top_k == 0 || bundle.router.top_k > n {
        return Err(FormatError::model(
            BUNDLE_JSON,
            format!(
                "{n} expert(s), {} module(s), top_k {}: a bundle needs experts, modules and 1 ≤ top_k ≤ experts",
                bundle.modules.len(),
                bundle.router.top_k
            ),
        ));
    }
    let mut expected = BTreeSet::new();
    for m in &bundle.modules {
        let Some([out, inp]) = base.get(&format!("{m}.weight")).map(Vec::as_slice) else {
            return Err(bad(format!(
                "routed module `{m}` is not a linear layer of the base model; rebuild the bundle on this base"
            )));
        };
        let (out, inp) = (*out, *inp);
        let shape = |key: &str| weights.get(key).map(|t| t.shape.clone());
        let router = lora_moe::router_key(m);
        if shape(&router) != Some(vec![n as u64, inp]) {
            return Err(bad(format!(
                "`{router}` must have shape [{n}, {inp}] (experts × the module's input); it has {:?}",
                shape(&router)
            )));
        }
        expected.insert(router);
        for e in 0..n {
            let (ak, bk) = lora_moe::expert_keys(m, e);
            let (a, b) = (shape(&ak), shape(&bk));
            let r = a.as_ref().and_then(|a| a.first().copied()).unwrap_or(0);
            if r == 0
                || r > bundle.rank as u64
                || a != Some(vec![r, inp])
                || b != Some(vec![out, r])
            {
                return Err(bad(format!(
                    "expert {e} on `{m}`: A {a:?} and B {b:?} must be [r, {inp}] and [{out}, r] with 1 ≤ r ≤ {}",
                    bundle.rank
                )));
            }
            expected.insert(ak);
            expected.insert(bk);
        }
    }
    if let Some(extra) = weights.tensors.iter().find(|t| !expected.contains(&t.name)) {
        return Err(bad(format!(
            "tensor `{}` is not a router or expert of a routed module; remove it",
            extra.name
        )));
    }
    Ok(())
}

fn check_index(
    files: &dyn FileAccess,
    headers: &BTreeMap<&str, SafetensorsInfo>,
) -> Result<(), FormatError> {
    let bad = |reason: String| FormatError::model(INDEX, reason);
    let index: Index = serde_json::from_slice(&read_json(files, INDEX)?).map_err(|e| {
        bad(format!(
            "cannot read the index: {e}; it needs a `weight_map` of tensor -> shard"
        ))
    })?;
    let shards: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
    for shard in &shards {
        if !headers.contains_key(shard) {
            return Err(bad(format!(
                "index names missing shard `{shard}`; add the shard to the push or fix the index"
            )));
        }
    }
    for (tensor, shard) in &index.weight_map {
        if headers
            .get(shard.as_str())
            .and_then(|h| h.get(tensor))
            .is_none()
        {
            return Err(bad(format!(
                "the index places tensor `{tensor}` in `{shard}`, but `{shard}` does not hold it; \
                 regenerate the index"
            )));
        }
    }
    for shard in &shards {
        for t in headers
            .get(shard)
            .map(|h| h.tensors.as_slice())
            .unwrap_or_default()
        {
            if index.weight_map.get(&t.name).is_none_or(|s| s != shard) {
                return Err(bad(format!(
                    "shard `{shard}` holds tensor `{}` which the index does not map to it; \
                     regenerate the index",
                    t.name
                )));
            }
        }
    }
    Ok(())
}

fn check_model_tensors(
    cfg: &LlamaConfig,
    all: &[(&str, &TensorInfo)],
    owner: &BTreeMap<&str, &str>,
    weights_file: &str,
) -> Result<(), FormatError> {
    let found: BTreeMap<&str, &TensorInfo> =
        all.iter().map(|(_, t)| (t.name.as_str(), *t)).collect();
    for (name, shape) in cfg.expected_tensors() {
        match found.get(name.as_str()) {
            None => {
                return Err(FormatError::model(
                    weights_file,
                    format!(
                        "tensor `{name}` (shape {shape:?}) is missing, but config.json implies \
                         it; push every shard or fix config.json"
                    ),
                ));
            }
            Some(t) if t.shape != shape => {
                return Err(FormatError::model(
                    owner.get(name.as_str()).copied().unwrap_or(weights_file),
                    format!(
                        "tensor `{name}` has shape {:?} but config.json implies {shape:?}; fix \
                         config.json or the weights",
                        t.shape
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let expected = cfg.expected_shapes();
    let vocab_hidden = vec![cfg.vocab_size as u64, cfg.hidden_size as u64];
    for (file, t) in all {
        let allowed = expected.contains_key(&t.name)
            || t.name.ends_with("rotary_emb.inv_freq")
            || (cfg.tie_word_embeddings && t.name == "lm_head.weight" && t.shape == vocab_hidden);
        if !allowed {
            return Err(FormatError::model(
                file,
                format!(
                    "tensor `{}` is not part of a {} model as config.json describes it; remove \
                     it or fix config.json",
                    t.name,
                    cfg.architectures
                        .first()
                        .map(String::as_str)
                        .unwrap_or("Llama-family")
                ),
            ));
        }
    }
    Ok(())
}

fn check_same_shapes(
    all: &[(&str, &TensorInfo)],
    base: &BTreeMap<String, Vec<u64>>,
    weights_file: &str,
) -> Result<(), FormatError> {
    // Buffers and a tied output layer may be present on one side only.
    let optional = |n: &str| n.ends_with("rotary_emb.inv_freq") || n == "lm_head.weight";
    let mine: BTreeMap<&str, (&str, &TensorInfo)> = all
        .iter()
        .map(|(f, t)| (t.name.as_str(), (*f, *t)))
        .collect();
    for (name, (file, t)) in &mine {
        match base.get(*name) {
            Some(s) if *s != t.shape => {
                return Err(FormatError::model(
                    file,
                    format!(
                        "tensor `{name}` has shape {:?} but the base has {s:?}; a checkpoint \
                         must keep its base's shapes",
                        t.shape
                    ),
                ));
            }
            None if !optional(name) => {
                return Err(FormatError::model(
                    file,
                    format!(
                        "tensor `{name}` is not in the base model; a checkpoint must have its base's tensors"
                    ),
                ));
            }
            _ => {}
        }
    }
    if let Some(name) = base
        .keys()
        .find(|n| !optional(n) && !mine.contains_key(n.as_str()))
    {
        return Err(FormatError::model(
            weights_file,
            format!("base tensor `{name}` is missing from the checkpoint; push every shard"),
        ));
    }
    Ok(())
}

fn summarise<'a>(
    tensors: impl Iterator<Item = &'a TensorInfo>,
    architecture: Option<String>,
    adapter: Option<AdapterSummary>,
    config: Option<LlamaConfig>,
) -> Report {
    let mut shapes = BTreeMap::new();
    let mut dtypes = BTreeSet::new();
    let mut parameters = 0u64;
    for t in tensors {
        parameters = parameters.saturating_add(t.numel());
        dtypes.insert(t.dtype.clone());
        shapes.insert(t.name.clone(), t.shape.clone());
    }
    let dtype = match dtypes.len() {
        0 => None,
        1 => dtypes.into_iter().next(),
        _ => Some("mixed".to_string()),
    };
    Report {
        architecture,
        dtype,
        parameters,
        tensors: shapes.len() as u64,
        shapes,
        adapter,
        config,
    }
}
