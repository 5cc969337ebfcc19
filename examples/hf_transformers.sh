#!/usr/bin/env bash
# transformers and PEFT load registry models through the Hub-compatible API (/hf): SmolLM2-135M
# (imported from the GGUF that ../shared/peers/setup.sh fetches), a LoRA adapter trained on it,
# and a Mixtral mixture of it; each generates the same greedy tokens as `clreg local generate`.
# Not CI (PyTorch is large): run ../shared/peers/setup.sh first, then, with a running server:
#   SERVER=http://127.0.0.1:8080 KEY=<alice's API key> examples/hf_transformers.sh
set -euo pipefail
PEERS=${PEERS:-$HOME/.cache/clreg-peers}
PY=$PEERS/venv/bin/python
W=${WORK:-/tmp/clreg-hf}
C=${COLLAB:-hf}
: "${SERVER:?the server URL}" "${KEY:?an API key of a user who may create collaborations}"
rm -rf "$W" && mkdir -p "$W"
clreg login --server "$SERVER" --api-key "$KEY" >/dev/null
clreg collab create "$C" --policy semi
clreg --quiet local import-gguf "$PEERS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$W/smollm2"
clreg push "$W/smollm2" --collab "$C" --name smollm2
clreg --quiet local synth -o "$W/suite" --seed 1 --train 16 --eval 2 --test 2
clreg --quiet local train --base "$W/smollm2" --data "$W/suite/cstance/train.json" \
  --max-steps 2 --batch-size 2 --grad-accum 1 --lr 1e-3 --r 8 --seed 1 -o "$W/lora"
# The adapter's lineage names its training data by digest: the manifest must be registered.
clreg dataset push "$W/suite/cstance/train.json" --collab "$C" --task cstance --metric exact --manifest-only
clreg push "$W/lora" --collab "$C" --name lora          # clreg_train.json: kind, base, lineage
cat > "$W/moe.yml" <<YML
base_model: $W/smollm2
gate_mode: random
seed: 1
experts:
  - source_model: $W/smollm2
  - source_model: $W/smollm2
YML
clreg --quiet local mix --config "$W/moe.yml" -o "$W/moe"
clreg push "$W/moe" --collab "$C" --name moe           # clreg_mix.json: a mixture of smollm2

PROMPT="The capital of France is"
gen() { clreg --json --quiet local generate "$@" --prompt "$PROMPT" --max-tokens 12 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["text"])'; }
LOCAL_BASE=$(gen "$W/smollm2")
LOCAL_LORA=$(gen "$W/smollm2" --adapter "$W/lora")
LOCAL_MOE=$(gen "$W/moe")

HF_ENDPOINT="$SERVER/hf" HF_TOKEN="$KEY" HF_HOME="$W/hf-home" HF_HUB_DISABLE_TELEMETRY=1 \
  LOCAL_BASE="$LOCAL_BASE" LOCAL_LORA="$LOCAL_LORA" LOCAL_MOE="$LOCAL_MOE" C="$C" PROMPT="$PROMPT" \
  "$PY" - <<'PY'
import os
import torch
import transformers, peft, huggingface_hub
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

c, prompt = os.environ["C"], os.environ["PROMPT"]
print(f"transformers {transformers.__version__}, peft {peft.__version__}, "
      f"huggingface_hub {huggingface_hub.__version__}, torch {torch.__version__}")

def greedy(model, tok):
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

tok = AutoTokenizer.from_pretrained(f"{c}/smollm2", revision="main")
base = AutoModelForCausalLM.from_pretrained(f"{c}/smollm2", revision="1", dtype=torch.float32)
results = {"base": greedy(base, tok)}
results["lora"] = greedy(PeftModel.from_pretrained(base, f"{c}/lora"), tok)
moe = AutoModelForCausalLM.from_pretrained(f"{c}/moe", dtype=torch.float32)
results["moe"] = greedy(moe, AutoTokenizer.from_pretrained(f"{c}/moe"))
ok = True
for name in ["base", "lora", "moe"]:
    local = os.environ[f"LOCAL_{name.upper()}"]
    same = results[name].strip() == local.strip()
    ok &= same
    print(f"{name:5} transformers: {results[name]!r}\n      clreg local:  {local!r}  {'same' if same else 'DIFFERENT'}")
raise SystemExit(0 if ok else 1)
PY
