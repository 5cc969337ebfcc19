#!/usr/bin/env bash
# The shipped PyTorch + PEFT trainer (trainer/clreg_trainer.py, what external executors run)
# against the engine, on SmolLM2-135M (f32), the same data, settings and seed: the loss of every
# step side by side, the largest difference between the two adapters, and the speed of each.
#
#   bench/trainer_parity.sh [PEERS_DIR]   (default ~/.cache/clreg-peers, made by ../shared/peers/setup.sh)
#
# The engine runs `clreg local train`; the trainer gets an order built from the engine's own
# clreg_train.json (its `config`), as a worker would write it. LoRA r=8 on the 7 modules, AdamW
# lr 1e-3, batch 4 x 128 positions, no dropout, CLREG_BENCH_STEPS steps (default 8), 2 threads each.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${1:-$HOME/.cache/clreg-peers}
PY=$PEERS/venv/bin/python
STEPS=${CLREG_BENCH_STEPS:-8}
THREADS=${CLREG_BENCH_THREADS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-cli
CLREG=$CARGO_TARGET_DIR/release/clreg
W=${CLREG_BENCH_DIR:-/tmp/clreg-parity-bench}
mkdir -p "$W"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
[ -f "$W/smollm2/model.safetensors" ] ||
  "$CLREG" local import-gguf "$PEERS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$W/smollm2" --quiet
"$PY" - "$W/data.json" <<'PY'
import json, random, sys
random.seed(1)
words = "the of and to in is was for on that with as by at from river market stone garden signal".split()
ex = [{"prompt": " ".join(random.choice(words) for _ in range(90)) + "\nQuestion: what comes next?\nAnswer:",
       "answer": " " + " ".join(random.choice(words) for _ in range(12))} for _ in range(64)]
json.dump(ex, open(sys.argv[1], "w"))
PY
rm -rf "$W/engine" "$W/torch" "$W/progress.jsonl"
"$CLREG" local train --base "$W/smollm2" --data "$W/data.json" --batch-size 4 --grad-accum 1 \
  --max-len 129 --max-steps "$STEPS" --lr 1e-3 --seed 7 --quiet -o "$W/engine" >/dev/null
"$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
record = json.load(open(f"{w}/engine/clreg_train.json"))
order = {"spec": {"kind": "train", "base": f"{w}/smollm2", "adapters": [], "data": [f"{w}/data.json"],
                  "past": [], "output": f"{w}/torch", "config": record["config"]}, "digests": {}}
json.dump(order, open(f"{w}/order.json", "w"))
PY
"$PY" trainer/clreg_trainer.py --order "$W/order.json" --progress "$W/progress.jsonl"
"$PY" - "$W" <<'PY'
import json, sys
import torch
from safetensors.torch import load_file
w = sys.argv[1]
engine = json.load(open(f"{w}/engine/clreg_train.json"))
ours = json.load(open(f"{w}/torch/clreg_train.json"))
print(f"{'step':>4} {'engine loss':>12} {'trainer loss':>13} {'rel. diff':>10}")
for a, b in zip(engine["losses"], ours["losses"]):
    print(f"{a['step']:>4} {a['loss']:>12.6f} {b['loss']:>13.6f} {abs(a['loss'] - b['loss']) / a['loss']:>10.2e}")
x = load_file(f"{w}/engine/adapter_model.safetensors")
y = load_file(f"{w}/torch/adapter_model.safetensors")
assert sorted(x) == sorted(y), "the adapters hold different tensors"
# Per tensor: the difference's norm over the engine tensor's norm (element-wise ratios blow up
# on lora_B entries that are still near their zero init), and the largest element difference.
rel = max(float((x[k] - y[k]).norm() / x[k].norm()) for k in x)
top = max(float((x[k] - y[k]).abs().max()) for k in x)
scale = max(float(x[k].abs().max()) for k in x)
print(f"adapters: {len(x)} tensors; worst |engine - trainer| / |engine| {rel:.2e}; "
      f"largest element difference {top:.2e} (largest element {scale:.2e})")
def median_step(r):
    s = sorted(step["seconds"] for step in r["losses"][1:])
    return s[len(s) // 2]
e, t = median_step(engine), median_step(ours)
print(f"median step: engine {e:.3f} s, PyTorch trainer {t:.3f} s (engine {t / e:.2f}x)")
PY
