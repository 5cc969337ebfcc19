//! Full-weight MoE in the Mixtral layout: the base's non-MLP tensors (or their average over the
//! experts), each expert's gate/up/down as `block_sparse_moe.experts.{e}.w1/w3/w2`, a router
//! per layer, a `MixtralForCausalLM` config, the tokenizer; streamed tensor by tensor into a
//! staging directory and renamed into place, so an error or a cancel leaves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::formats::dtype::OutDtype;
use crate::formats::writer::{CheckpointWriter, TensorSpec};
use crate::formats::{Checkpoint, Staging};
use crate::inspect::{ADAPTER_CONFIG, CONFIG, INDEX};
use crate::merge::Progress;
use crate::merge::record::{self, FileHash, InputFiles};
use crate::model::Llama;
use crate::moe::error::MoeError;
use crate::moe::recipe::MoeRecipe;
use crate::moe::record::{ExpertRecord, MixRecord, ParamCounts, RouterRecord};
use crate::moe::router::{self, Routers};
use crate::moe::train::{self, RouterTraining, TrainProgress};

/// Files copied from the base besides the weights and config.
pub use crate::formats::output::SIDE_FILES;

/// MLP tensor suffixes and the Mixtral expert names they become.
pub const EXPERT_NAMES: [(&str, &str); 3] =
    [("gate_proj", "w1"), ("down_proj", "w2"), ("up_proj", "w3")];

/// An expert whose layer-0 query weights are further than this (relative L2 distance) from the
/// base's was not fine-tuned from it.
pub const MAX_RELATIVE_DISTANCE: f64 = 0.5;

/// What a finished mix wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixReport {
    pub out_dir: PathBuf,
    /// `mixtral` or `lora_moe`.
    pub kind: String,
    pub tensors: usize,
    pub bytes: u64,
    pub parameters: ParamCounts,
    pub warnings: Vec<String>,
    pub record: MixRecord,
}

pub(crate) fn show(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn check_cancel(cancel: &AtomicBool) -> Result<(), MoeError> {
    if cancel.load(Ordering::Relaxed) {
        Err(MoeError::Cancelled)
    } else {
        Ok(())
    }
}

/// The weight files, index and config of a checkpoint, for hashing.
pub(crate) fn checkpoint_files(c: &Checkpoint) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = c
        .weight_files()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    for extra in [INDEX, CONFIG] {
        let p = c.dir().join(extra);
        if p.is_file() {
            files.push(p);
        }
    }
    files
}

/// Hashes the files of the base and each expert in parallel.
pub(crate) fn hash_all(
    base: Vec<PathBuf>,
    experts: Vec<(PathBuf, String, Vec<PathBuf>)>,
    digests: &record::Digests,
) -> Result<(Vec<FileHash>, Vec<Vec<FileHash>>), MoeError> {
    let mut inputs = vec![InputFiles {
        role: "base".to_string(),
        path: PathBuf::new(),
        kind: "checkpoint".to_string(),
        weight_density: None,
        files: base,
    }];
    for (path, kind, files) in experts {
        inputs.push(InputFiles {
            role: "expert".to_string(),
            path,
            kind,
            weight_density: None,
            files,
        });
    }
    let mut hashed = record::hash_inputs(inputs, digests)?
        .into_iter()
        .map(|r| r.files);
    let base = hashed.next().unwrap_or_default();
    Ok((base, hashed.collect()))
}

/// The base's dense Llama config, or why it cannot be the stem of a mixture.
pub(crate) fn base_config(base: &Checkpoint) -> Result<LlamaConfig, MoeError> {
    let cfg = base.llama_config()?.ok_or_else(|| {
        MoeError::input(
            show(base.dir()),
            "the base has no config.json; give a Hugging Face checkpoint directory",
        )
    })?;
    if cfg.num_local_experts().is_some() {
        return Err(MoeError::input(
            show(base.dir()),
            "the base is already a mixture of experts; give the dense model the experts were \
             fine-tuned from",
        ));
    }
    Ok(cfg)
}

