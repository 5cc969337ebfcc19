//! LoRA-MoE bundles: N LoRA experts (PEFT adapters, or full fine-tunes decomposed by truncated
//! SVD) on the same modules of one base, with a router `[N, in]` per module. On disk:
//! `clreg_moe.json` (base by path and digest, experts with digests, ranks and scales, modules,
//! router settings) and `clreg_moe.safetensors` (each module's router and experts' A/B).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::formats::dtype::OutDtype;
use crate::formats::lora::{LoraAdapter, LoraPair};
use crate::formats::writer::{SafetensorsWriter, TensorSpec};
use crate::formats::{Checkpoint, Staging};
use crate::inspect::ADAPTER_CONFIG;
use crate::merge::Progress;
use crate::merge::record::FileHash;
use crate::model::{self, GateNorm, LINEAR_MODULES, Llama, LoraMoe};
use crate::moe::build::{
    self, MixReport, check_cancel, checkpoint_files, copy_side_files, expert_record, hash_all, show,
};
use crate::moe::decompose::decompose_delta;
use crate::moe::error::MoeError;
use crate::moe::recipe::{GateMode, MoeRecipe};
use crate::moe::record::{MixRecord, ParamCounts, RouterRecord, TrainingRecord};
use crate::moe::router::{self, RANDOM_STD};
use crate::moe::train::{self, RouterTraining, TrainProgress};
use crate::tiny::SplitMix64;

/// The bundle's description file.
pub const BUNDLE_JSON: &str = "clreg_moe.json";
/// The bundle's weights file.
pub const BUNDLE_WEIGHTS: &str = "clreg_moe.safetensors";
/// The `format` value of [`BUNDLE_JSON`].
pub const BUNDLE_FORMAT: &str = "clreg-lora-moe";

/// The base a bundle was built on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    /// As given when mixing; a relative path is taken from the bundle's directory.
    pub path: PathBuf,
    /// [`checkpoint_digest`] of the base's files.
    pub digest: String,
}

/// One expert of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleExpert {
    pub source: PathBuf,
    /// `adapter`, or `checkpoint` for a decomposed full fine-tune.
    pub kind: String,
    /// sha256 over the expert's files (as [`checkpoint_digest`]).
    pub digest: String,
    /// Its rank before padding to the bundle's rank.
    pub rank: usize,
    /// The LoRA scale s of every module but those in `scale_pattern`.
    pub scale: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale_pattern: BTreeMap<String, f64>,
}

/// Router settings of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleRouter {
    pub gate_norm: GateNorm,
    pub top_k: usize,
    pub init: String,
    pub seed: u64,
}

/// `clreg_moe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraMoeBundle {
    pub format: String,
    pub version: u32,
    pub base: BaseRef,
    pub experts: Vec<BundleExpert>,
    /// Full names of the routed modules (`model.layers.0.self_attn.q_proj` …).
    pub modules: Vec<String>,
    /// Every expert is zero-padded to this rank at run time (exact).
    pub rank: usize,
    pub router: BundleRouter,
    pub weights: String,
}

/// The key of module `m`'s router in [`BUNDLE_WEIGHTS`].
pub fn router_key(m: &str) -> String {
    format!("{m}.router.weight")
}

/// The keys of expert `e`'s A and B on module `m`.
pub fn expert_keys(m: &str, e: usize) -> (String, String) {
    (
        format!("{m}.experts.{e}.lora_A.weight"),
        format!("{m}.experts.{e}.lora_B.weight"),
    )
}

