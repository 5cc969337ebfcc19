//! A Llama-family causal language model (RMSNorm, half-split RoPE, grouped-query attention,
//! SwiGLU MLP) whose seven linear modules per layer can carry LoRA adapters.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::lora::LoraLinear;
use super::moe::{FeedForward, SparseMoe};
use super::ops::{self, OpsMode};
use crate::config::LlamaConfig;

/// The names of the adaptable linear modules of one layer, as in checkpoints.
pub const LINEAR_MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Keys and values seen so far, per layer, for incremental decoding.
#[derive(Debug, Clone)]
pub struct Cache {
    kvs: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    pub fn new(layers: usize) -> Self {
        Self {
            kvs: vec![None; layers],
        }
    }

    /// The number of positions cached (0 when empty).
    pub fn len(&self) -> usize {
        self.kvs
            .first()
            .and_then(|kv| kv.as_ref())
            .and_then(|(k, _)| k.dims().get(2).copied())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.kvs.iter_mut().for_each(|kv| *kv = None);
    }
}

fn linear(vb: &VarBuilder<'_>, out: usize, inp: usize) -> Result<LoraLinear> {
    Ok(LoraLinear::new(vb.get((out, inp), "weight")?))
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, mode: OpsMode) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps, mode)
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub o_proj: LoraLinear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.kv_heads());
        Ok(Self {
            q_proj: linear(&vb.pp("q_proj"), heads * hd, h)?,
            k_proj: linear(&vb.pp("k_proj"), kv_heads * hd, h)?,
            v_proj: linear(&vb.pp("v_proj"), kv_heads * hd, h)?,
            o_proj: linear(&vb.pp("o_proj"), h, heads * hd)?,
            heads,
            kv_heads,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        offset: usize,
        rope: (&Tensor, &Tensor),
        kv: Option<&mut Option<(Tensor, Tensor)>>,
        mask: Option<&Tensor>,
        mode: OpsMode,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((b, seq, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(x)?, self.heads)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let cos = rope.0.narrow(0, offset, seq)?.to_dtype(q.dtype())?;
        let sin = rope.1.narrow(0, offset, seq)?.to_dtype(q.dtype())?;
        let q = ops::rope(&q, &cos, &sin, mode)?;
        let mut k = ops::rope(&k, &cos, &sin, mode)?;
        let mut v = v;
        if let Some(slot) = kv {
            if let Some((ck, cv)) = slot.as_ref() {
                k = Tensor::cat(&[ck, &k], 2)?;
                v = Tensor::cat(&[cv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let n_rep = self.heads / self.kv_heads.max(1);
        let k = ops::repeat_kv(k, n_rep)?;
        let v = ops::repeat_kv(v, n_rep)?;

        let dtype = q.dtype();
        let q = q.to_dtype(DType::F32)?;
        let k = k.to_dtype(DType::F32)?;
        let v = v.to_dtype(DType::F32)?;
        let att = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let att = if let Some(mask) = mask {
            att.broadcast_add(mask)?
        } else if seq > 1 {
            let kv_len = k.dim(2)?;
            let mask = ops::causal_mask(seq, kv_len - seq, x.device())?;
            att.broadcast_add(&mask)?
        } else {
            att
        };
        let att = ops::softmax_last_dim(&att, mode)?;
        let y = att.matmul(&v.contiguous()?)?.to_dtype(dtype)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, seq, self.heads * self.head_dim))?;
        self.o_proj.forward(&y)
    }
}

/// The SwiGLU MLP: down(silu(gate(x)) · up(x)).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
}

impl Mlp {
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear(&vb.pp("gate_proj"), i, h)?,
            up_proj: linear(&vb.pp("up_proj"), i, h)?,
            down_proj: linear(&vb.pp("down_proj"), h, i)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // One fused pass each way on the CPU instead of candle's ~16 (see fused::swiglu).
        let h = super::fused::swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct Block {
    input_layernorm: RmsNorm,
    pub self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    /// A dense MLP, or Mixtral's sparse MoE (`block_sparse_moe`) when the config has experts.
    pub mlp: FeedForward,
}

impl Block {
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            mlp: match cfg.num_local_experts() {
                None => FeedForward::Dense(Box::new(Mlp::new(cfg, vb.pp("mlp"))?)),
                Some(_) => FeedForward::Moe(SparseMoe::new(cfg, vb.pp("block_sparse_moe"))?),
            },
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        offset: usize,
        rope: (&Tensor, &Tensor),
        kv: Option<&mut Option<(Tensor, Tensor)>>,
        mask: Option<&Tensor>,
        mode: OpsMode,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x, mode)?;
        let x = (self.self_attn.forward(&h, offset, rope, kv, mask, mode)? + x)?;
        let h = self.post_attention_layernorm.forward(&x, mode)?;
        self.mlp.forward(&h, mode)? + x
    }

    /// The adaptable linear module called `name` (one of [`LINEAR_MODULES`]).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut LoraLinear> {
        Some(match name {
            "self_attn.q_proj" => &mut self.self_attn.q_proj,
            "self_attn.k_proj" => &mut self.self_attn.k_proj,
            "self_attn.v_proj" => &mut self.self_attn.v_proj,
            "self_attn.o_proj" => &mut self.self_attn.o_proj,
            "mlp.gate_proj" | "mlp.up_proj" | "mlp.down_proj" => {
                let FeedForward::Dense(mlp) = &mut self.mlp else {
                    return None;
                };
                match name {
                    "mlp.gate_proj" => &mut mlp.gate_proj,
                    "mlp.up_proj" => &mut mlp.up_proj,
                    _ => &mut mlp.down_proj,
                }
            }
            _ => return None,
        })
    }

    /// The adaptable linear module called `name` (one of [`LINEAR_MODULES`]).
    pub fn linear(&self, name: &str) -> Option<&LoraLinear> {
        Some(match name {
            "self_attn.q_proj" => &self.self_attn.q_proj,
            "self_attn.k_proj" => &self.self_attn.k_proj,
            "self_attn.v_proj" => &self.self_attn.v_proj,
            "self_attn.o_proj" => &self.self_attn.o_proj,
            "mlp.gate_proj" | "mlp.up_proj" | "mlp.down_proj" => {
                let FeedForward::Dense(mlp) = &self.mlp else {
                    return None;
                };
                match name {
                    "mlp.gate_proj" => &mlp.gate_proj,
                    "mlp.up_proj" => &mlp.up_proj,
                    _ => &mlp.down_proj,
                }
            }
            _ => return None,
        })
    }
}