/// Refuses an expert checkpoint whose architecture or sizes differ from the base's, that lacks
/// a tensor or has another shape, or whose weights are far from the base's.
pub(crate) fn check_expert(
    base: &Checkpoint,
    base_cfg: &LlamaConfig,
    expert: &Checkpoint,
) -> Result<(), MoeError> {
    let file = show(expert.dir());
    let cfg = expert.llama_config()?.ok_or_else(|| {
        MoeError::expert(
            &file,
            "no config.json; give a Hugging Face checkpoint directory",
        )
    })?;
    let pairs: [(&str, String, String); 6] = [
        (
            "architectures",
            format!("{:?}", cfg.architectures),
            format!("{:?}", base_cfg.architectures),
        ),
        (
            "hidden_size",
            cfg.hidden_size.to_string(),
            base_cfg.hidden_size.to_string(),
        ),
        (
            "intermediate_size",
            cfg.intermediate_size.to_string(),
            base_cfg.intermediate_size.to_string(),
        ),
        (
            "num_hidden_layers",
            cfg.num_hidden_layers.to_string(),
            base_cfg.num_hidden_layers.to_string(),
        ),
        (
            "vocab_size",
            cfg.vocab_size.to_string(),
            base_cfg.vocab_size.to_string(),
        ),
        (
            "num_local_experts",
            format!("{:?}", cfg.num_local_experts()),
            "None".to_string(),
        ),
    ];
    for (key, have, want) in pairs {
        if have != want {
            return Err(MoeError::expert(
                &file,
                format!(
                    "`{key}` is {have} but the base (`{}`) has {want}; experts must be \
                     fine-tunes of the base, with its architecture and sizes",
                    show(base.dir())
                ),
            ));
        }
    }
    for name in base.names() {
        let (Some(bm), em) = (base.meta(name), expert.meta(name)) else {
            continue;
        };
        let Some(em) = em else {
            return Err(MoeError::expert(
                &file,
                format!("tensor `{name}` of the base is missing"),
            ));
        };
        if em.shape != bm.shape {
            return Err(MoeError::expert(
                &file,
                format!(
                    "tensor `{name}` has shape {:?} but {:?} in the base",
                    em.shape, bm.shape
                ),
            ));
        }
        if OutDtype::from_safetensors(&em.dtype).is_none() {
            return Err(MoeError::expert(
                &file,
                format!(
                    "tensor `{name}` has dtype {}; clreg reads F32, F16, BF16",
                    em.dtype
                ),
            ));
        }
    }
    let probe = "model.layers.0.self_attn.q_proj.weight";
    if base.contains(probe) {
        let (b, e) = (base.read_f32(probe)?, expert.read_f32(probe)?);
        let (mut diff, mut norm) = (0f64, 0f64);
        for (x, y) in b.iter().zip(&e) {
            diff += (f64::from(*y) - f64::from(*x)).powi(2);
            norm += f64::from(*x).powi(2);
        }
        let rel = (diff / norm.max(f64::MIN_POSITIVE)).sqrt();
        if rel > MAX_RELATIVE_DISTANCE {
            return Err(MoeError::expert(
                &file,
                format!(
                    "its `{probe}` is {rel:.2} (relative L2) away from the declared base's; \
                     it was not fine-tuned from `{}`: declare the base it came from",
                    show(base.dir())
                ),
            ));
        }
    }
    Ok(())
}

/// `model.layers.{l}.mlp.{gate,up,down}_proj.weight` → (l, proj).
fn mlp_tensor(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let proj = rest.strip_prefix("mlp.")?.strip_suffix(".weight")?;
    Some((layer.parse().ok()?, proj))
}

/// Where an output tensor comes from.
#[derive(Debug, Clone)]
enum Source {
    Base(String),
    Average(String),
    Expert(usize, String),
    Router(usize),
    /// The untied output layer: a copy of the embeddings.
    TiedHead,
}

/// The Mixtral `config.json` of a mixture of `n` experts, top-`k`, from the base's.
pub fn mixtral_config(
    base_json: &serde_json::Value,
    n: usize,
    k: usize,
    dtype: Option<OutDtype>,
    aux_coef: f64,
) -> serde_json::Value {
    let mut v = base_json.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "architectures".into(),
            serde_json::json!(["MixtralForCausalLM"]),
        );
        o.insert("model_type".into(), serde_json::json!("mixtral"));
        o.insert("num_local_experts".into(), serde_json::json!(n));
        o.insert("num_experts_per_tok".into(), serde_json::json!(k));
        o.insert("sliding_window".into(), serde_json::Value::Null);
        o.insert("output_router_logits".into(), serde_json::json!(false));
        o.insert("router_aux_loss_coef".into(), serde_json::json!(aux_coef));
        // The output layer is written out, so every Mixtral implementation loads it.
        o.insert("tie_word_embeddings".into(), serde_json::json!(false));
        if let Some(d) = dtype {
            o.insert("torch_dtype".into(), serde_json::json!(d.torch_name()));
        }
    }
    v
}

