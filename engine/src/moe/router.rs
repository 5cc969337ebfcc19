//! Router initialisation without training, as mergekit-moe does it: from the base model's hidden
//! states on each expert's prompts (`hidden`, `hidden_avg`), from token embeddings
//! (`cheap_embed`), seeded normals (`random`) or zeros (`uniform`); plus the condition-number
//! check that flags near-degenerate routers.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::formats::Checkpoint;
use crate::merge::svd::jacobi_svd;
use crate::model::{self, Llama};
use crate::moe::error::MoeError;
use crate::moe::recipe::{GateMode, PlanExpert};
use crate::tiny::SplitMix64;

/// The condition number above which a router counts as near-degenerate (mergekit's threshold).
pub const DEGENERATE_CONDITION: f64 = 5.0;

/// The standard deviation of `random` routers.
pub const RANDOM_STD: f64 = 0.02;

/// Routers for every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Routers {
    /// Per layer, row-major `[experts, width]`.
    pub layers: Vec<Vec<f32>>,
    pub experts: usize,
    pub width: usize,
}

/// What the initialisation found out about the routers, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterCheck {
    /// σ_max / σ_min of each layer's router (`None` for `uniform`, where it is undefined).
    pub condition_numbers: Vec<Option<f64>>,
    /// Layers whose condition number exceeds [`DEGENERATE_CONDITION`].
    pub degenerate_layers: Vec<usize>,
}

/// The sha256 of a prompt list (its JSON array), lowercase hex.
pub fn prompts_digest(prompts: &[String]) -> String {
    let text = serde_json::to_string(prompts).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The 2-norm condition number σ_max / σ_min of the `[n, width]` row-major matrix `rows`
/// (n ≤ width): the square root of the extreme eigenvalues of the Gram matrix R·Rᵀ.
/// Infinite when the rows are linearly dependent.
pub fn condition_number(rows: &[f32], n: usize, width: usize) -> f64 {
    let mut gram = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            gram[i * n + j] = (0..width)
                .map(|c| f64::from(rows[i * width + c]) * f64::from(rows[j * width + c]))
                .sum();
        }
    }
    let (_, s, _) = jacobi_svd(&gram, n);
    let max = s.iter().copied().fold(0f64, f64::max);
    let min = s.iter().copied().fold(f64::INFINITY, f64::min);
    if max <= 0.0 {
        return f64::INFINITY;
    }
    let ratio = min / max;
    if ratio <= 1e-24 {
        f64::INFINITY
    } else {
        (1.0 / ratio).sqrt()
    }
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Token ids of `prompt` as mergekit feeds them: the tokenizer's ids without special tokens,
/// after the config's `bos_token_id` when it has one.
pub fn prompt_ids(
    tokenizer: &tokenizers::Tokenizer,
    bos: Option<u32>,
    prompt: &str,
) -> Result<Vec<u32>, MoeError> {
    let enc = tokenizer
        .encode(prompt, false)
        .map_err(|e| MoeError::input("tokenizer.json", format!("cannot encode a prompt: {e}")))?;
    let ids: Vec<u32> = bos
        .into_iter()
        .chain(enc.get_ids().iter().copied())
        .collect();
    if ids.is_empty() {
        return Err(MoeError::recipe(format!(
            "prompt `{prompt}` has no tokens; give non-empty prompts"
        )));
    }
    Ok(ids)
}

/// The config's `bos_token_id`, when it is a single number.
pub fn bos_id(cfg: &crate::config::LlamaConfig) -> Option<u32> {
    cfg.extra
        .get("bos_token_id")
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as u32)
}

/// Per layer, the mean over `prompts` of the hidden state entering the layer at the last token
/// (`average == false`) or averaged over the tokens; `[layers][hidden]`.
pub fn mean_hidden_states(
    model: &Llama,
    tokenizer: &tokenizers::Tokenizer,
    prompts: &[String],
    average: bool,
) -> Result<Vec<Vec<f64>>, MoeError> {
    let (layers, h) = (model.layers.len(), model.config().hidden_size);
    let mut sum = vec![vec![0f64; h]; layers];
    let bos = bos_id(model.config());
    for p in prompts {
        let ids = prompt_ids(tokenizer, bos, p)?;
        let input = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
        let states = model.layer_inputs(&input)?;
        for (l, s) in states.iter().enumerate() {
            let s = s.squeeze(0)?;
            let v = if average {
                s.mean(0)?
            } else {
                s.get(ids.len() - 1)?
            };
            for (acc, x) in sum[l].iter_mut().zip(v.to_vec1::<f32>()?) {
                *acc += f64::from(x);
            }
        }
    }
    let n = prompts.len().max(1) as f64;
    sum.iter_mut().flatten().for_each(|x| *x /= n);
    Ok(sum)
}

