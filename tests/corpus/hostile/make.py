#!/usr/bin/env python3
"""Writes the hostile-file corpus next to this script, deterministically.

    python3 tests/corpus/hostile/make.py

Each file is refused by clreg with the error code that `expected.json` gives it, and nothing is
stored (tests/tests/integration/corpus.rs). Safetensors and PEFT files are pushed as artifacts
against a tiny base (TinyConfig::default(): hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 256),
TRACE files registered as stored datasets, YAML recipes submitted as merge / mix jobs, and GGUF
files imported with the engine (`clreg local import-gguf`).
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
expected = {}


def write(path, data, code):
    full = os.path.join(HERE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    expected[path] = code


def st(header, data=b"", raw_header=None):
    """A safetensors file: 8-byte little-endian header length, header, data."""
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def f32(values):
    return b"".join(struct.pack("<f", v) for v in values)


# --- safetensors (pushed as model.safetensors of a base) -------------------------------------
S = "safetensors/"
T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
write(S + "truncated_prefix.safetensors", b"\x10\x00\x00\x00", "invalid_safetensors")
write(S + "header_len_2pow63.safetensors", struct.pack("<Q", 1 << 63) + b"{}", "invalid_safetensors")
write(S + "header_len_beyond_file.safetensors", struct.pack("<Q", 4096) + b"{}", "invalid_safetensors")
write(S + "header_not_json.safetensors", st(None, raw_header=b"this is not json"), "invalid_safetensors")
write(S + "header_not_utf8.safetensors", st(None, raw_header=b'{"\xff\xfe": 1}'), "invalid_safetensors")
write(S + "header_is_array.safetensors", st(None, raw_header=b"[1, 2, 3]"), "invalid_safetensors")
write(S + "duplicate_tensor_name.safetensors",
      st(None, f32([1, 2, 3, 4]),
         raw_header=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
                    b' "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'),
      "invalid_safetensors")
write(S + "unknown_dtype.safetensors", st({"a": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}}, f32([1, 2])),
      "invalid_safetensors")
write(S + "overlapping_offsets.safetensors",
      st({"a": T, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32([1, 2, 3])),
      "invalid_safetensors")
write(S + "gap_in_data.safetensors",
      st({"a": T, "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, f32([1, 2, 3, 4])),
      "invalid_safetensors")
write(S + "trailing_bytes.safetensors", st({"a": T}, f32([1, 2]) + b"extra"), "invalid_safetensors")
write(S + "offsets_beyond_data.safetensors",
      st({"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}, f32([1, 2])),
      "invalid_safetensors")
write(S + "shape_overflows.safetensors",
      st({"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}, f32([1, 2])),
      "invalid_safetensors")
write(S + "size_disagrees_with_shape.safetensors",
      st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, f32([1, 2])),
      "invalid_safetensors")
write(S + "end_before_begin.safetensors",
      st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, f32([1, 2])),
      "invalid_safetensors")
write(S + "metadata_twice.safetensors",
      st(None, f32([1, 2]),
         raw_header=b'{"__metadata__": {"a": "b"}, "__metadata__": {"c": "d"},'
                    b' "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'),
      "invalid_safetensors")
write(S + "negative_offset.safetensors",
      st(None, f32([1, 2]), raw_header=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}'),
      "invalid_safetensors")
# Well-formed, but a NaN among the weights: the upload's scan refuses it.
write(S + "nan_weights.safetensors", st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}},
                                        f32([1.0, float("nan"), 2.0])), "non_finite_weights")
write(S + "bf16_infinity.safetensors",
      st({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\x80\x3f\x80\x7f"),
      "non_finite_weights")

# --- PEFT adapters (pushed against the tiny base; the directory is the adapter) ----------------
P = "peft/"
HIDDEN, KV_OUT, LAYERS = 64, 32, 2


def lora_weights(r, modules=("q_proj",), shapes=None, extra=None):
    header, data, off = {}, b"", 0
    for layer in range(LAYERS):
        for m in modules:
            out = HIDDEN if m == "q_proj" else KV_OUT
            for part, shape in (("lora_A", [r, HIDDEN]), ("lora_B", [out, r])):
                if shapes and (m, part) in shapes:
                    shape = shapes[(m, part)]
                n = shape[0] * shape[1]
                name = f"base_model.model.model.layers.{layer}.self_attn.{m}.{part}.weight"
                header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
                data += f32([0.01] * n)
                off += 4 * n
    for name, shape in (extra or {}).items():
        n = shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
        data += f32([0.01] * n)
        off += 4 * n
    return st(header, data)


def peft_config(**over):
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
           "target_modules": ["q_proj"], "bias": "none"}
    cfg.update(over)
    return json.dumps(cfg)


def adapter(name, config, weights, code):
    write(P + name + "/adapter_config.json", config, code)
    write(P + name + "/adapter_model.safetensors", weights, code)
    # One expectation per adapter directory.
    del expected[P + name + "/adapter_config.json"]
    del expected[P + name + "/adapter_model.safetensors"]
    expected[P + name] = code


adapter("config_not_json", "{not json", lora_weights(4), "invalid_adapter")
adapter("rank_zero", peft_config(r=0), lora_weights(4), "invalid_adapter")
adapter("rank_huge", peft_config(r=1 << 40), lora_weights(4), "adapter_mismatch")
adapter("not_lora", peft_config(peft_type="PREFIX_TUNING"), lora_weights(4), "invalid_adapter")
adapter("weights_outside_target_modules", peft_config(target_modules=["frobnicator"]),
        lora_weights(4), "invalid_adapter")
adapter("a_has_wrong_input_size", peft_config(),
        lora_weights(4, shapes={("q_proj", "lora_A"): [4, 63]}), "adapter_mismatch")
adapter("rank_disagrees_with_config", peft_config(r=8), lora_weights(4), "adapter_mismatch")
adapter("extra_tensor", peft_config(),
        lora_weights(4, extra={"base_model.model.model.embed_tokens.weight": [256, 64]}),
        "invalid_adapter")
adapter("nan_in_lora_b", peft_config(),
        lora_weights(4)[:-4] + f32([float("nan")]), "non_finite_weights")

# --- TRACE datasets (registered with stored content in a full collaboration) ------------------
D = "trace/"
write(D + "not_json.json", "prompt: what? answer: this", "invalid_dataset")
write(D + "object_not_array.json", '{"data": [{"prompt": "p", "answer": "a"}]}', "invalid_dataset")
write(D + "missing_answer.json", '[{"prompt": "p", "answer": "a"}, {"prompt": "q"}]', "invalid_dataset")
write(D + "prompt_is_number.json", '[{"prompt": 7, "answer": "a"}]', "invalid_dataset")
write(D + "answer_not_a_choice.json", '[{"prompt": "p", "answer": "c", "choices": ["a", "b"]}]',
      "invalid_dataset")
write(D + "nested_100k_deep.json", "[" * 100_000 + "]" * 100_000, "invalid_dataset")
write(D + "invalid_utf8.json", b'[{"prompt": "\xc3\x28", "answer": "a"}]', "invalid_dataset")
write(D + "empty_array.json", "[]", "invalid_dataset")
write(D + "bad_jsonl_line.jsonl", '{"prompt": "p", "answer": "a"}\n{"prompt": "q", "answer": \n',
      "invalid_dataset")
write(D + "unterminated_string.json", '[{"prompt": "p, "answer": "a"}]', "invalid_dataset")

# --- YAML recipes (submitted as merge jobs; `moe_*` as mix jobs) ------------------------------
Y = "yaml/"
write(Y + "not_yaml.yml", "merge_method: [linear\n\tmodels: }{", "bad_request")
laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
prev = "a"
for name in "bcdefghi":
    laughs += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    prev = name
laughs += "merge_method: linear\nmodels:\n  - model: *i\n"
write(Y + "billion_laughs.yml", laughs, "bad_request")
write(Y + "unknown_method.yml", "merge_method: frobnicate\nmodels:\n  - model: lab/llama\n", "bad_request")
write(Y + "nested_deep.yml", "merge_method: linear\nmodels: " + "[" * 10_000 + "]" * 10_000 + "\n",
      "bad_request")
write(Y + "models_not_a_list.yml", "merge_method: linear\nmodels: lab/llama\n", "bad_request")
write(Y + "moe_prompts_file.yml",
      "base_model: lab/llama\ngate_mode: hidden\nexperts:\n  - source_model: lab/llama\n"
      "    prompts_file: /etc/passwd\n", "bad_request")
write(Y + "moe_unknown_gate_mode.yml",
      "base_model: lab/llama\ngate_mode: telepathy\nexperts:\n  - source_model: lab/llama\n"
      "    positive_prompts: [\"x\"]\n", "bad_request")

# --- GGUF (imported with the engine) ----------------------------------------------------------
G = "gguf/"


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(version=3, n_tensors=0, kvs=b"", n_kv=0, body=b""):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + body


write(G + "bad_magic.gguf", b"GGML" + b"\x00" * 60, "invalid_gguf")
write(G + "truncated_header.gguf", b"GGUF\x03\x00", "invalid_gguf")
write(G + "unknown_version.gguf", gguf(version=99), "invalid_gguf")
write(G + "string_length_2pow62.gguf",
      gguf(n_kv=1, kvs=struct.pack("<Q", 1 << 62) + b"general.architecture"), "invalid_gguf")
write(G + "tensor_count_2pow60.gguf", gguf(n_tensors=1 << 60), "invalid_gguf")
write(G + "kv_count_2pow60.gguf", gguf(n_kv=1 << 60), "invalid_gguf")
write(G + "array_length_2pow60.gguf",
      gguf(n_kv=1, kvs=gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 1 << 60)),
      "invalid_gguf")
write(G + "unknown_value_type.gguf",
      gguf(n_kv=1, kvs=gguf_string("general.architecture") + struct.pack("<I", 77)), "invalid_gguf")
write(G + "not_llama.gguf",
      gguf(n_kv=1, kvs=gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("rwkv")),
      "invalid_gguf")

write(G + "alignment_zero.gguf",
      gguf(n_kv=1, kvs=gguf_string("general.alignment") + struct.pack("<II", 4, 0)), "invalid_gguf")
write(G + "tensor_offset_beyond_file.gguf",
      gguf(n_tensors=1, n_kv=1,
           kvs=gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama"),
           body=gguf_string("token_embd.weight") + struct.pack("<IQQIQ", 2, 64, 256, 0, 1 << 40)),
      "invalid_gguf")

with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(dict(sorted(expected.items())), f, indent=1)
    f.write("\n")
print(f"{len(expected)} hostile inputs")