/// Parameter counts of a Mixtral mixture built on `cfg` (dense) with `n` experts, top-`k`.
pub fn mixtral_params(cfg: &LlamaConfig, n: usize, k: usize) -> ParamCounts {
    let (h, i, l, v) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.num_hidden_layers as u64,
        cfg.vocab_size as u64,
    );
    let dense = cfg.parameters();
    let mlp = l * 3 * h * i;
    let head = if cfg.tie_word_embeddings { v * h } else { 0 };
    let stem = dense - mlp + head;
    let experts = mlp * n as u64;
    let router = l * n as u64 * h;
    ParamCounts {
        stem,
        experts,
        router,
        total: stem + experts + router,
        active: stem + router + mlp * k as u64,
    }
}

/// The mixture's tensors in memory (f32), for router training before anything is written.
fn mixture_tensors(
    base: &Checkpoint,
    experts: &[Checkpoint],
    plan_specs: &[(TensorSpec, Source)],
    routers: &Routers,
) -> Result<HashMap<String, Tensor>, MoeError> {
    let mut out = HashMap::new();
    for (spec, source) in plan_specs {
        let data = read_source(base, experts, source, Some(routers))?;
        out.insert(
            spec.name.clone(),
            Tensor::from_vec(data, spec.shape.clone(), &Device::Cpu)?,
        );
    }
    Ok(out)
}

/// The data of one output tensor; a router's needs `routers`.
fn read_source(
    base: &Checkpoint,
    experts: &[Checkpoint],
    source: &Source,
    routers: Option<&Routers>,
) -> Result<Vec<f32>, MoeError> {
    Ok(match source {
        Source::Base(n) => base.read_f32(n)?,
        Source::TiedHead => base.read_f32("model.embed_tokens.weight")?,
        Source::Expert(e, n) => experts[*e].read_f32(n)?,
        Source::Router(l) => routers
            .and_then(|r| r.layers.get(*l))
            .cloned()
            .ok_or_else(|| MoeError::Compute(format!("layer {l}'s router was not computed")))?,
        Source::Average(n) => {
            let mut acc: Vec<f64> = Vec::new();
            for x in experts {
                let t = x.read_f32(n)?;
                if acc.is_empty() {
                    acc = vec![0f64; t.len()];
                }
                acc.iter_mut().zip(t).for_each(|(a, v)| *a += f64::from(v));
            }
            let k = experts.len().max(1) as f64;
            acc.into_iter().map(|a| (a / k) as f32).collect()
        }
    })
}

