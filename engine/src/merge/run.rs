//! Running a recipe: open and check every input, merge tensor by tensor (or module by module for
//! adapter outputs) into a staging directory, record the recipe, rename into place.
//!
//! Inputs may be full checkpoints or PEFT adapters; an adapter stands for its base plus
//! ΔW = s·B·A, so `linear` over adapters is the study's LoRA "average" and `linear` over one
//! adapter is `merge_and_unload`, both streamed per tensor without materialising any full model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapter::{self, AdapterConfig, TargetModules};
use crate::formats::checkpoint::Checkpoint;
use crate::formats::dtype::OutDtype;
use crate::formats::lora::{self, LoraAdapter, LoraPair, a_key, b_key};
use crate::formats::output;
use crate::formats::staging::Staging;
use crate::formats::writer::{CheckpointWriter, TensorSpec};
use crate::inspect::{ADAPTER_CONFIG, CONFIG, INDEX};
use crate::merge::error::MergeError;
use crate::merge::linear;
use crate::merge::lora_out::{self, ModuleInput};
use crate::merge::mergekit::{self, MergekitParams};
use crate::merge::peft::{self, PeftCombination, PeftParams};
use crate::merge::recipe::{Flavour, MergePlan, Method, Recipe};
use crate::merge::record::{self, InputFiles, MergeRecord, RECORD};
use crate::merge::task::{Sparsify, TaskVector};

/// Where a merge stands, reported after each tensor (or module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// The tensor (or module) just written.
    pub tensor: String,
}

/// What a finished merge wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    pub out_dir: PathBuf,
    pub method: Method,
    pub flavour: Flavour,
    /// `checkpoint` or `adapter`.
    pub output_kind: String,
    pub tensors: usize,
    pub bytes: u64,
    pub output_dtype: String,
    pub warnings: Vec<String>,
    pub record: MergeRecord,
}

enum Input {
    Checkpoint(Checkpoint),
    Adapter(Box<LoraAdapter>),
}

