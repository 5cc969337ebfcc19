//! Format checks end to end: every refusal gets the right error and names the file and tensor;
//! tiny models and adapters written by `tiny` pass.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use clreg_engine::adapter;
use clreg_engine::error::FormatError;
use clreg_engine::inspect::{self, DirAccess, FileAccess, Kind, inspect_artifact};
use clreg_engine::safetensors_header::{inspect_bytes, parse_header};
use clreg_engine::tiny::{TinyConfig, tiny_llama_config, write_tiny_adapter, write_tiny_llama};
use clreg_engine::trace::validate_trace;

/// A safetensors file from a header JSON and `data` bytes of zeros.
fn st_file(header: &str, data: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

fn assert_err(
    r: Result<impl std::fmt::Debug, FormatError>,
    code: &str,
    needles: &[&str],
) -> FormatError {
    let e = r.unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` should contain `{n}`");
    }
    e
}

const TWO: &str = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;

fn paths_of(dir: &Path) -> Vec<String> {
    DirAccess::new(dir).list().unwrap()
}

fn inspect_dir(
    kind: Kind,
    dir: &Path,
    base: Option<&BTreeMap<String, Vec<u64>>>,
) -> Result<inspect::Report, FormatError> {
    inspect_artifact(kind, &DirAccess::new(dir), &paths_of(dir), base)
}

/// Parameters of a Llama by the textbook formula, independent of `expected_shapes`.
fn llama_params(t: &TinyConfig) -> u64 {
    let (h, i, v) = (t.hidden as u64, t.intermediate as u64, t.vocab as u64);
    let hd = h / t.heads as u64;
    let kv = t.kv_heads as u64 * hd;
    let attn = h * h + 2 * kv * h + h * h;
    let mlp = 3 * h * i;
    let layer = attn + mlp + 2 * h;
    let head = if t.tie { 0 } else { v * h };
    v * h + t.layers as u64 * layer + h + head
}

mod safetensors_files {
    use super::*;

    #[test]
    fn good_file_round_trips_against_the_safetensors_crate() {
        let data: Vec<u8> = (0..6 * 4).map(|i| i as u8).collect();
        let ints: Vec<u8> = vec![1, 2, 3];
        let half: Vec<u8> = vec![0; 4];
        let views = [
            (
                "w",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data)
                    .unwrap(),
            ),
            (
                "ids",
                safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![3], &ints)
                    .unwrap(),
            ),
            (
                "h",
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![1, 2], &half)
                    .unwrap(),
            ),
        ];
        let meta = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        let bytes = safetensors::serialize(views.iter().map(|(n, v)| (*n, v)), Some(meta)).unwrap();
        let ours = inspect_bytes(&bytes, "x.safetensors").unwrap();
        let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(ours.tensors.len(), theirs.len());
        let names: Vec<&str> = ours.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["h", "ids", "w"]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        for t in &ours.tensors {
            let view = theirs.tensor(&t.name).unwrap();
            assert_eq!(t.dtype, view.dtype().to_string());
            assert_eq!(
                t.shape,
                view.shape().iter().map(|d| *d as u64).collect::<Vec<_>>()
            );
            let info = meta.info(&t.name).unwrap();
            assert_eq!(
                (t.begin, t.end),
                (info.data_offsets.0 as u64, info.data_offsets.1 as u64)
            );
        }
        assert_eq!(ours.metadata.get("format").map(String::as_str), Some("pt"));
    }

    #[test]
    fn plain_hand_made_file_passes() {
        let info = inspect_bytes(&st_file(TWO, 16), "f.safetensors").unwrap();
        assert_eq!(info.parameters(), 4);
        assert!(info.get("b").is_some());
    }

    #[test]
    fn truncated_file() {
        assert_err(
            inspect_bytes(&[1, 0, 0], "t.safetensors"),
            "invalid_safetensors",
            &["t.safetensors", "truncated"],
        );
        let mut f = st_file(TWO, 16);
        f.truncate(f.len() - 3);
        assert_err(
            inspect_bytes(&f, "t.safetensors"),
            "invalid_safetensors",
            &["t.safetensors", "`b`", "truncated"],
        );
    }

    #[test]
    fn header_length_beyond_the_file() {
        let mut f = st_file(TWO, 0);
        f[..8].copy_from_slice(&10_000u64.to_le_bytes());
        assert_err(
            inspect_bytes(&f, "h.safetensors"),
            "invalid_safetensors",
            &["h.safetensors", "beyond the file"],
        );
    }

    #[test]
    fn overlapping_offsets() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 12), "o.safetensors"),
            "invalid_safetensors",
            &["o.safetensors", "overlapping", "`b`", "`a`"],
        );
    }

    #[test]
    fn out_of_bounds_offsets() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1000,1008]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 16), "b.safetensors"),
            "invalid_safetensors",
            &["b.safetensors", "out-of-bounds", "`b`"],
        );
    }

    #[test]
    fn gap() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 20), "g.safetensors"),
            "invalid_safetensors",
            &["g.safetensors", "gap", "`b`"],
        );
    }

    #[test]
    fn unknown_dtype() {
        let h = r#"{"q":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 1), "d.safetensors"),
            "invalid_safetensors",
            &["d.safetensors", "unknown dtype `Q4`", "`q`"],
        );
    }

    #[test]
    fn size_that_lies_about_dtype() {
        let h = r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 8), "l.safetensors"),
            "invalid_safetensors",
            &["`a`", "needs 4 bytes"],
        );
    }

    #[test]
    fn duplicate_tensor_names() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
        // The safetensors crate itself keeps the last one and says nothing.
        assert_err(
            inspect_bytes(&st_file(h, 16), "dup.safetensors"),
            "invalid_safetensors",
            &["dup.safetensors", "duplicate tensor name `a`"],
        );
    }

    #[test]
    fn trailing_bytes() {
        assert_err(
            inspect_bytes(&st_file(TWO, 20), "tr.safetensors"),
            "invalid_safetensors",
            &["tr.safetensors", "trailing bytes", "4 bytes"],
        );
    }

    #[test]
    fn not_json_and_bad_metadata() {
        assert_err(
            inspect_bytes(&st_file("[1,2]   ", 0), "j.safetensors"),
            "invalid_safetensors",
            &["not a JSON object"],
        );
        assert_err(
            inspect_bytes(&st_file("{\"a\":", 0), "j.safetensors"),
            "invalid_safetensors",
            &["not valid JSON"],
        );
        let h = r#"{"__metadata__":{"n":1}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 0), "m.safetensors"),
            "invalid_safetensors",
            &["__metadata__"],
        );
        let h = r#"{"a":{"dtype":"F32","shape":[2]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 0), "m.safetensors"),
            "invalid_safetensors",
            &["tensor `a`", "data_offsets"],
        );
        let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
        assert_err(
            inspect_bytes(&st_file(h, 0), "m.safetensors"),
            "invalid_safetensors",
            &["`a`", "overflows"],
        );
    }

    #[test]
    fn parse_header_uses_the_file_size() {
        let header = TWO.as_bytes();
        let size = 8 + header.len() as u64 + 16;
        assert!(parse_header(header, size, "p").is_ok());
        assert_err(
            parse_header(header, size + 1, "p"),
            "invalid_safetensors",
            &["trailing bytes"],
        );
    }
}

mod models {
    use super::*;

    #[test]
    fn tiny_llama_single_file_passes_with_formula_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let t = TinyConfig::default();
        write_tiny_llama(dir.path(), &t, 7, None).unwrap();
        assert_eq!(
            inspect::detect_kind(&paths_of(dir.path())),
            Some(Kind::Base)
        );
        let r = inspect_dir(Kind::Base, dir.path(), None).unwrap();
        assert_eq!(r.parameters, llama_params(&t));
        assert_eq!(r.tensors, 1 + 9 * 2 + 2);
        assert_eq!(r.architecture.as_deref(), Some("LlamaForCausalLM"));
        assert_eq!(r.dtype.as_deref(), Some("F32"));
        assert_eq!(r.config.unwrap().num_key_value_heads, 2);
        assert_eq!(
            r.shapes["model.layers.1.self_attn.k_proj.weight"],
            vec![32, 64]
        );
    }

    #[test]
    fn tiny_llama_sharded_and_tied_passes() {
        let dir = tempfile::tempdir().unwrap();
        let t = TinyConfig {
            tie: true,
            layers: 3,
            ..TinyConfig::default()
        };
        write_tiny_llama(dir.path(), &t, 7, Some(100_000)).unwrap();
        let paths = paths_of(dir.path());
        let shards = paths.iter().filter(|p| p.ends_with(".safetensors")).count();
        assert!(shards > 1, "{paths:?}");
        assert!(paths.contains(&"model.safetensors.index.json".to_string()));
        let r = inspect_dir(Kind::Base, dir.path(), None).unwrap();
        assert_eq!(r.parameters, llama_params(&t));
        assert!(!r.shapes.contains_key("lm_head.weight"));
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_sharding() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let t = TinyConfig::default();
        write_tiny_llama(a.path(), &t, 3, None).unwrap();
        write_tiny_llama(b.path(), &t, 3, Some(50_000)).unwrap();
        let one = std::fs::read(a.path().join("model.safetensors")).unwrap();
        let one = safetensors::SafeTensors::deserialize(&one).unwrap();
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(b.path().join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let shard_name = index["weight_map"]["model.layers.0.mlp.up_proj.weight"]
            .as_str()
            .unwrap();
        let shard = std::fs::read(b.path().join(shard_name)).unwrap();
        let shard = safetensors::SafeTensors::deserialize(&shard).unwrap();
        let name = "model.layers.0.mlp.up_proj.weight";
        assert_eq!(
            one.tensor(name).unwrap().data(),
            shard.tensor(name).unwrap().data()
        );
        let data = one.tensor(name).unwrap().data();
        assert!(clreg_engine::safetensors_header::check_finite("F32", data).is_ok());
        let vals: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let std = (vals.iter().map(|v| v * v).sum::<f32>() / vals.len() as f32).sqrt();
        assert!((0.015..0.025).contains(&std), "std {std}");
    }

    #[test]
    fn index_naming_a_missing_shard() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, Some(100_000)).unwrap();
        let last = paths_of(dir.path())
            .into_iter()
            .rfind(|p| p.ends_with(".safetensors"))
            .unwrap();
        std::fs::remove_file(dir.path().join(&last)).unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &["model.safetensors.index.json", "missing shard", &last],
        );
    }

    #[test]
    fn index_and_shard_disagree() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, Some(100_000)).unwrap();
        let path = dir.path().join("model.safetensors.index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let map = index["weight_map"].as_object_mut().unwrap();
        let first = map["model.embed_tokens.weight"]
            .as_str()
            .unwrap()
            .to_string();
        let other = map
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .find(|s| *s != first)
            .unwrap();
        map.insert("model.embed_tokens.weight".into(), other.clone().into());
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &["model.embed_tokens.weight", &other],
        );
    }

    #[test]
    fn shard_tensor_missing_from_index() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, Some(100_000)).unwrap();
        let path = dir.path().join("model.safetensors.index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("model.norm.weight");
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &[
                "model.safetensors.index.json",
                "`model.norm.weight`",
                "does not map",
            ],
        );
    }

    #[test]
    fn tensor_missing_against_config() {
        let dir = tempfile::tempdir().unwrap();
        let t = TinyConfig::default();
        write_tiny_llama(dir.path(), &t, 1, None).unwrap();
        // Claim three layers; the file holds two.
        let mut cfg = tiny_llama_config(&t);
        cfg.num_hidden_layers = 3;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &[
                "model.safetensors",
                "model.layers.2.self_attn.q_proj.weight",
                "missing",
            ],
        );
    }

    #[test]
    fn shape_against_config_and_extra_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let t = TinyConfig::default();
        write_tiny_llama(dir.path(), &t, 1, None).unwrap();
        let mut cfg = tiny_llama_config(&t);
        cfg.intermediate_size = 96;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &[
                "model.safetensors",
                "model.layers.0.mlp.gate_proj.weight",
                "[96, 64]",
            ],
        );

        // Tied config but lm_head present with the right shape: allowed. Fewer layers: extra tensor.
        let mut cfg = tiny_llama_config(&t);
        cfg.tie_word_embeddings = true;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        assert!(inspect_dir(Kind::Base, dir.path(), None).is_ok());
        cfg.num_hidden_layers = 1;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &["model.layers.1.", "not part of"],
        );
    }

    #[test]
    fn config_missing_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, None).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            text.replace("LlamaForCausalLM", "BertModel"),
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &["config.json", "BertModel is not supported"],
        );
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_model",
            &["config.json is missing"],
        );
        // Other: headers only.
        assert!(inspect_dir(Kind::Other, dir.path(), None).is_ok());
        assert_eq!(
            inspect::detect_kind(&paths_of(dir.path())),
            Some(Kind::Other)
        );
    }

    #[test]
    fn duplicate_names_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, None).unwrap();
        std::fs::copy(
            dir.path().join("model.safetensors"),
            dir.path().join("copy.safetensors"),
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Other, dir.path(), None),
            "invalid_model",
            &["duplicate tensor name", "copy.safetensors"],
        );
    }

    #[test]
    fn checkpoint_must_keep_base_shapes() {
        let (base, ck) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_tiny_llama(base.path(), &TinyConfig::default(), 1, None).unwrap();
        let base_shapes = inspect_dir(Kind::Other, base.path(), None).unwrap().shapes;
        write_tiny_llama(ck.path(), &TinyConfig::default(), 2, Some(60_000)).unwrap();
        assert!(inspect_dir(Kind::Checkpoint, ck.path(), Some(&base_shapes)).is_ok());
        let other = tempfile::tempdir().unwrap();
        write_tiny_llama(
            other.path(),
            &TinyConfig {
                vocab: 300,
                ..TinyConfig::default()
            },
            2,
            None,
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Checkpoint, other.path(), Some(&base_shapes)),
            "invalid_model",
            &["lm_head.weight", "[300, 64]", "[256, 64]", "base"],
        );
    }

    #[test]
    fn corrupt_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, None).unwrap();
        let p = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&p, bytes).unwrap();
        assert_err(
            inspect_dir(Kind::Base, dir.path(), None),
            "invalid_safetensors",
            &["model.safetensors", "truncated"],
        );
    }

    #[test]
    fn dir_access_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let access = DirAccess::new(dir.path());
        assert!(access.size("../etc/passwd").is_none());
        assert_eq!(
            access.read_range("/etc/passwd", 0, 4).unwrap_err().code(),
            "io_error"
        );
    }
}

mod adapters {
    use super::*;

    fn base() -> (tempfile::TempDir, BTreeMap<String, Vec<u64>>) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), &TinyConfig::default(), 1, None).unwrap();
        let shapes = inspect_dir(Kind::Base, dir.path(), None).unwrap().shapes;
        (dir, shapes)
    }

    #[test]
    fn tiny_adapter_passes_with_formula_parameters() {
        let (_b, shapes) = base();
        let dir = tempfile::tempdir().unwrap();
        let t = TinyConfig::default();
        write_tiny_adapter(
            dir.path(),
            &tiny_llama_config(&t),
            4,
            8.0,
            &["q_proj", "v_proj", "down_proj"],
            5,
            true,
        )
        .unwrap();
        assert_eq!(
            inspect::detect_kind(&paths_of(dir.path())),
            Some(Kind::Adapter)
        );
        let r = inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)).unwrap();
        let s = r.adapter.unwrap();
        let (h, kv, inter, r_) = (64u64, 32u64, 128u64, 4u64);
        // Per layer: q [r,h]+[h,r]; v [r,h]+[kv,r]; down [r,inter]+[h,r].
        let per_layer = r_ * (h + h) + r_ * (h + kv) + r_ * (inter + h);
        assert_eq!(s.parameters, 2 * per_layer);
        assert_eq!(r.parameters, s.parameters);
        assert_eq!(s.modules, 6);
        assert_eq!(s.target_modules, vec!["down_proj", "q_proj", "v_proj"]);
        assert_eq!((s.r, s.lora_alpha, s.use_rslora), (4, 8.0, false));
        assert!(r.architecture.is_none());
        assert_eq!(r.tensors, 12);
    }

    #[test]
    fn adapter_with_wrong_shapes() {
        let dir = tempfile::tempdir().unwrap();
        // Trained on a wider base.
        let wide = tiny_llama_config(&TinyConfig {
            hidden: 128,
            ..TinyConfig::default()
        });
        write_tiny_adapter(dir.path(), &wide, 4, 8.0, &["q_proj"], 5, false).unwrap();
        let (_b, shapes) = base();
        assert_err(
            inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)),
            "adapter_mismatch",
            &[
                "adapter_model.safetensors",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                "[4, 128]",
                "[4, 64]",
            ],
        );
    }

    #[test]
    fn adapter_target_not_in_base() {
        let dir = tempfile::tempdir().unwrap();
        let deep = tiny_llama_config(&TinyConfig {
            layers: 3,
            ..TinyConfig::default()
        });
        write_tiny_adapter(dir.path(), &deep, 4, 8.0, &["v_proj"], 5, false).unwrap();
        let (_b, shapes) = base();
        assert_err(
            inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)),
            "adapter_mismatch",
            &["model.layers.2.self_attn.v_proj.weight", "does not have"],
        );
    }

    #[test]
    fn adapter_needs_its_base() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_adapter(
            dir.path(),
            &tiny_llama_config(&TinyConfig::default()),
            2,
            4.0,
            &["q_proj"],
            5,
            false,
        )
        .unwrap();
        assert_err(
            inspect_dir(Kind::Adapter, dir.path(), None),
            "invalid_adapter",
            &["base"],
        );
    }

    #[test]
    fn bad_adapter_config() {
        assert_err(
            adapter::parse(
                br#"{"peft_type":"PREFIX_TUNING","r":8}"#,
                "adapter_config.json",
            ),
            "invalid_adapter",
            &["adapter_config.json", "PREFIX_TUNING", "LORA"],
        );
        assert_err(
            adapter::parse(
                br#"{"peft_type":"LORA","r":0,"target_modules":["q_proj"]}"#,
                "a",
            ),
            "invalid_adapter",
            &["`r` is 0"],
        );
        assert_err(
            adapter::parse(b"not json", "a"),
            "invalid_adapter",
            &["adapter_config.json"],
        );

        let (_b, shapes) = base();
        let dir = tempfile::tempdir().unwrap();
        write_tiny_adapter(
            dir.path(),
            &tiny_llama_config(&TinyConfig::default()),
            2,
            4.0,
            &["q_proj"],
            5,
            false,
        )
        .unwrap();
        let p = dir.path().join("adapter_config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"LORA\"", "\"IA3\"")).unwrap();
        assert_err(
            inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)),
            "invalid_adapter",
            &["adapter_config.json", "IA3"],
        );
        // Tensors for a module the config does not target.
        std::fs::write(&p, text.replace("\"q_proj\"", "\"k_proj\"")).unwrap();
        assert_err(
            inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)),
            "invalid_adapter",
            &["q_proj", "target_modules"],
        );
        // A regex string: accepted, shapes still checked.
        std::fs::write(
            &p,
            text.replace("[\n    \"q_proj\"\n  ]", "\".*\\\\.q_proj\""),
        )
        .unwrap();
        let r = inspect_dir(Kind::Adapter, dir.path(), Some(&shapes)).unwrap();
        assert_eq!(r.adapter.unwrap().target_modules, vec!["q_proj"]);
    }

    #[test]
    fn adapter_key_names() {
        let data = vec![0u8; 4 * 64];
        let view = |shape: Vec<usize>| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &data[..]).unwrap()
        };
        let cfg = adapter::parse(
            br#"{"peft_type":"LORA","r":1,"target_modules":["q_proj"]}"#,
            "c",
        )
        .unwrap();
        let (_b, shapes) = base();
        let check = |names: &[(&str, Vec<usize>)]| {
            let views: Vec<_> = names
                .iter()
                .map(|(n, s)| (n.to_string(), view(s.clone())))
                .collect();
            let bytes =
                safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), None).unwrap();
            let info = inspect_bytes(&bytes, "adapter_model.safetensors").unwrap();
            adapter::check_against_base(&cfg, &info, &shapes, "adapter_model.safetensors")
        };
        let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        assert_err(
            check(&[(a, vec![1, 64])]),
            "invalid_adapter",
            &["no lora_B"],
        );
        assert_err(
            check(&[(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
                vec![1, 64],
            )]),
            "invalid_adapter",
            &["lora_A.default.weight", "neither"],
        );
        assert_err(
            check(&[("model.layers.0.self_attn.q_proj.lora_A.weight", vec![1, 64])]),
            "invalid_adapter",
            &["not a PEFT LoRA key"],
        );
        let b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
        assert!(check(&[(a, vec![1, 64]), (b, vec![64, 1])]).is_ok());
    }
}

mod trace {
    use super::*;

    #[test]
    fn good_array_and_lines() {
        let a = br#"[{"prompt":"p","answer":"a","id":1},{"prompt":"q","answer":""}]"#;
        assert_eq!(validate_trace(a, "t.json").unwrap(), 2);
        let l = b"{\"prompt\":\"p\",\"answer\":\"a\"}\n\n{\"prompt\":\"q\",\"answer\":\"b\"}\n";
        assert_eq!(validate_trace(l, "t.jsonl").unwrap(), 2);
    }

    #[test]
    fn not_an_array() {
        assert_err(
            validate_trace(b"\"hello\"", "d.json"),
            "invalid_dataset",
            &["d.json", "not a JSON array"],
        );
        assert_err(
            validate_trace(b"[1, 2", "d.json"),
            "invalid_dataset",
            &["not valid JSON"],
        );
    }

    #[test]
    fn missing_answer() {
        let d = b"[\n{\"prompt\":\"p\",\"answer\":\"a\"},\n{\"prompt\":\"p\",\"answer\":\"a\"},\n{\"prompt\":\"p\",\"answer\":\"a\"},\n{\"prompt\":\"p\"}\n]";
        assert_err(
            validate_trace(d, "d.json"),
            "invalid_dataset",
            &["d.json", "example 3 (line 5)", "`answer` is missing"],
        );
    }

    #[test]
    fn non_string_prompt() {
        let d = br#"[{"prompt":1,"answer":"a"}]"#;
        assert_err(
            validate_trace(d, "d.json"),
            "invalid_dataset",
            &["example 0", "`prompt` is a number, not a string"],
        );
        assert_err(
            validate_trace(b"[[1]]", "d.json"),
            "invalid_dataset",
            &["example 0", "not an object"],
        );
    }

    #[test]
    fn empty() {
        assert_err(
            validate_trace(b"[]", "d.json"),
            "invalid_dataset",
            &["no examples"],
        );
        assert_err(
            validate_trace(b"", "d.json"),
            "invalid_dataset",
            &["d.json"],
        );
    }

    #[test]
    fn jsonl_line_error() {
        let d = b"{\"prompt\":\"p\",\"answer\":\"a\"}\n{\"prompt\":\"p\",\n";
        assert_err(
            validate_trace(d, "d.jsonl"),
            "invalid_dataset",
            &["d.jsonl", "line 2 (example 1)", "not valid JSON"],
        );
        let d = b"{\"prompt\":\"p\",\"answer\":\"a\"}\n\n{\"prompt\":\"p\",\"answer\":null}\n";
        assert_err(
            validate_trace(d, "d.jsonl"),
            "invalid_dataset",
            &["line 3 (example 1)", "`answer` is null"],
        );
    }
}

/// One large header named under many paths (the blobs of a manifest may repeat) is refused
/// once the headers read total more than `MAX_TOTAL_HEADER_LEN`, not read for every path.
#[test]
fn headers_repeated_under_many_paths_are_refused_past_the_total_cap() {
    let dir = tempfile::tempdir().unwrap();
    let header = format!(
        "{{\"t\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}}}{}",
        " ".repeat(4 << 20)
    );
    std::fs::write(dir.path().join("w0.safetensors"), st_file(&header, 4)).unwrap();
    let per = (header.len() as u64).max(1);
    let copies = inspect::MAX_TOTAL_HEADER_LEN / per + 2;
    for i in 1..copies {
        std::fs::hard_link(
            dir.path().join("w0.safetensors"),
            dir.path().join(format!("w{i}.safetensors")),
        )
        .unwrap();
    }
    let err = inspect_dir(Kind::Other, dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("headers total"), "{err}");
    // Under the cap the same files are fine (and tensor names must then be distinct: the
    // duplicate-name check is what stops them).
    let few = tempfile::tempdir().unwrap();
    std::fs::write(few.path().join("w0.safetensors"), st_file(&header, 4)).unwrap();
    assert!(inspect_dir(Kind::Other, few.path(), None).is_ok());
}

/// Files that name their content (the registry's blob digest) are read and parsed once per
/// content, however many paths share it; the total header cap still counts every path.
#[test]
fn one_content_under_many_paths_is_read_once() {
    struct Counting {
        bytes: Vec<u8>,
        paths: Vec<String>,
        reads: std::cell::Cell<usize>,
    }
    impl FileAccess for Counting {
        fn size(&self, _: &str) -> Option<u64> {
            Some(self.bytes.len() as u64)
        }
        fn read_range(&self, _: &str, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
            self.reads.set(self.reads.get() + 1);
            Ok(self.bytes[start as usize..end as usize].to_vec())
        }
        fn content_id(&self, _: &str) -> Option<String> {
            Some("one-blob".into())
        }
    }
    let header = r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let access = Counting {
        bytes: st_file(header, 4),
        paths: (0..100).map(|i| format!("w{i}.safetensors")).collect(),
        reads: std::cell::Cell::new(0),
    };
    // 100 paths, one content: the duplicate tensor name is found after one read of the header
    // (the length prefix and the header: two reads), not 200.
    let err = inspect_artifact(Kind::Other, &access, &access.paths, None).unwrap_err();
    assert!(err.to_string().contains("duplicate tensor name"), "{err}");
    assert_eq!(access.reads.get(), 2);
}

/// Adapters are read whole at inspection: a NaN or an infinity in any weight is refused with
/// `non_finite_weights`, naming the tensor; a clean adapter passes.
#[test]
fn an_adapter_with_a_nan_or_an_infinity_is_refused() {
    let t = TinyConfig::default();
    let base = tempfile::tempdir().unwrap();
    write_tiny_llama(base.path(), &t, 1, None).unwrap();
    let base_shapes = inspect_dir(Kind::Other, base.path(), None).unwrap().shapes;
    for bad in [f32::NAN, f32::INFINITY] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_adapter(
            dir.path(),
            &tiny_llama_config(&t),
            4,
            8.0,
            &["q_proj"],
            3,
            false,
        )
        .unwrap();
        assert!(inspect_dir(Kind::Adapter, dir.path(), Some(&base_shapes)).is_ok());
        let path = dir.path().join(inspect::ADAPTER_WEIGHTS);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let (name, tensor) = header
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| *k != "__metadata__")
            .unwrap();
        assert_eq!(tensor["dtype"], "F32");
        // The third element of the first tensor.
        let at = 8 + n + tensor["data_offsets"][0].as_u64().unwrap() as usize + 8;
        bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let e = assert_err(
            inspect_dir(Kind::Adapter, dir.path(), Some(&base_shapes)),
            "non_finite_weights",
            &[name.as_str(), "element 2"],
        );
        assert_eq!(e.file(), inspect::ADAPTER_WEIGHTS);
    }
}
