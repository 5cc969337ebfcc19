#!/usr/bin/env bash
# MoE mixing against mergekit-moe on four perturbed copies of SmolLM2-135M (f32), and
# generation speed of the top-2 mixture against the dense base.
#
#   bench/moe.sh [PEERS_DIR]     (default ~/.cache/clreg-peers, made by ../shared/peers/setup.sh)
#
# 1. The same inputs as bench/merge.sh: transformers dequantises SmolLM2-135M-Instruct and writes
#    base + 4 copies with seeded noise (std 0.002) as safetensors (shared with the merge bench).
# 2. One mergekit-moe YAML (gate_mode hidden, two prompts per expert, top-2, float32) through
#    `clreg local mix` and `mergekit-moe` (CPU): wall time and peak RSS (/usr/bin/time -v),
#    RUNS rounds (default 3) of clreg cold, clreg warm and mergekit-moe; medians and ratios.
# 3. Greedy generation with `clreg local generate` on the mixture and on the base: time per
#    token from the difference of a 136-token and an 8-token run (load and prefill cancel out;
#    the fastest of three runs each).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${1:-$HOME/.cache/clreg-peers}
PY=$PEERS/venv/bin/python
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-cli
CLREG=$CARGO_TARGET_DIR/release/clreg
W=${CLREG_BENCH_DIR:-/tmp/clreg-merge-bench}
mkdir -p "$W"
if [ ! -f "$W/ft4/model.safetensors" ]; then
  "$PEERS/venv/bin/pip" install -q gguf >/dev/null 2>&1 || true
  "$PY" bench/perturbed_copies.py "$PEERS/smollm2" "$W"
fi
cat > "$W/moe.yml" <<YML
base_model: $W/base
gate_mode: hidden
dtype: float32
experts_per_token: 2
experts:
  - source_model: $W/ft1
    positive_prompts: ["Solve the equation 3x + 5 = 20.", "What is 17 times 23?"]
  - source_model: $W/ft2
    positive_prompts: ["Write a Python function that reverses a list.", "def fibonacci(n):"]
  - source_model: $W/ft3
    positive_prompts: ["Summarise the meeting minutes below.", "The council discussed the budget."]
  - source_model: $W/ft4
    positive_prompts: ["Translate into German: good morning", "Simplify this sentence for a child."]
YML
cat "$W"/*/model.safetensors > /dev/null
run() { # name cmd... -> "wall rss_mib"
  local log=$W/$1.time; shift
  sync; sleep 2 # the previous run's writeback must not slow this one
  /usr/bin/time -v "$@" >/dev/null 2>"$log" || { cat "$log" >&2; return 1; }
  echo "$(grep 'Elapsed (wall' "$log" | awk '{print $NF}') $(grep 'Maximum resident' "$log" | awk '{printf "%.0f", $NF/1024}')"
}
secs() { echo "$1" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }'; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# Cold: an empty digest cache, so clreg hashes every input for the record. Warm: the same mix
# again, the inputs' digests known (as for models pulled from the registry or used before).
# RUNS rounds (default 3) of cold, warm and mergekit-moe in turn; medians and their ratios.
export CLREG_CACHE_DIR=$W/digest-cache
RUNS=${RUNS:-3}
cold=() warm=() mk=() peaks=()
for r in $(seq "$RUNS"); do
  rm -rf "$W/moe-clreg" "$W/moe-clreg-warm" "$W/moe-mk" "$CLREG_CACHE_DIR"
  c=$(run moe-clreg "$CLREG" -q local mix --config "$W/moe.yml" -o "$W/moe-clreg")
  cw=$(run moe-clreg-warm "$CLREG" -q local mix --config "$W/moe.yml" -o "$W/moe-clreg-warm")
  k=$(run moe-mk "$PEERS/venv/bin/mergekit-moe" "$W/moe.yml" "$W/moe-mk" --device cpu --no-cuda --copy-tokenizer --quiet)
  cold+=("$(secs "${c% *}")") warm+=("$(secs "${cw% *}")") mk+=("$(secs "${k% *}")")
  peaks+=("${c#* } ${cw#* } ${k#* }")
done
rm -rf "$W/moe-clreg-warm"
cs=$(printf '%s\n' "${cold[@]}" | median); cws=$(printf '%s\n' "${warm[@]}" | median)
ks=$(printf '%s\n' "${mk[@]}" | median)
c_peak=$(printf '%s\n' "${peaks[@]}" | awk '{print $1; print $2}' | sort -n | tail -1)
k_peak=$(printf '%s\n' "${peaks[@]}" | awk '{print $3}' | sort -n | tail -1)
echo "mix (medians of $RUNS): clreg cold ${cs} s (runs: ${cold[*]}), warm digests ${cws} s (runs: ${warm[*]}), peak ${c_peak} MiB"
echo "  mergekit-moe ${ks} s (runs: ${mk[*]}), peak ${k_peak} MiB;  speed-up cold $(echo "scale=1; $ks / $cs" | bc)x, warm $(echo "scale=1; $ks / $cws" | bc)x"
"$PY" - "$W/moe-clreg" "$W/moe-mk" <<'PY'
import sys, glob, json
from safetensors.torch import load_file
def load(d):
    t = {}
    for f in glob.glob(f"{d}/*.safetensors"): t.update(load_file(f))
    return t
a, b = load(sys.argv[1]), load(sys.argv[2])
rec = json.load(open(f"{sys.argv[1]}/clreg_mix.json"))
print("clreg parameters:", rec["parameters"], "condition numbers:", rec["router"]["condition_numbers"][:3], "...")
# mergekit-moe writes transformers 5's fused expert layout; compare what both name alike.
common = set(a) & set(b)
d = max((a[k].float() - b[k].float()).abs().max().item() for k in common) if common else float("nan")
print(f"tensors: clreg {len(a)}, mergekit {len(b)}, same name {len(common)}, max|diff| on those {d:.3g}")
PY
tok_time() { # model tokens -> seconds (from the JSON)
  "$CLREG" --json -q local generate "$1" --prompt "Once upon a time, in a land far away," --max-tokens "$2" \
    | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["seconds"], d["tokens"])'
}
per_token() { # the fastest of 3 runs at 8 and at 136 tokens (other processes share the cores)
  local a b
  a=$(for _ in 1 2 3; do tok_time "$1" 8; done | sort -n | head -1)
  b=$(for _ in 1 2 3; do tok_time "$1" 136; done | sort -n | head -1)
  echo "$a $b" | awk '{ printf "%.1f ms/token (%d vs %d tokens)", ($3 - $1) / ($4 - $2) * 1000, $4, $2 }'
}
pm=$(per_token "$W/moe-clreg"); pb=$(per_token "$W/base")
echo "generation: top-2 mixture $pm, dense base $pb"
echo "$pm $pb" | awk '{ printf "mixture / base time per token: %.2f\n", $1 / $7 }'