/// `sha256:` + the sha256 of the lines `<file name>\t<sha256>\n`, in the given order.
pub fn checkpoint_digest(files: &[FileHash]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(format!("{}\t{}\n", f.file, f.sha256).as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

enum Expert {
    Adapter(Box<LoraAdapter>),
    Checkpoint(Checkpoint),
}

fn module_short(m: &str) -> &str {
    m.rsplit('.').next().unwrap_or(m)
}

/// Builds the LoRA-MoE bundle of `recipe` into `out_dir`: experts are PEFT adapters of the base
/// (same modules; different ranks are zero-padded) or full fine-tunes decomposed at `rank`.
///
/// With `training`, the routers are trained on its calibration set before the bundle is
/// written ([`train::train_routers`]); that loads the base in f32 beside the experts.
pub fn mix_lora(
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
    let cfg = build::base_config(&base)?;
    let base_shapes: BTreeMap<String, Vec<u64>> = base
        .names()
        .iter()
        .filter_map(|n| {
            base.meta(n)
                .map(|m| (n.clone(), m.shape.iter().map(|d| *d as u64).collect()))
        })
        .collect();
    let mut experts = Vec::new();
    for e in &plan.experts {
        if e.source.join(ADAPTER_CONFIG).is_file() {
            let a = LoraAdapter::open(&e.source)?;
            crate::adapter::check_against_base(
                a.config(),
                a.file().info(),
                &base_shapes,
                &show(a.file().path()),
            )?;
            if a.config().fan_in_fan_out {
                return Err(MoeError::expert(
                    show(&e.source),
                    "fan_in_fan_out adapters (Conv1D layouts) cannot be LoRA-MoE experts of a \
                     Llama model",
                ));
            }
            experts.push(Expert::Adapter(Box::new(a)));
        } else {
            let c = Checkpoint::open(&e.source)?;
            build::check_expert(&base, &cfg, &c)?;
            if plan.rank.is_none() {
                return Err(MoeError::recipe(format!(
                    "expert `{}` is a full checkpoint: set `rank` to decompose its delta into \
                     a LoRA expert by truncated SVD",
                    show(&e.source)
                )));
            }
            experts.push(Expert::Checkpoint(c));
        }
    }
    // Every adapter must adapt the same modules; decomposed experts follow them.
    let mut modules: Option<(BTreeSet<String>, String)> = None;
    for (e, x) in experts.iter().enumerate() {
        let Expert::Adapter(a) = x else { continue };
        let set: BTreeSet<String> = a.modules().map(str::to_string).collect();
        match &modules {
            None => modules = Some((set, show(&plan.experts[e].source))),
            Some((first, name)) if *first != set => {
                let only_here: Vec<&String> = set.difference(first).take(3).collect();
                let only_there: Vec<&String> = first.difference(&set).take(3).collect();
                return Err(MoeError::expert(
                    show(&plan.experts[e].source),
                    format!(
                        "it adapts other modules than `{name}` (only here: {only_here:?}, only \
                         there: {only_there:?}); LoRA-MoE experts must target the same modules \
                         (adapters of different targets are refused, not padded)"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let modules: Vec<String> = match modules {
        Some((set, _)) => set.into_iter().collect(),
        None => (0..cfg.num_hidden_layers)
            .flat_map(|l| {
                LINEAR_MODULES
                    .iter()
                    .filter(|m| plan.lora_targets.iter().any(|t| t == module_short(m)))
                    .map(move |m| format!("model.layers.{l}.{m}"))
            })
            .collect(),
    };
    if modules.is_empty() {
        return Err(MoeError::recipe(format!(
            "lora_targets {:?} match no linear module (q_proj … down_proj)",
            plan.lora_targets
        )));
    }
    let n = experts.len();
    let rank_of = |x: &Expert| match x {
        Expert::Adapter(a) => {
            let c = a.config();
            c.rank_pattern
                .values()
                .copied()
                .chain([c.r])
                .max()
                .unwrap_or(c.r) as usize
        }
        Expert::Checkpoint(_) => plan.rank.unwrap_or(1),
    };
    let ranks: Vec<usize> = experts.iter().map(rank_of).collect();
    let rank = ranks.iter().copied().max().unwrap_or(1);
    if ranks.iter().any(|r| *r != rank) {
        warnings.push(format!(
            "the experts' ranks differ ({ranks:?}); lower ranks are zero-padded to {rank} at run \
             time, which changes nothing in the output"
        ));
    }

    // Routers: per module [N, in]; prompt modes use the layer's vector where in == hidden.
    let layer_routers = if plan.gate_mode.needs_prompts() {
        Some(router::init_routers(
            plan.gate_mode,
            &plan.base,
            &plan.experts,
            cfg.num_hidden_layers,
            cfg.hidden_size,
            plan.seed,
        )?)
    } else {
        None
    };
    let mut zero_routed = 0usize;
    let staging = Staging::new(out_dir)?;
    let dtype = plan.dtype.unwrap_or(OutDtype::Float32);
    let mut module_data: Vec<(String, Vec<f32>, Vec<LoraPair>)> = Vec::new();
    let mut scales: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); n];
    for (mi, m) in modules.iter().enumerate() {
        check_cancel(cancel)?;
        let weight = format!("{m}.weight");
        let shape = base.meta(&weight).map(|t| t.shape.clone()).ok_or_else(|| {
            MoeError::input(
                show(base.dir()),
                format!("the base has no tensor `{weight}`"),
            )
        })?;
        let (out, inp) = (shape[0], shape.get(1).copied().unwrap_or(0));
        let mut pairs = Vec::with_capacity(n);
        let base_w = if experts.iter().any(|x| matches!(x, Expert::Checkpoint(_))) {
            Some(base.read_f32(&weight)?)
        } else {
            None
        };
        for (e, x) in experts.iter().enumerate() {
            let (pair, scale) = match x {
                Expert::Adapter(a) => {
                    let p = a.read(m)?.ok_or_else(|| {
                        MoeError::expert(show(a.dir()), format!("module `{m}` is not adapted"))
                    })?;
                    (p, a.scale(m))
                }
                Expert::Checkpoint(c) => {
                    let mut d = c.read_f32(&weight)?;
                    if let Some(b) = &base_w {
                        d.iter_mut().zip(b).for_each(|(x, y)| *x -= y);
                    }
                    let r = plan.rank.unwrap_or(1).min(out.min(inp));
                    let (a, b) = decompose_delta(&d, out, inp, r);
                    (LoraPair { a, b, r, inp, out }, 1.0)
                }
            };
            scales[e].insert(m.clone(), scale);
            pairs.push(pair);
        }
        let router: Vec<f32> = match (&layer_routers, plan.gate_mode) {
            (_, GateMode::Uniform) => vec![0f32; n * inp],
            (Some(r), _) if inp == cfg.hidden_size => {
                let l = crate::moe::build::layer_of(m).unwrap_or(0);
                r.layers[l].clone()
            }
            (Some(_), _) => {
                zero_routed += 1;
                vec![0f32; n * inp]
            }
            (None, _) => {
                let mut rng = SplitMix64::new(
                    plan.seed ^ (mi as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                (0..n * inp)
                    .map(|_| (rng.next_normal() * RANDOM_STD) as f32)
                    .collect()
            }
        };
        module_data.push((m.clone(), router, pairs));
        progress(Progress {
            tensors_done: mi + 1,
            tensors_total: modules.len(),
            bytes_done: 0,
            bytes_total: 0,
            tensor: m.clone(),
        });
    }
    if zero_routed > 0 {
        warnings.push(format!(
            "{zero_routed} module(s) take inputs of another width than the hidden state \
             (o_proj, down_proj); gate_mode {} cannot set their routers, which start at zero \
             (equal weights)",
            plan.gate_mode.name()
        ));
    }
    let router_settings = BundleRouter {
        gate_norm: plan.gate_norm,
        top_k: plan.top_k,
        init: plan.gate_mode.name().to_string(),
        seed: plan.seed,
    };
    let training_record = match training {
        Some(t) => Some(train_bundle_routers(
            &plan.base,
            &cfg,
            &mut module_data,
            &scales,
            &router_settings,
            t,
            train_progress,
            cancel,
        )?),
        None => None,
    };
    let mut specs = Vec::new();
    for (m, _, pairs) in &module_data {
        let inp = pairs.first().map_or(0, |p| p.inp);
        specs.push(TensorSpec::new(router_key(m), vec![n, inp], dtype));
        for (e, p) in pairs.iter().enumerate() {
            let (ak, bk) = expert_keys(m, e);
            specs.push(TensorSpec::new(ak, vec![p.r, p.inp], dtype));
            specs.push(TensorSpec::new(bk, vec![p.out, p.r], dtype));
        }
    }
    let bytes: u64 = specs.iter().map(TensorSpec::bytes).sum();
    let tensors = specs.len();
    let mut w = SafetensorsWriter::create(&staging.path().join(BUNDLE_WEIGHTS), specs)?;
    for (m, router, pairs) in &module_data {
        w.write(&router_key(m), router)?;
        for (e, p) in pairs.iter().enumerate() {
            let (ak, bk) = expert_keys(m, e);
            w.write(&ak, &p.a)?;
            w.write(&bk, &p.b)?;
        }
    }
    w.finish()?;
    check_cancel(cancel)?;
    copy_side_files(base.dir(), staging.path())?;

    let expert_files: Vec<(PathBuf, String, Vec<PathBuf>)> = experts
        .iter()
        .zip(&plan.experts)
        .map(|(x, e)| match x {
            Expert::Adapter(a) => (
                e.source.clone(),
                "adapter".to_string(),
                vec![a.dir().join(ADAPTER_CONFIG), a.file().path().to_path_buf()],
            ),
            Expert::Checkpoint(c) => (
                e.source.clone(),
                "checkpoint".to_string(),
                checkpoint_files(c),
            ),
        })
        .collect();
    let kinds: Vec<String> = expert_files.iter().map(|(_, k, _)| k.clone()).collect();
    let (base_files, hashed) = hash_all(checkpoint_files(&base), expert_files, &recipe.digests)?;
    let bundle_experts: Vec<BundleExpert> = (0..n)
        .map(|e| {
            let s = &scales[e];
            let common = s.values().next().copied().unwrap_or(1.0);
            BundleExpert {
                source: plan.experts[e].source.clone(),
                kind: kinds[e].clone(),
                digest: checkpoint_digest(&hashed[e]),
                rank: ranks[e],
                scale: common,
                scale_pattern: s
                    .iter()
                    .filter(|(_, v)| **v != common)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            }
        })
        .collect();
    let bundle = LoraMoeBundle {
        format: BUNDLE_FORMAT.to_string(),
        version: 1,
        base: BaseRef {
            path: plan.base.clone(),
            digest: checkpoint_digest(&base_files),
        },
        experts: bundle_experts,
        modules: modules.clone(),
        rank,
        router: router_settings,
        weights: BUNDLE_WEIGHTS.to_string(),
    };
    let bundle_json =
        serde_json::to_value(&bundle).map_err(|e| MoeError::input(BUNDLE_JSON, e.to_string()))?;
    build::write_json(&staging.path().join(BUNDLE_JSON), &bundle_json)?;

    let stem = cfg.parameters();
    let (mut expert_params, mut router_params, mut active_experts) = (0u64, 0u64, 0u64);
    for (_, _, pairs) in &module_data {
        let (inp, out) = pairs
            .first()
            .map_or((0, 0), |p| (p.inp as u64, p.out as u64));
        expert_params += pairs.iter().map(|p| p.r as u64 * (inp + out)).sum::<u64>();
        router_params += n as u64 * inp;
        let k = if plan.gate_norm == GateNorm::Sigmoid {
            n
        } else {
            plan.top_k
        };
        active_experts += k as u64 * rank as u64 * (inp + out);
    }
    let parameters = ParamCounts {
        stem,
        experts: expert_params,
        router: router_params,
        total: stem + expert_params + router_params,
        active: stem + router_params + active_experts,
    };
    let record = MixRecord {
        clreg_version: env!("CARGO_PKG_VERSION").to_string(),
        kind: "lora_moe".to_string(),
        base: plan.base.clone(),
        base_files,
        experts: plan
            .experts
            .iter()
            .zip(hashed)
            .enumerate()
            .map(|(e, (x, files))| {
                expert_record(
                    x,
                    &kinds[e],
                    files,
                    Some(ranks[e]),
                    Some(bundle.experts[e].scale),
                )
            })
            .collect(),
        router: RouterRecord {
            init: plan.gate_mode.name().to_string(),
            seed: plan.seed,
            top_k: plan.top_k,
            gate_norm: match plan.gate_norm {
                GateNorm::Softmax => "softmax".to_string(),
                GateNorm::Sigmoid => "sigmoid".to_string(),
            },
            check: match &layer_routers {
                Some(r) => router::check_routers(r, plan.gate_mode),
                None => router::RouterCheck {
                    condition_numbers: Vec::new(),
                    degenerate_layers: Vec::new(),
                },
            },
        },
        parameters,
        output_dtype: dtype.torch_name().to_string(),
        training: training_record,
        warnings: warnings.clone(),
        recipe: recipe.clone(),
    };
    record.write(staging.path())?;
    let out = staging.commit()?;
    Ok(MixReport {
        out_dir: out,
        kind: "lora_moe".to_string(),
        tensors,
        bytes,
        parameters,
        warnings,
        record,
    })
}

/// Reads `clreg_moe.json` of a bundle directory.
pub fn read_bundle(dir: &Path) -> Result<LoraMoeBundle, MoeError> {
    let path = dir.join(BUNDLE_JSON);
    let bytes = std::fs::read(&path)
        .map_err(|e| MoeError::input(show(&path), format!("cannot read: {e}")))?;
    let bundle: LoraMoeBundle = serde_json::from_slice(&bytes)
        .map_err(|e| MoeError::input(show(&path), format!("not a LoRA-MoE description: {e}")))?;
    if bundle.format != BUNDLE_FORMAT || bundle.version != 1 {
        return Err(MoeError::input(
            show(&path),
            format!(
                "format `{}` version {} is not {BUNDLE_FORMAT} version 1",
                bundle.format, bundle.version
            ),
        ));
    }
    Ok(bundle)
}

/// The base directory of a bundle: its path, taken from the bundle's directory when relative.
pub fn bundle_base(dir: &Path, bundle: &LoraMoeBundle) -> PathBuf {
    if bundle.base.path.is_absolute() {
        bundle.base.path.clone()
    } else {
        let from_cwd = bundle.base.path.clone();
        if from_cwd.join("config.json").is_file() {
            from_cwd
        } else {
            dir.join(&bundle.base.path)
        }
    }
}

/// Puts the bundle's routed experts on `model` (which must be its base).
pub fn apply_bundle(model: &mut Llama, dir: &Path, bundle: &LoraMoeBundle) -> Result<(), MoeError> {
    let path = dir.join(&bundle.weights);
    let file = show(&path);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| MoeError::input(&file, format!("cannot read tensors: {e}")))?;
    let (dtype, device) = (model.dtype(), model.device().clone());
    let get = |k: &str| -> Result<Tensor, MoeError> {
        let t = tensors
            .get(k)
            .ok_or_else(|| MoeError::input(&file, format!("tensor `{k}` is missing")))?;
        Ok(t.to_dtype(dtype)?.to_device(&device)?)
    };
    let mut ready = Vec::with_capacity(bundle.modules.len());
    for m in &bundle.modules {
        let router = get(&router_key(m))?;
        let mut experts = Vec::with_capacity(bundle.experts.len());
        for (e, x) in bundle.experts.iter().enumerate() {
            let (ak, bk) = expert_keys(m, e);
            let scale = x.scale_pattern.get(m).copied().unwrap_or(x.scale);
            experts.push((get(&ak)?, get(&bk)?, scale));
        }
        let moe = routed_module(model, m, router, &experts, &bundle.router)
            .map_err(|e| MoeError::input(&file, e))?;
        ready.push((m.clone(), moe));
    }
    // Nothing changes on the model unless every module fits.
    for (m, moe) in ready {
        if let Some(linear) = model.linear_mut(&m) {
            linear.moe = Some(moe);
        }
    }
    Ok(())
}

/// Module `m` of `model` with `experts` (`(A, B, scale)`) routed by `router`, checked against
/// the module's weight; the error says what does not fit.
fn routed_module(
    model: &Llama,
    m: &str,
    router: Tensor,
    experts: &[(Tensor, Tensor, f64)],
    settings: &BundleRouter,
) -> Result<LoraMoe, String> {
    let moe = LoraMoe::new(router, experts, settings.top_k, settings.gate_norm)
        .map_err(|e| format!("module `{m}`: {e}"))?;
    let Some(linear) = model.linear(m) else {
        return Err(format!("module `{m}` is not a linear module of the base"));
    };
    let (out, inp) = linear.shape();
    let fits = moe.router.dim(1).ok() == Some(inp)
        && experts.first().and_then(|x| x.1.dim(0).ok()) == Some(out);
    if !fits {
        return Err(format!(
            "module `{m}`: the experts do not fit the base weight [{out}, {inp}]"
        ));
    }
    Ok(moe)
}

/// Trains the routers of `module_data` in place on the base (loaded in f32 with the experts
/// routed on its modules), as [`train::train_routers`] does for a Mixtral checkpoint.
#[allow(clippy::too_many_arguments)]
fn train_bundle_routers(
    base_dir: &Path,
    cfg: &crate::config::LlamaConfig,
    module_data: &mut [(String, Vec<f32>, Vec<LoraPair>)],
    scales: &[BTreeMap<String, f64>],
    settings: &BundleRouter,
    training: &RouterTraining,
    progress: &dyn Fn(TrainProgress),
    cancel: &AtomicBool,
) -> Result<TrainingRecord, MoeError> {
    let (mut model, _) = model::load(base_dir, &Device::Cpu, DType::F32)?;
    for (m, router, pairs) in module_data.iter() {
        let n = pairs.len();
        let inp = pairs.first().map_or(0, |p| p.inp);
        let router = Tensor::from_slice(router, (n, inp), &Device::Cpu)?;
        let mut experts = Vec::with_capacity(n);
        for (e, p) in pairs.iter().enumerate() {
            let a = Tensor::from_slice(&p.a, (p.r, p.inp), &Device::Cpu)?;
            let b = Tensor::from_slice(&p.b, (p.out, p.r), &Device::Cpu)?;
            experts.push((a, b, scales[e].get(m).copied().unwrap_or(1.0)));
        }
        let moe = routed_module(&model, m, router, &experts, settings)
            .map_err(|e| MoeError::input(show(base_dir), e))?;
        if let Some(linear) = model.linear_mut(m) {
            linear.moe = Some(moe);
        }
    }
    let tok = model::load_tokenizer(&base_dir.join("tokenizer.json"))?;
    let data =
        train::read_calibration(&training.data, &tok, router::bos_id(cfg), training.max_len)?;
    let outcome = train::train_routers(&mut model, &data, training, progress, cancel)?;
    for (m, router, _) in module_data.iter_mut() {
        let trained = model
            .linear(m)
            .and_then(|l| l.moe.as_ref())
            .ok_or_else(|| {
                MoeError::input(show(base_dir), format!("module `{m}` lost its router"))
            })?;
        *router = trained.router.flatten_all()?.to_vec1::<f32>()?;
    }
    Ok(outcome.record)
}

/// Loads a LoRA-MoE bundle: its base (checked against the recorded digest when `verify`) onto
/// `device` in `dtype`, with the routed experts on their modules.
pub fn load_bundle(
    dir: &Path,
    device: &Device,
    dtype: DType,
    verify: bool,
) -> Result<(Llama, LoraMoeBundle), MoeError> {
    let bundle = read_bundle(dir)?;
    let base_dir = bundle_base(dir, &bundle);
    load_read_bundle(dir, bundle, &base_dir, device, dtype, verify)
}

/// [`load_bundle`] with the base read from `base_dir` instead of the path the bundle records
/// (which names the mixing machine's copy): a registry stages the base itself.
pub fn load_bundle_on(
    dir: &Path,
    base_dir: &Path,
    device: &Device,
    dtype: DType,
    verify: bool,
) -> Result<(Llama, LoraMoeBundle), MoeError> {
    load_read_bundle(dir, read_bundle(dir)?, base_dir, device, dtype, verify)
}

/// [`load_bundle_on`] with the bundle's description already read.
fn load_read_bundle(
    dir: &Path,
    bundle: LoraMoeBundle,
    base_dir: &Path,
    device: &Device,
    dtype: DType,
    verify: bool,
) -> Result<(Llama, LoraMoeBundle), MoeError> {
    if verify {
        let base = Checkpoint::open(base_dir)?;
        let (files, _) = hash_all(checkpoint_files(&base), Vec::new(), &Default::default())?;
        let digest = checkpoint_digest(&files);
        if digest != bundle.base.digest {
            return Err(MoeError::input(
                show(base_dir),
                format!(
                    "its files digest to {digest}, but the bundle was built on {}; give the \
                     base the bundle was mixed on",
                    bundle.base.digest
                ),
            ));
        }
    }
    let (mut model, _) = model::load(base_dir, device, dtype)?;
    apply_bundle(&mut model, dir, &bundle)?;
    Ok((model, bundle))
}