impl Input {
    fn open(path: &Path) -> Result<Self, MergeError> {
        if path.join(ADAPTER_CONFIG).is_file() {
            Ok(Self::Adapter(Box::new(LoraAdapter::open(path)?)))
        } else {
            Ok(Self::Checkpoint(Checkpoint::open(path)?))
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Checkpoint(_) => "checkpoint",
            Self::Adapter(_) => "adapter",
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        match self {
            Self::Checkpoint(c) => checkpoint_files(c),
            Self::Adapter(a) => vec![a.dir().join(ADAPTER_CONFIG), a.file().path().to_path_buf()],
        }
    }
}

fn checkpoint_files(c: &Checkpoint) -> Vec<PathBuf> {
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

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `recipe` into `out_dir` (which must not exist or be empty). On any error, or when
/// `cancel` is set (checked between tensors), nothing is left at `out_dir`.
pub fn run_recipe(
    recipe: &Recipe,
    out_dir: &Path,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<MergeReport, MergeError> {
    let plan = recipe.resolve()?;
    if plan.method.outputs_adapter() {
        run_adapter_merge(&plan, recipe, out_dir, progress, cancel)
    } else {
        run_model_merge(&plan, recipe, out_dir, progress, cancel)
    }
}

/// Merges `adapter` into `base` (W += s·B·A, transposed with `fan_in_fan_out`) and writes the
/// full model to `out_dir`: PEFT's `merge_and_unload`.
pub fn merge_and_unload(
    base: &Path,
    adapter: &Path,
    out_dir: &Path,
    dtype: Option<OutDtype>,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<MergeReport, MergeError> {
    let recipe = Recipe {
        merge_method: "linear".to_string(),
        base_model: Some(base.to_path_buf()),
        models: vec![crate::merge::recipe::RecipeModel {
            model: adapter.to_path_buf(),
            parameters: Default::default(),
        }],
        parameters: Default::default(),
        dtype: dtype.map(|d| d.torch_name().to_string()),
        tokenizer_source: None,
        flavour: None,
        seed: None,
        shard_size: None,
        digests: Default::default(),
    };
    run_recipe(&recipe, out_dir, progress, cancel)
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), MergeError> {
    if cancel.load(Ordering::Relaxed) {
        Err(MergeError::Cancelled)
    } else {
        Ok(())
    }
}

/// The methods whose output is a full checkpoint.
fn run_model_merge(
    plan: &MergePlan,
    recipe: &Recipe,
    out_dir: &Path,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<MergeReport, MergeError> {
    let mut warnings = plan.warnings.clone();
    let base = plan.base.as_deref().map(Checkpoint::open).transpose()?;
    let mut inputs: Vec<(usize, Input)> = Vec::new();
    for (i, m) in plan.models.iter().enumerate() {
        if plan.method != Method::Linear
            && let Some(b) = &plan.base
            && same_dir(&m.path, b)
        {
            warnings.push(format!(
                "`{}` is the base model; its task vector is zero, so it is skipped (as mergekit does)",
                show(&m.path)
            ));
            continue;
        }
        inputs.push((i, Input::open(&m.path)?));
    }
    // The reference fixes the tensor set, shapes, default dtypes and copied files.
    let reference: &Checkpoint = match &base {
        Some(b) => b,
        None => inputs
            .iter()
            .find_map(|(_, inp)| match inp {
                Input::Checkpoint(c) => Some(c),
                Input::Adapter(_) => None,
            })
            .ok_or_else(|| {
                MergeError::recipe("merging adapters into full weights needs `base_model`")
            })?,
    };
    if base.is_none() && inputs.iter().any(|(_, i)| matches!(i, Input::Adapter(_))) {
        return Err(MergeError::recipe(
            "merging adapters into full weights needs `base_model`",
        ));
    }
    check_inputs(reference, &inputs)?;

    let specs: Vec<TensorSpec> = reference
        .names()
        .iter()
        .map(|n| {
            let meta = reference.meta(n);
            let dtype = plan
                .dtype
                .or_else(|| meta.and_then(|m| OutDtype::from_safetensors(&m.dtype)))
                .unwrap_or(OutDtype::Float32);
            TensorSpec::new(
                n.clone(),
                meta.map(|m| m.shape.clone()).unwrap_or_default(),
                dtype,
            )
        })
        .collect();
    let bytes_total: u64 = specs.iter().map(TensorSpec::bytes).sum();
    let staging = Staging::new(out_dir)?;
    let mut writer = CheckpointWriter::create(staging.path(), specs.clone(), plan.shard_size)?;
    let mut bytes_done = 0u64;
    let mut buffers = Buffers::default();
    for (t, spec) in specs.iter().enumerate() {
        check_cancel(cancel)?;
        merge_one_tensor(plan, &spec.name, reference, &inputs, &mut buffers)?;
        let data = &buffers.merged;
        if spec.dtype == OutDtype::Float32 && cfg!(target_endian = "little") {
            writer.write_raw(&spec.name, bytemuck::cast_slice(data))?;
        } else {
            writer.write(&spec.name, data)?;
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
    writer.finish()?;
    check_cancel(cancel)?;
    copy_side_files(reference.dir(), staging.path(), plan.dtype)?;

    let output_dtype = match plan.dtype {
        Some(d) => d.torch_name().to_string(),
        None => {
            let set: BTreeSet<OutDtype> = specs.iter().map(|s| s.dtype).collect();
            let names: Vec<&str> = set.iter().map(|d| d.torch_name()).collect();
            format!("as base ({})", names.join(", "))
        }
    };
    let mut hashed = Vec::new();
    if let Some(b) = &base {
        hashed.push(InputFiles {
            role: "base".to_string(),
            path: b.dir().to_path_buf(),
            kind: "checkpoint".to_string(),
            weight_density: None,
            files: checkpoint_files(b),
        });
    }
    for (i, inp) in &inputs {
        let m = &plan.models[*i];
        hashed.push(InputFiles {
            role: "model".to_string(),
            path: m.path.clone(),
            kind: inp.kind().to_string(),
            weight_density: Some((m.weight, m.density)),
            files: inp.files(),
        });
    }
    let record = finish_record(
        plan,
        recipe,
        "checkpoint",
        &output_dtype,
        hashed,
        &warnings,
        staging.path(),
    )?;
    let out = staging.commit()?;
    Ok(MergeReport {
        out_dir: out,
        method: plan.method,
        flavour: plan.flavour,
        output_kind: "checkpoint".to_string(),
        tensors: specs.len(),
        bytes: bytes_total,
        output_dtype,
        warnings,
        record,
    })
}

fn finish_record(
    plan: &MergePlan,
    recipe: &Recipe,
    kind: &str,
    output_dtype: &str,
    hashed: Vec<InputFiles>,
    warnings: &[String],
    dir: &Path,
) -> Result<MergeRecord, MergeError> {
    let mut plan = plan.clone();
    plan.warnings = warnings.to_vec();
    let record = MergeRecord {
        clreg_version: env!("CARGO_PKG_VERSION").to_string(),
        method: plan.method.name().to_string(),
        flavour: match plan.flavour {
            Flavour::Mergekit => "mergekit".to_string(),
            Flavour::Peft => "peft".to_string(),
        },
        output_kind: kind.to_string(),
        output_dtype: output_dtype.to_string(),
        compute_dtype: "float32 storage, float64 per-element arithmetic".to_string(),
        plan,
        rng: record::rng_description(),
        inputs: record::hash_inputs(hashed, &recipe.digests)?,
        recipe: recipe.clone(),
    };
    output::write_json(&dir.join(RECORD), &record)?;
    Ok(record)
}

/// The reference's config (with `torch_dtype` set to the output dtype, when one is chosen)
/// and its side files.
fn copy_side_files(from: &Path, to: &Path, dtype: Option<OutDtype>) -> Result<(), MergeError> {
    let io = |p: &Path, e: &dyn std::fmt::Display| {
        crate::error::FormatError::io(&show(p), e.to_string())
    };
    let (src, dst) = (from.join(CONFIG), to.join(CONFIG));
    if src.is_file() {
        match dtype {
            Some(d) => {
                let bytes = std::fs::read(&src).map_err(|e| io(&src, &e))?;
                let mut v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| io(&src, &e))?;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("torch_dtype".to_string(), serde_json::json!(d.torch_name()));
                }
                output::write_json(&dst, &v)?;
            }
            None => {
                std::fs::copy(&src, &dst).map_err(|e| io(&dst, &e))?;
            }
        }
    }
    Ok(output::copy_side_files(from, to)?)
}

/// Config, tensor-set, shape and dtype checks of every input against the reference.
fn check_inputs(reference: &Checkpoint, inputs: &[(usize, Input)]) -> Result<(), MergeError> {
    let ref_dir = show(reference.dir());
    let float = |dtype: &str| OutDtype::from_safetensors(dtype).is_some();
    let ref_cfg = reference.config_json();
    for name in reference.names() {
        if let Some(m) = reference.meta(name)
            && !float(&m.dtype)
        {
            return Err(MergeError::UnsupportedDtype {
                tensor: name.clone(),
                file: ref_dir.clone(),
                dtype: m.dtype.clone(),
            });
        }
    }
    let base_shapes: BTreeMap<String, Vec<u64>> = reference
        .names()
        .iter()
        .filter_map(|n| {
            reference
                .meta(n)
                .map(|m| (n.clone(), m.shape.iter().map(|d| *d as u64).collect()))
        })
        .collect();
    for (_, input) in inputs {
        match input {
            Input::Adapter(a) => {
                adapter::check_against_base(
                    a.config(),
                    a.file().info(),
                    &base_shapes,
                    &show(a.file().path()),
                )?;
            }
            Input::Checkpoint(c) => {
                if std::ptr::eq(c, reference) {
                    continue;
                }
                let dir = show(c.dir());
                if let (Some(rc), Some(ic)) = (ref_cfg, c.config_json()) {
                    for key in ["architectures", "hidden_size"] {
                        if rc.get(key) != ic.get(key) {
                            return Err(MergeError::IncompatibleModel {
                                file: show(&c.dir().join(CONFIG)),
                                reason: format!(
                                    "`{key}` is {} but the base (`{ref_dir}`) has {}",
                                    ic.get(key).map_or("absent".to_string(), |v| v.to_string()),
                                    rc.get(key).map_or("absent".to_string(), |v| v.to_string()),
                                ),
                            });
                        }
                    }
                }
                for name in reference.names() {
                    let (Some(rm), im) = (reference.meta(name), c.meta(name)) else {
                        continue;
                    };
                    let Some(im) = im else {
                        return Err(MergeError::MissingTensor {
                            tensor: name.clone(),
                            file: dir,
                            other: ref_dir,
                        });
                    };
                    if im.shape != rm.shape {
                        return Err(MergeError::ShapeMismatch {
                            tensor: name.clone(),
                            file: dir,
                            shape: im.shape.clone(),
                            other: ref_dir,
                            other_shape: rm.shape.clone(),
                        });
                    }
                    if !float(&im.dtype) {
                        return Err(MergeError::UnsupportedDtype {
                            tensor: name.clone(),
                            file: dir,
                            dtype: im.dtype.clone(),
                        });
                    }
                }
                if let Some(extra) = c.names().iter().find(|n| !reference.contains(n)) {
                    return Err(MergeError::MissingTensor {
                        tensor: extra.clone(),
                        file: ref_dir,
                        other: dir,
                    });
                }
            }
        }
    }
    Ok(())
}

fn module_of(name: &str) -> Option<&str> {
    name.strip_suffix(".weight")
}

/// θᵢ of one input on tensor `name`: read from a checkpoint, or base + ΔW for an adapter.
fn theta(
    input: &Input,
    name: &str,
    base: &dyn Fn() -> Result<Vec<f32>, MergeError>,
) -> Result<Vec<f32>, MergeError> {
    match input {
        Input::Checkpoint(c) => Ok(c.read_f32(name)?),
        Input::Adapter(a) => {
            let mut w = base()?;
            if let Some(d) = module_of(name).map(|m| a.delta(m)).transpose()?.flatten() {
                w.par_iter_mut()
                    .zip(d.par_iter())
                    .for_each(|(x, y)| *x += y);
            }
            Ok(w)
        }
    }
}

/// Buffers kept across tensors: each grows to the largest tensor once instead of being
/// allocated, and zeroed by the kernel, for every tensor.
#[derive(Default)]
struct Buffers {
    /// The merged tensor.
    merged: Vec<f32>,
    base: Vec<f32>,
    deltas: Vec<Vec<f32>>,
}

/// Merges tensor `name` of every input into `buffers.merged`.
fn merge_one_tensor(
    plan: &MergePlan,
    name: &str,
    reference: &Checkpoint,
    inputs: &[(usize, Input)],
    buffers: &mut Buffers,
) -> Result<(), MergeError> {
    let Buffers {
        merged: out,
        base: base_buffer,
        deltas: pool,
    } = buffers;
    if plan.method == Method::Linear {
        let weights: Vec<f64> = inputs.iter().map(|(i, _)| plan.models[*i].weight).collect();
        // Checkpoints that hold the tensor as aligned F32 are merged in place from their maps.
        let mut views = Vec::with_capacity(inputs.len());
        for (_, input) in inputs {
            match input {
                Input::Checkpoint(c) => match c.f32_slice(name)? {
                    Some(v) => views.push(v),
                    None => break,
                },
                Input::Adapter(_) => break,
            }
        }
        if views.len() == inputs.len() {
            linear::merge_into(&views, &weights, plan.normalize, out);
            for (_, input) in inputs {
                if let Input::Checkpoint(c) = input {
                    c.release(name);
                }
            }
            return Ok(());
        }
        *out = merge_linear_read(plan, name, reference, inputs, &weights)?;
        return Ok(());
    }
    let base: &[f32] = match reference.f32_slice(name)? {
        Some(b) => b,
        None => {
            reference.read_f32_into(name, base_buffer)?;
            base_buffer
        }
    };
    let mut tvs = Vec::with_capacity(inputs.len());
    for (i, input) in inputs {
        let m = &plan.models[*i];
        let delta = match input {
            Input::Checkpoint(c) => {
                let mut t = pool.pop().unwrap_or_default();
                match c.f32_slice(name)? {
                    Some(x) => {
                        t.clear();
                        t.par_extend(x.par_iter().zip(base).map(|(x, b)| x - b));
                        c.release(name);
                    }
                    None => {
                        c.read_f32_into(name, &mut t)?;
                        t.par_iter_mut()
                            .zip(base.par_iter())
                            .for_each(|(x, b)| *x -= b);
                    }
                }
                Some(t)
            }
            Input::Adapter(a) => module_of(name).map(|md| a.delta(md)).transpose()?.flatten(),
        };
        tvs.push(TaskVector {
            delta,
            weight: m.weight,
            density: m.density,
            model: *i,
        });
    }
    let (sparsify, elects, combination) = match plan.method {
        Method::Ties => (Some(Sparsify::Magnitude), true, PeftCombination::Ties),
        Method::DareTies => (Some(Sparsify::Bernoulli), true, PeftCombination::DareTies),
        Method::DareLinear => (
            Some(Sparsify::Bernoulli),
            false,
            PeftCombination::DareLinear,
        ),
        _ => (None, false, PeftCombination::Linear),
    };
    if plan.flavour == Flavour::Peft && plan.method != Method::TaskArithmetic {
        let p = PeftParams {
            combination,
            sign: plan.sign_method,
            lambda: plan.lambda,
            seed: plan.seed,
        };
        peft::merge_into(name, Some(base), base.len(), &tvs, &p, out);
    } else {
        let p = MergekitParams {
            sparsify,
            consensus: elects.then_some(plan.sign_method),
            normalize: plan.normalize,
            rescale: plan.rescale,
            lambda: plan.lambda,
            seed: plan.seed,
        };
        mergekit::merge_into(name, base, &tvs, &p, out);
    }
    reference.release(name);
    pool.extend(tvs.into_iter().filter_map(|tv| tv.delta));
    Ok(())
}

/// A linear merge of tensors read (decoded) into memory: adapters, or checkpoints that are
/// not aligned F32.
fn merge_linear_read(
    plan: &MergePlan,
    name: &str,
    reference: &Checkpoint,
    inputs: &[(usize, Input)],
    weights: &[f64],
) -> Result<Vec<f32>, MergeError> {
    let read_base = || -> Result<Vec<f32>, MergeError> { Ok(reference.read_f32(name)?) };
    let mut thetas = Vec::with_capacity(inputs.len());
    let base_cache = std::cell::OnceCell::new();
    let cached = || -> Result<Vec<f32>, MergeError> {
        if let Some(b) = base_cache.get() {
            return Ok(Vec::clone(b));
        }
        let b = read_base()?;
        let _ = base_cache.set(b.clone());
        Ok(b)
    };
    for (_, input) in inputs {
        thetas.push(theta(input, name, &cached)?);
    }
    let refs: Vec<&[f32]> = thetas.iter().map(Vec::as_slice).collect();
    Ok(linear::merge(&refs, weights, plan.normalize))
}

/// The largest rank an adapter config allows, as PEFT counts it.
fn config_rank(cfg: &AdapterConfig) -> usize {
    cfg.rank_pattern
        .values()
        .copied()
        .chain([cfg.r])
        .max()
        .unwrap_or(cfg.r) as usize
}

/// The methods whose output is an adapter: cat, svd, peft_ab.
fn run_adapter_merge(
    plan: &MergePlan,
    recipe: &Recipe,
    out_dir: &Path,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<MergeReport, MergeError> {
    let warnings = plan.warnings.clone();
    let base = plan.base.as_deref().map(Checkpoint::open).transpose()?;
    let mut adapters = Vec::new();
    for m in &plan.models {
        match Input::open(&m.path)? {
            Input::Adapter(a) => adapters.push(*a),
            Input::Checkpoint(_) => {
                return Err(MergeError::recipe(format!(
                    "{} merges LoRA adapters, but `{}` is a full checkpoint (no adapter_config.json)",
                    plan.method.name(),
                    show(&m.path)
                )));
            }
        }
    }
    let Some(first) = adapters.first() else {
        return Err(MergeError::recipe("`models` is empty"));
    };
    if let Some(b) = &base {
        let shapes: BTreeMap<String, Vec<u64>> = b
            .names()
            .iter()
            .filter_map(|n| {
                b.meta(n)
                    .map(|m| (n.clone(), m.shape.iter().map(|d| *d as u64).collect()))
            })
            .collect();
        for a in &adapters {
            adapter::check_against_base(
                a.config(),
                a.file().info(),
                &shapes,
                &show(a.file().path()),
            )?;
        }
    }
    let fifo = first.config().fan_in_fan_out;
    if let Some(a) = adapters.iter().find(|a| a.config().fan_in_fan_out != fifo) {
        return Err(MergeError::IncompatibleModel {
            file: show(&a.dir().join(ADAPTER_CONFIG)),
            reason: format!(
                "fan_in_fan_out is {} but the first adapter's is {fifo}",
                !fifo
            ),
        });
    }
    let modules: BTreeSet<String> = adapters
        .iter()
        .flat_map(|a| a.modules().map(str::to_string))
        .collect();
    let ranks: Vec<usize> = adapters.iter().map(|a| config_rank(a.config())).collect();
    let rank = match plan.method {
        Method::Cat => ranks.iter().sum(),
        Method::Svd => plan
            .rank
            .unwrap_or_else(|| ranks.iter().copied().max().unwrap_or(1)),
        _ => {
            let r0 = ranks.first().copied().unwrap_or(0);
            if let Some((i, r)) = ranks.iter().enumerate().find(|(_, r)| **r != r0) {
                return Err(MergeError::IncompatibleModel {
                    file: show(&adapters[i].dir().join(ADAPTER_CONFIG)),
                    reason: format!(
                        "rank {r} differs from the first adapter's {r0}; peft_ab (PEFT's \
                         add_weighted_adapter) needs equal ranks: use svd or cat"
                    ),
                });
            }
            r0
        }
    };
    let staging = Staging::new(out_dir)?;
    let mut outputs: Vec<(String, LoraPair)> = Vec::new();
    let mut bytes_done = 0u64;
    let dtype = plan
        .dtype
        .or_else(|| first.dtype())
        .unwrap_or(OutDtype::Float32);
    for (t, module) in modules.iter().enumerate() {
        check_cancel(cancel)?;
        let mut inputs = Vec::new();
        let mut dims: Option<(usize, usize, String)> = None;
        for (i, a) in adapters.iter().enumerate() {
            let pair = a.read(module)?;
            if let Some(p) = &pair {
                match &dims {
                    None => dims = Some((p.out, p.inp, show(a.dir()))),
                    Some((out, inp, other)) if (*out, *inp) != (p.out, p.inp) => {
                        let (tensor, shape, other_shape) = if *inp != p.inp {
                            (a_key(module), vec![p.r, p.inp], vec![p.r, *inp])
                        } else {
                            (b_key(module), vec![p.out, p.r], vec![*out, p.r])
                        };
                        return Err(MergeError::ShapeMismatch {
                            tensor,
                            file: show(a.dir()),
                            shape,
                            other: other.clone(),
                            other_shape,
                        });
                    }
                    Some(_) => {}
                }
                if plan.method == Method::PeftAb && p.r != rank {
                    return Err(MergeError::ShapeMismatch {
                        tensor: a_key(module),
                        file: show(a.dir()),
                        shape: vec![p.r, p.inp],
                        other: show(first.dir()),
                        other_shape: vec![rank, p.inp],
                    });
                }
            }
            inputs.push(ModuleInput {
                pair,
                weight: plan.models[i].weight,
                scale: a.scale(module),
                density: plan.models[i].density,
                model: i,
            });
        }
        let pair = match plan.method {
            Method::Cat => lora_out::cat(&inputs, rank),
            Method::Svd => lora_out::svd(&inputs, rank),
            _ => lora_out::peft_ab(
                module,
                &inputs,
                plan.combination.unwrap_or(PeftCombination::Ties),
                plan.sign_method,
                plan.seed,
            ),
        };
        bytes_done += ((pair.a.len() + pair.b.len()) * dtype.size()) as u64;
        outputs.push((module.clone(), pair));
        progress(Progress {
            tensors_done: t + 1,
            tensors_total: modules.len(),
            bytes_done,
            bytes_total: 0,
            tensor: module.clone(),
        });
    }
    let mut config = first.config().clone();
    config.r = rank as u64;
    config.lora_alpha = rank as f64;
    config.use_rslora = false;
    config.rank_pattern.clear();
    config.alpha_pattern.clear();
    config.target_modules = merged_targets(&adapters);
    lora::write_adapter_into(staging.path(), &config, &outputs, dtype)?;
    check_cancel(cancel)?;
    let mut hashed = Vec::new();
    if let Some(b) = &base {
        hashed.push(InputFiles {
            role: "base".to_string(),
            path: b.dir().to_path_buf(),
            kind: "checkpoint".to_string(),
            weight_density: None,
            files: checkpoint_files(b),
        });
    }
    for (a, m) in adapters.iter().zip(&plan.models) {
        hashed.push(InputFiles {
            role: "model".to_string(),
            path: m.path.clone(),
            kind: "adapter".to_string(),
            weight_density: Some((m.weight, m.density)),
            files: vec![a.dir().join(ADAPTER_CONFIG), a.file().path().to_path_buf()],
        });
    }
    let output_dtype = dtype.torch_name().to_string();
    let record = finish_record(
        plan,
        recipe,
        "adapter",
        &output_dtype,
        hashed,
        &warnings,
        staging.path(),
    )?;
    let out = staging.commit()?;
    Ok(MergeReport {
        out_dir: out,
        method: plan.method,
        flavour: plan.flavour,
        output_kind: "adapter".to_string(),
        tensors: outputs.len() * 2,
        bytes: bytes_done,
        output_dtype,
        warnings,
        record,
    })
}

/// The union of the inputs' target modules (lists), or their patterns joined as `(p1)|(p2)` the
/// way PEFT joins them.
fn merged_targets(adapters: &[LoraAdapter]) -> TargetModules {
    let mut list = BTreeSet::new();
    let mut patterns = Vec::new();
    for a in adapters {
        match &a.config().target_modules {
            TargetModules::List(l) => list.extend(l.iter().cloned()),
            TargetModules::Pattern(p) => patterns.push(format!("({p})")),
        }
    }
    if patterns.is_empty() {
        TargetModules::List(list.into_iter().collect())
    } else {
        patterns.extend(list.into_iter().map(|m| format!("(.*\\.{m})")));
        TargetModules::Pattern(patterns.join("|"))
    }
}