/// The normalised sum of the token embeddings of `prompts` (one vector for every layer).
fn cheap_embedding(
    embed: &[f32],
    hidden: usize,
    tokenizer: &tokenizers::Tokenizer,
    bos: Option<u32>,
    prompts: &[String],
) -> Result<Vec<f64>, MoeError> {
    let mut v = vec![0f64; hidden];
    for p in prompts {
        for id in prompt_ids(tokenizer, bos, p)? {
            let row = embed
                .get(id as usize * hidden..(id as usize + 1) * hidden)
                .ok_or_else(|| {
                    MoeError::input(
                        "tokenizer.json",
                        format!("token id {id} is outside the embedding matrix"),
                    )
                })?;
            v.iter_mut().zip(row).for_each(|(a, x)| *a += f64::from(*x));
        }
    }
    normalise(&mut v);
    Ok(v)
}

/// Initialises the routers of a `layers`-layer mixture of `experts` (their prompts read) on the
/// base checkpoint `base_dir`, `width` wide (the hidden size).
pub fn init_routers(
    mode: GateMode,
    base_dir: &Path,
    experts: &[PlanExpert],
    layers: usize,
    width: usize,
    seed: u64,
) -> Result<Routers, MoeError> {
    let n = experts.len();
    let mut out = vec![vec![0f32; n * width]; layers];
    match mode {
        GateMode::Uniform => {}
        GateMode::Random => {
            for (l, layer) in out.iter_mut().enumerate() {
                let mut rng =
                    SplitMix64::new(seed ^ (l as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                layer
                    .iter_mut()
                    .for_each(|x| *x = (rng.next_normal() * RANDOM_STD) as f32);
            }
        }
        GateMode::CheapEmbed | GateMode::Hidden | GateMode::HiddenAvg => {
            let tok_path = base_dir.join("tokenizer.json");
            if !tok_path.is_file() {
                return Err(MoeError::input(
                    base_dir.display(),
                    format!(
                        "gate_mode {} tokenizes the prompts with the base's tokenizer.json, \
                         which is missing",
                        mode.name()
                    ),
                ));
            }
            let tokenizer = model::load_tokenizer(&tok_path)?;
            let per_expert: Vec<Vec<Vec<f64>>> = if mode == GateMode::CheapEmbed {
                let ckpt = Checkpoint::open(base_dir)?;
                let cfg = model::read_config(base_dir)?;
                let embed = ckpt.read_f32("model.embed_tokens.weight")?;
                let bos = bos_id(&cfg);
                experts
                    .iter()
                    .map(|e| {
                        let mut v = cheap_embedding(&embed, width, &tokenizer, bos, &e.positive)?;
                        if !e.negative.is_empty() {
                            let neg = cheap_embedding(&embed, width, &tokenizer, bos, &e.negative)?;
                            v.iter_mut().zip(neg).for_each(|(a, b)| *a -= b);
                        }
                        normalise(&mut v);
                        Ok(vec![v; layers])
                    })
                    .collect::<Result<_, MoeError>>()?
            } else {
                let (mut base, _) = model::load(base_dir, &Device::Cpu, DType::F32)?;
                base.set_ops_mode(model::OpsMode::Fast);
                let average = mode == GateMode::HiddenAvg;
                experts
                    .iter()
                    .map(|e| {
                        let mut v = mean_hidden_states(&base, &tokenizer, &e.positive, average)?;
                        if !e.negative.is_empty() {
                            let neg = mean_hidden_states(&base, &tokenizer, &e.negative, average)?;
                            for (a, b) in v.iter_mut().zip(neg) {
                                a.iter_mut().zip(b).for_each(|(x, y)| *x -= y);
                            }
                        }
                        v.iter_mut().for_each(|l| normalise(l));
                        Ok(v)
                    })
                    .collect::<Result<_, MoeError>>()?
            };
            for (l, layer) in out.iter_mut().enumerate() {
                for (e, rows) in per_expert.iter().enumerate() {
                    for (c, x) in rows[l].iter().enumerate() {
                        layer[e * width + c] = *x as f32;
                    }
                }
            }
        }
    }
    Ok(Routers {
        layers: out,
        experts: n,
        width,
    })
}

/// Condition numbers of every layer's router and the layers above [`DEGENERATE_CONDITION`].
pub fn check_routers(routers: &Routers, mode: GateMode) -> RouterCheck {
    if mode == GateMode::Uniform {
        return RouterCheck {
            condition_numbers: vec![None; routers.layers.len()],
            degenerate_layers: Vec::new(),
        };
    }
    let conds: Vec<f64> = routers
        .layers
        .iter()
        .map(|l| condition_number(l, routers.experts, routers.width))
        .collect();
    RouterCheck {
        degenerate_layers: conds
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > DEGENERATE_CONDITION)
            .map(|(i, _)| i)
            .collect(),
        condition_numbers: conds
            .into_iter()
            .map(|c| c.is_finite().then_some(c))
            .collect(),
    }
}