/// A Llama-family causal LM.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor,
    pub layers: Vec<Block>,
    norm: RmsNorm,
    /// `[vocab, hidden]`; the embedding matrix itself when the embeddings are tied.
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
    cfg: LlamaConfig,
    mode: OpsMode,
}

impl Llama {
    /// Builds the model from `vb`, whose paths are checkpoint names (`model.layers.0.…`).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = vb.pp("model.embed_tokens").get((vocab, h), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::new(cfg, vb.pp(format!("model.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(h, cfg.rms_norm_eps, vb.pp("model.norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp("lm_head").get((vocab, h), "weight")?
        };
        let (cos, sin) = ops::rope_tables(
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.max_position_embeddings.max(1),
            vb.device(),
        )?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            cfg: cfg.clone(),
            mode: OpsMode::Differentiable,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The ops [`Self::forward`] uses (differentiable unless set otherwise).
    pub fn ops_mode(&self) -> OpsMode {
        self.mode
    }

    pub fn set_ops_mode(&mut self, mode: OpsMode) {
        self.mode = mode;
    }

    /// A fresh, empty KV cache for this model.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.layers.len())
    }

    /// Logits `[batch, seq, vocab]` for every position of `ids` (`[batch, seq]`, u32), which
    /// start at position `offset`. With a cache, keys and values of earlier calls are attended
    /// to and this call's are appended; `offset` must then equal the cached length.
    pub fn forward(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut Cache>,
    ) -> std::result::Result<Tensor, super::ModelError> {
        self.forward_with(ids, offset, cache, self.mode)
    }

    /// [`Self::forward`] with an explicit choice of ops.
    pub fn forward_with(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut Cache>,
        mode: OpsMode,
    ) -> std::result::Result<Tensor, super::ModelError> {
        self.check_input(ids, offset, cache.as_deref())?;
        Ok(self.run(ids, offset, cache, None, mode)?)
    }

    /// Like `forward_with`, for a batch whose row i starts with `left_pad[i]` padding tokens:
    /// padded key positions are masked for every query. Positions are not shifted (RoPE depends
    /// only on relative positions), so a row's logits equal those of the same row unpadded.
    ///
    /// `left_pad` counts padding from position 0, so it stays the same for every later call with
    /// the same cache. The mask adds −1e9 rather than −∞, so a query that sees only padding (a
    /// padded position itself) attends uniformly and stays finite instead of turning into NaN.
    pub fn forward_padded(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&mut Cache>,
        left_pad: &[usize],
        mode: OpsMode,
    ) -> std::result::Result<Tensor, super::ModelError> {
        self.check_input(ids, offset, cache.as_deref())?;
        let (b, seq) = ids.dims2()?;
        let kv_len = offset + seq;
        if left_pad.len() != b {
            return Err(super::ModelError::InvalidOption(format!(
                "left_pad has {} entries for a batch of {b} rows",
                left_pad.len()
            )));
        }
        if let Some(p) = left_pad.iter().find(|p| **p > kv_len) {
            return Err(super::ModelError::InvalidOption(format!(
                "left padding of {p} is longer than the {kv_len} positions seen"
            )));
        }
        let values: Vec<f32> = left_pad
            .iter()
            .flat_map(|&pad| {
                (0..seq).flat_map(move |i| {
                    (0..kv_len).map(move |j| if j < pad || j > offset + i { -1e9 } else { 0.0 })
                })
            })
            .collect();
        let mask = Tensor::from_vec(values, (b, 1, seq, kv_len), ids.device())?;
        Ok(self.run(ids, offset, cache, Some(&mask), mode)?)
    }

    /// The checks shared by the forward passes: tokens present, positions in range, cache length.
    fn check_input(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: Option<&Cache>,
    ) -> std::result::Result<(), super::ModelError> {
        let (_, seq) = ids.dims2()?;
        if seq == 0 {
            return Err(super::ModelError::InvalidOption(
                "the input has no tokens".to_string(),
            ));
        }
        if offset + seq > self.cfg.max_position_embeddings {
            return Err(super::ModelError::InvalidOption(format!(
                "positions up to {} exceed max_position_embeddings {}",
                offset + seq,
                self.cfg.max_position_embeddings
            )));
        }
        if let Some(c) = cache
            && c.len() != offset
        {
            return Err(super::ModelError::InvalidOption(format!(
                "offset {offset} differs from the {} positions in the cache",
                c.len()
            )));
        }
        Ok(())
    }

    fn run(
        &self,
        ids: &Tensor,
        offset: usize,
        mut cache: Option<&mut Cache>,
        mask: Option<&Tensor>,
        mode: OpsMode,
    ) -> Result<Tensor> {
        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?;
        let (b, seq) = ids.dims2()?;
        x = x.reshape((b, seq, self.cfg.hidden_size))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().and_then(|c| c.kvs.get_mut(i));
            x = layer.forward(&x, offset, (&self.cos, &self.sin), kv, mask, mode)?;
        }
        let x = self.norm.forward(&x, mode)?;
        // A frozen output layer gets no gradient of its own (~29 GFLOP saved per 4×128 batch).
        super::fused::linear(&x, &self.lm_head)?.to_dtype(DType::F32)
    }

    /// The final normalised hidden states `[batch, seq, hidden]` of `ids` from position 0, before
    /// the output layer: training applies [`Self::lm_head`] only to the positions its loss
    /// counts, which saves most of the largest matmul of a step.
    pub fn hidden_states(&self, ids: &Tensor, mode: OpsMode) -> Result<Tensor> {
        let (b, seq) = ids.dims2()?;
        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?;
        x = x.reshape((b, seq, self.cfg.hidden_size))?;
        for layer in &self.layers {
            x = layer.forward(&x, 0, (&self.cos, &self.sin), None, None, mode)?;
        }
        self.norm.forward(&x, mode)
    }

    /// The output layer's weight `[vocab, hidden]` (the embedding matrix when tied).
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// The hidden state entering each layer (`[batch, seq, hidden]`, f32) for `ids` from
    /// position 0: transformers' `hidden_states[l]` for `l < num_hidden_layers`.
    pub fn layer_inputs(&self, ids: &Tensor) -> Result<Vec<Tensor>> {
        let (b, seq) = ids.dims2()?;
        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?;
        x = x.reshape((b, seq, self.cfg.hidden_size))?;
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            out.push(x.to_dtype(DType::F32)?);
            x = layer.forward(&x, 0, (&self.cos, &self.sin), None, None, self.mode)?;
        }
        Ok(out)
    }

    /// The logits of the last position only, `[batch, vocab]`.
    pub fn last_logits(logits: &Tensor) -> Result<Tensor> {
        let seq = logits.dim(1)?;
        if seq == 0 {
            candle_core::bail!("logits for an empty sequence have no last position");
        }
        logits.i((.., seq - 1, ..))?.contiguous()
    }

    /// The linear module with the full checkpoint name `module`
    /// (`model.layers.{i}.self_attn.q_proj` …).
    pub fn linear_mut(&mut self, module: &str) -> Option<&mut LoraLinear> {
        let (layer, name) = split_module(module)?;
        self.layers.get_mut(layer)?.linear_mut(name)
    }

    /// The linear module with the full checkpoint name `module`.
    pub fn linear(&self, module: &str) -> Option<&LoraLinear> {
        let (layer, name) = split_module(module)?;
        self.layers.get(layer)?.linear(name)
    }

    /// The full names of every adaptable linear module, layer by layer.
    pub fn linear_modules(&self) -> Vec<String> {
        (0..self.layers.len())
            .flat_map(|i| {
                LINEAR_MODULES
                    .iter()
                    .map(move |m| format!("model.layers.{i}.{m}"))
            })
            .collect()
    }

    /// Removes every adapter from every module.
    pub fn clear_adapters(&mut self) {
        for layer in &mut self.layers {
            for m in LINEAR_MODULES {
                if let Some(l) = layer.linear_mut(m) {
                    l.adapters.clear();
                }
            }
        }
    }

    /// The end-of-sequence token ids of the config (`eos_token_id`, a number or a list).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.cfg.eos_token_ids()
    }
}

/// `model.layers.3.self_attn.q_proj` → (3, `self_attn.q_proj`).
fn split_module(module: &str) -> Option<(usize, &str)> {
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, name) = rest.split_once('.')?;
    Some((layer.parse().ok()?, name))
}