/// Builds the Mixtral mixture of `recipe` into `out_dir` (which must not exist or be empty);
/// with `training`, the routers are trained after initialisation and before writing. On any
/// error, or when `cancel` is set, nothing is left at `out_dir`.
pub fn mix_mixtral(
    recipe: &MoeRecipe,
    out_dir: &Path,
    training: Option<&RouterTraining>,
    progress: &dyn Fn(Progress),
    train_progress: &dyn Fn(TrainProgress),
    cancel: &AtomicBool,
) -> Result<MixReport, MoeError> {
    let plan = recipe.resolve()?;
    let mut warnings = plan.warnings.clone();
    let base = Checkpoint::open(&plan.base)?;
    let cfg = base_config(&base)?;
    let mut experts = Vec::with_capacity(plan.experts.len());
    for e in &plan.experts {
        if e.source.join(ADAPTER_CONFIG).is_file() {
            return Err(MoeError::expert(
                show(&e.source),
                "is a LoRA adapter; mix adapters into a LoRA-MoE bundle (`clreg local mix \
                 --lora`), or give full fine-tuned checkpoints",
            ));
        }
        let c = Checkpoint::open(&e.source)?;
        check_expert(&base, &cfg, &c)?;
        experts.push(c);
    }
    let (n, k) = (experts.len(), plan.top_k);
    let base_dtype = base.main_dtype().unwrap_or(OutDtype::Float32);
    let dtype_of = |meta_dtype: Option<&str>| {
        plan.dtype
            .or_else(|| meta_dtype.and_then(OutDtype::from_safetensors))
            .unwrap_or(base_dtype)
    };

    // The output plan: base order, each layer's MLP replaced by its experts, and the layers'
    // gates last (so that everything else can be written while the routers are computed).
    let mut specs: Vec<(TensorSpec, Source)> = Vec::new();
    let mut gates: Vec<(TensorSpec, Source)> = Vec::new();
    let mut done_layers = std::collections::BTreeSet::new();
    for name in base.names() {
        let meta = base.meta(name);
        let shape = meta.map(|m| m.shape.clone()).unwrap_or_default();
        if let Some((l, _)) = mlp_tensor(name) {
            if !done_layers.insert(l) {
                continue;
            }
            let moe = format!("model.layers.{l}.block_sparse_moe");
            gates.push((
                TensorSpec::new(
                    format!("{moe}.gate.weight"),
                    vec![n, cfg.hidden_size],
                    plan.dtype.unwrap_or(base_dtype),
                ),
                Source::Router(l),
            ));
            for (e, x) in experts.iter().enumerate() {
                for (proj, w) in EXPERT_NAMES {
                    let src = format!("model.layers.{l}.mlp.{proj}.weight");
                    let m = x.meta(&src).ok_or_else(|| {
                        MoeError::expert(show(x.dir()), format!("tensor `{src}` is missing"))
                    })?;
                    specs.push((
                        TensorSpec::new(
                            format!("{moe}.experts.{e}.{w}.weight"),
                            m.shape.clone(),
                            dtype_of(Some(&m.dtype)),
                        ),
                        Source::Expert(e, src),
                    ));
                }
            }
            continue;
        }
        let source = if plan.average_non_mlp {
            Source::Average(name.clone())
        } else {
            Source::Base(name.clone())
        };
        specs.push((
            TensorSpec::new(
                name.clone(),
                shape,
                dtype_of(meta.map(|m| m.dtype.as_str())),
            ),
            source,
        ));
    }
    if done_layers.len() != cfg.num_hidden_layers {
        return Err(MoeError::input(
            show(base.dir()),
            format!(
                "the base has MLP tensors in {} of its {} layers; every layer needs \
                 mlp.gate_proj/up_proj/down_proj",
                done_layers.len(),
                cfg.num_hidden_layers
            ),
        ));
    }
    if cfg.tie_word_embeddings && !base.contains("lm_head.weight") {
        let m = base.meta("model.embed_tokens.weight");
        specs.push((
            TensorSpec::new(
                "lm_head.weight",
                m.map(|m| m.shape.clone()).unwrap_or_default(),
                dtype_of(m.map(|m| m.dtype.as_str())),
            ),
            Source::TiedHead,
        ));
        warnings.push(
            "the base ties its output layer to the embeddings; the mixture stores lm_head.weight \
             (a copy) so that every Mixtral implementation can load it"
                .to_string(),
        );
    }

    specs.append(&mut gates);

    check_cancel(cancel)?;
    let init_routers = || {
        router::init_routers(
            plan.gate_mode,
            &plan.base,
            &plan.experts,
            cfg.num_hidden_layers,
            cfg.hidden_size,
            plan.seed,
        )
    };
    let base_json = base.config_json().cloned().unwrap_or_default();
    let aux_coef = training.map_or(train::DEFAULT_AUX_COEF, |t| t.aux_loss_coef);
    let out_cfg_json = mixtral_config(&base_json, n, k, plan.dtype, aux_coef);

    // Trained routers are ready before anything is written; initialised ones are computed
    // while the other tensors are written (below).
    let mut training_record = None;
    let trained = match training {
        Some(t) => {
            let mut routers = init_routers()?;
            let out_cfg = crate::config::parse(out_cfg_json.to_string().as_bytes(), "config.json")?;
            let tensors = mixture_tensors(&base, &experts, &specs, &routers)?;
            let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
            let mut model = Llama::new(&out_cfg, vb)?;
            let tok = crate::model::load_tokenizer(&plan.base.join("tokenizer.json"))?;
            let data = train::read_calibration(&t.data, &tok, router::bos_id(&cfg), t.max_len)?;
            let outcome = train::train_routers(&mut model, &data, t, train_progress, cancel)?;
            routers.layers = outcome.routers;
            training_record = Some(outcome.record);
            Some(routers)
        }
        None => None,
    };

    // The inputs are hashed for the record on another thread while the output is written:
    // hashing is CPU-bound, writing mostly waits on the disk.
    let to_hash = (
        checkpoint_files(&base),
        experts
            .iter()
            .map(|c| {
                (
                    c.dir().to_path_buf(),
                    "checkpoint".to_string(),
                    checkpoint_files(c),
                )
            })
            .collect::<Vec<_>>(),
    );
    let digests = recipe.digests.clone();
    let hasher = std::thread::spawn(move || hash_all(to_hash.0, to_hash.1, &digests));
    let staging = Staging::new(out_dir)?;
    let tensor_specs: Vec<TensorSpec> = specs.iter().map(|(s, _)| s.clone()).collect();
    let bytes_total: u64 = tensor_specs.iter().map(TensorSpec::bytes).sum();
    let mut writer =
        CheckpointWriter::create(staging.path(), tensor_specs.clone(), Some(plan.shard_size))?;
    let mut bytes_done = 0u64;
    let routers = std::thread::scope(|scope| -> Result<Routers, MoeError> {
        // The routers' forward passes over the prompts run on another thread while the main
        // one copies the stem and the experts, which mostly waits on the kernel's page cache.
        let mut pending = trained.is_none().then(|| scope.spawn(init_routers));
        let mut routers = trained;
        for (t, (spec, source)) in specs.iter().enumerate() {
            check_cancel(cancel)?;
            if matches!(source, Source::Router(_))
                && let Some(handle) = pending.take()
            {
                let done = handle
                    .join()
                    .map_err(|_| MoeError::Compute("the router thread panicked".to_string()))??;
                routers = Some(done);
            }
            let raw = match source {
                Source::Base(name) => Some((&base, name.as_str())),
                Source::Expert(e, name) => Some((&experts[*e], name.as_str())),
                _ => None,
            };
            let copied = match raw {
                Some((c, name))
                    if c.meta(name).map(|m| m.dtype.as_str())
                        == Some(spec.dtype.safetensors_name()) =>
                {
                    // Straight from the input's map to the output: no copy in between.
                    writer.write_raw(&spec.name, c.raw_bytes(name)?)?;
                    c.release(name);
                    true
                }
                _ => false,
            };
            if !copied {
                let data = read_source(&base, &experts, source, routers.as_ref())?;
                writer.write(&spec.name, &data)?;
            }
            bytes_done += spec.bytes();
            progress(Progress {
                tensors_done: t + 1,
                tensors_total: specs.len(),
                bytes_done,
                bytes_total,
                tensor: spec.name.clone(),
            });
        }
        routers.ok_or_else(|| MoeError::Compute("no layer has a router".to_string()))
    })?;
    let check = router::check_routers(&routers, plan.gate_mode);
    if !check.degenerate_layers.is_empty() {
        warnings.push(format!(
            "the routers of layers {:?} are near-degenerate (condition number > {}): the \
             experts' prompts may be too similar, and some experts will be underused",
            check.degenerate_layers,
            router::DEGENERATE_CONDITION
        ));
    }
    writer.finish()?;
    check_cancel(cancel)?;
    write_json(&staging.path().join(CONFIG), &out_cfg_json)?;
    copy_side_files(base.dir(), staging.path())?;

    let (base_files, expert_files) = hasher
        .join()
        .map_err(|_| MoeError::Compute("the hashing thread panicked".to_string()))??;
    let parameters = mixtral_params(&cfg, n, k);
    let record = MixRecord {
        clreg_version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "mixtral".to_string(),
        base: plan.base.clone(),
        base_files,
        experts: plan
            .experts
            .iter()
            .zip(expert_files)
            .map(|(e, files)| expert_record(e, "checkpoint", files, None, None))
            .collect(),
        router: RouterRecord {
            init: plan.gate_mode.name().to_string(),
            seed: plan.seed,
            top_k: k,
            gate_norm: "softmax".to_string(),
            check,
        },
        parameters,
        output_dtype: plan.dtype.map_or_else(
            || format!("as inputs ({})", base_dtype.torch_name()),
            |d| d.torch_name().to_string(),
        ),
        training: training_record,
        warnings: warnings.clone(),
        recipe: recipe.clone(),
    };
    record.write(staging.path())?;
    let out = staging.commit()?;
    Ok(MixReport {
        out_dir: out,
        kind: "mixtral".to_string(),
        tensors: specs.len(),
        bytes: bytes_total,
        parameters,
        warnings,
        record,
    })
}

pub(crate) fn expert_record(
    e: &crate::moe::recipe::PlanExpert,
    kind: &str,
    files: Vec<FileHash>,
    rank: Option<usize>,
    scale: Option<f64>,
) -> ExpertRecord {
    ExpertRecord {
        source: e.source.clone(),
        kind: kind.to_string(),
        files,
        positive_prompts: e.positive.len(),
        negative_prompts: e.negative.len(),
        positive_prompts_sha256: router::prompts_digest(&e.positive),
        negative_prompts_sha256: (!e.negative.is_empty())
            .then(|| router::prompts_digest(&e.negative)),
        rank,
        scale,
    }
}

pub(crate) use crate::formats::output::{copy_side_files, write_json};

/// `model.layers.{l}.…` → l.
pub(crate) fn layer_of(module: &str) -> Option<usize> {
    module
        .strip_prefix("model.layers.")?
        .split_once('.')?
        .0
        .parse()
        .ok()
}
