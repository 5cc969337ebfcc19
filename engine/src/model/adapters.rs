//! Putting LoRA adapters onto a loaded model: PEFT adapter directories, single adapters, and
//! fresh trainable ones.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use super::lora::LoraAdapter;
use super::{Llama, ModelError};

const PREFIX: &str = "base_model.model.";

impl Llama {
    /// Adds `adapter` on top of the adapters of `module` (full name, `model.layers.0.…`).
    pub fn add_adapter(&mut self, module: &str, adapter: LoraAdapter) -> Result<(), ModelError> {
        let (dtype, device) = (self.dtype(), self.device().clone());
        let Some(linear) = self.linear_mut(module) else {
            return Err(ModelError::InvalidOption(format!(
                "`{module}` is not an adaptable linear module of this model"
            )));
        };
        let (out, inp) = linear.shape();
        let (a, b) = (adapter.a.dims(), adapter.b.dims());
        let r = adapter.rank();
        if a != [r, inp] || b != [out, r] {
            return Err(ModelError::InvalidOption(format!(
                "adapter for `{module}` has A {a:?} and B {b:?}; the module needs [r, {inp}] and \
                 [{out}, r]"
            )));
        }
        let adapter = if adapter.vars().is_none()
            && (adapter.a.dtype() != dtype || !adapter.a.device().same_device(&device))
        {
            LoraAdapter::new(
                adapter.a.to_dtype(dtype)?.to_device(&device)?,
                adapter.b.to_dtype(dtype)?.to_device(&device)?,
                adapter.scale,
            )
        } else {
            adapter
        };
        linear.adapters.push(adapter);
        Ok(())
    }

    /// Loads a PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
    /// and stacks it on the modules it adapts. Either every module gets its adapter or, on an
    /// error, none does. Returns the number of adapted modules.
    pub fn add_adapter_dir(&mut self, dir: &Path) -> Result<usize, ModelError> {
        let cfg_path = dir.join("adapter_config.json");
        let bytes = std::fs::read(&cfg_path).map_err(|e| ModelError::io(cfg_path.display(), e))?;
        let cfg = crate::adapter::parse(&bytes, &cfg_path.display().to_string())?;
        let st_path = dir.join("adapter_model.safetensors");
        let file = st_path.display().to_string();
        let tensors = candle_core::safetensors::load(&st_path, &candle_core::Device::Cpu)
            .map_err(|e| ModelError::adapter(&file, format!("cannot read tensors: {e}")))?;

        let mut modules: BTreeMap<String, [Option<Tensor>; 2]> = BTreeMap::new();
        for (name, t) in tensors {
            let (module, slot) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| {
                    rest.strip_suffix(".lora_A.weight")
                        .map(|m| (m, 0))
                        .or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, 1)))
                })
                .ok_or_else(|| {
                    ModelError::adapter(
                        &file,
                        format!(
                            "tensor `{name}` is not a LoRA weight \
                             (`{PREFIX}<module>.lora_A.weight` / `.lora_B.weight`)"
                        ),
                    )
                })?;
            modules.entry(module.to_string()).or_default()[slot] = Some(t);
        }
        if modules.is_empty() {
            return Err(ModelError::adapter(
                &file,
                "the adapter holds no LoRA tensors",
            ));
        }
        let mut ready = Vec::with_capacity(modules.len());
        for (module, [a, b]) in modules {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(ModelError::adapter(
                    &file,
                    format!("module `{module}` lacks its lora_A or lora_B tensor"),
                ));
            };
            let Some(linear) = self.linear(&module) else {
                return Err(ModelError::adapter(
                    &file,
                    format!(
                        "tensor `{PREFIX}{module}.lora_A.weight` adapts `{module}`, which is not a \
                         linear module of this model (q/k/v/o_proj, gate/up/down_proj)"
                    ),
                ));
            };
            let (out, inp) = linear.shape();
            let (mut a, mut b) = (a, b);
            // A fan_in_fan_out adapter trained on transposed (Conv1D) weights may store its
            // factors transposed; bring them to the [r, in] / [out, r] layout.
            if cfg.fan_in_fan_out && a.dims().get(1) != Some(&inp) && a.dims().first() == Some(&inp)
            {
                (a, b) = (a.t()?.contiguous()?, b.t()?.contiguous()?);
            }
            let r = a.dims().first().copied().unwrap_or(0);
            if a.dims() != [r, inp] || b.dims() != [out, r] || r == 0 {
                return Err(ModelError::adapter(
                    &file,
                    format!(
                        "module `{module}`: lora_A {:?} and lora_B {:?} do not fit the base weight \
                         [{out}, {inp}] (need [r, {inp}] and [{out}, r])",
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let scale = cfg.scale_for(&module);
            ready.push((module, LoraAdapter::new(a, b, scale)));
        }
        let count = ready.len();
        for (module, adapter) in ready {
            self.add_adapter(&module, adapter)?;
        }
        Ok(count)
    }

    /// Stacks a fresh trainable adapter (A Kaiming-uniform from `seed`, B zero) of rank `r` and
    /// scale `scale` on every linear module whose name ends with one of `targets`
    /// (`q_proj`, `mlp.down_proj`, …). Returns the modules and their variables `(A, B)`.
    pub fn add_trainable_adapters(
        &mut self,
        targets: &[&str],
        r: usize,
        scale: f64,
        seed: u64,
    ) -> Result<Vec<(String, Var, Var)>, ModelError> {
        if r == 0 {
            return Err(ModelError::InvalidOption(
                "the LoRA rank must be positive".into(),
            ));
        }
        let (dtype, device) = (self.dtype(), self.device().clone());
        let mut out = Vec::new();
        for (i, module) in self.linear_modules().into_iter().enumerate() {
            if !targets
                .iter()
                .any(|t| module == *t || module.ends_with(&format!(".{t}")))
            {
                continue;
            }
            let Some(linear) = self.linear_mut(&module) else {
                continue;
            };
            let (o, inp) = linear.shape();
            let module_seed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let adapter =
                LoraAdapter::init_trainable(inp, o, r, scale, module_seed, dtype, &device)?;
            if let Some((a, b)) = adapter.vars() {
                out.push((module.clone(), a.clone(), b.clone()));
            }
            linear.adapters.push(adapter);
        }
        if out.is_empty() {
            return Err(ModelError::InvalidOption(format!(
                "targets {targets:?} match no linear module of the model"
            )));
        }
        Ok(out)
    }
}
