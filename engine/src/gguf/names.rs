//! GGUF (llama.cpp) tensor names → Hugging Face names, and the Q/K row permutation llama.cpp
//! applies for its interleaved RoPE.

use candle_core::{Result, Tensor};

/// Which rows permutation a tensor carries in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permuted {
    No,
    /// Query rows, permuted per attention head.
    Query,
    /// Key rows, permuted per key-value head.
    Key,
}

/// The Hugging Face name of a GGUF Llama tensor, or `None` for a tensor clreg does not import
/// (`rope_freqs.weight` …).
pub fn hf_name(gguf: &str) -> Option<(String, Permuted)> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = direct {
        return Some((name.to_string(), Permuted::No));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, permuted) = match rest {
        "attn_q.weight" => ("self_attn.q_proj.weight", Permuted::Query),
        "attn_k.weight" => ("self_attn.k_proj.weight", Permuted::Key),
        "attn_v.weight" => ("self_attn.v_proj.weight", Permuted::No),
        "attn_output.weight" => ("self_attn.o_proj.weight", Permuted::No),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", Permuted::No),
        "ffn_up.weight" => ("mlp.up_proj.weight", Permuted::No),
        "ffn_down.weight" => ("mlp.down_proj.weight", Permuted::No),
        "attn_norm.weight" => ("input_layernorm.weight", Permuted::No),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", Permuted::No),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{module}"), permuted))
}

/// Undoes llama.cpp's permutation of Q/K rows (`convert_hf_to_gguf.py: permute`), which
/// reorders each head's rows from the half-split layout (`i` pairs with `i + d/2`) to the
/// interleaved one (`2i` pairs with `2i + 1`). `w` is `[heads · head_dim, in]`.
pub fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads.max(1) / 2;
    w.reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// llama.cpp's permutation itself (the inverse of [`unpermute_qk`]).
pub fn permute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads.max(1) / 2;
    w.reshape((heads, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}
