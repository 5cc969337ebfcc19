#!/usr/bin/env bash
# Sequential full fine-tuning over three synthetic tasks, evaluated after every round, then BWT/FWT/gain:
# the study's protocol end to end on a tiny byte-level model, in about a minute on 2 cores.
#
#   examples/sequential.sh [WORK_DIR]        (default: a fresh temporary directory)
#
# Every step is a plain `clreg local …` call; read the commands to see the workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_EXAMPLE_NO_BUILD:-}" ] || cargo build -q --release -p clreg-cli
CLREG=$CARGO_TARGET_DIR/release/clreg
W=${1:-$(mktemp -d)}
mkdir -p "$W"
cd "$W"
TASKS=(cstance fomc scienceqa)

"$CLREG" local synth -o suite --seed 1 --train 120 --eval 10 --test 30 >/dev/null
"$CLREG" local tiny -o base --seed 1 --tokenizer bytes --hidden 128 --intermediate 256 --layers 2 >/dev/null

score() { # MODEL_ARGS… → one score per task, space-separated
  "$CLREG" --json --quiet local eval "$@" --max-tokens 12 \
    --tasks $(for t in "${TASKS[@]}"; do printf 'suite/%s/test.json:%s ' "$t" \
      "$(python3 -c "import json; print({t['name']: t['metric'] for t in json.load(open('suite/suite.json'))['tasks']}['$t'])")"; done) |
    python3 -c 'import json, sys; print(" ".join(str(r["score"]) for r in json.load(sys.stdin)))'
}

base_scores=$(score base)
echo "base: $base_scores"
# (A LoRA round is the same call with --adapter for the earlier rounds; on this random tiny
# model, whose output layer is small and frozen under LoRA, full fine-tuning learns faster.)
previous=base
rows=()
for i in "${!TASKS[@]}"; do
  t=${TASKS[$i]}
  round=round$((i + 1))
  "$CLREG" --quiet local train --base "$previous" --method fft \
    --data "suite/$t/train.json" --lr 1e-3 --batch-size 8 --grad-accum 1 --epochs 4 --seed $i -o "$round"
  previous=$round
  row=$(score "$round")
  echo "after $round ($t): $row"
  rows+=("[${row// /, }]")
done
python3 - "$base_scores" "${rows[@]}" > matrix.json <<'PY'
import json, sys
base = [float(x) for x in sys.argv[1].split()]
rounds = [json.loads(r) for r in sys.argv[2:]]
print(json.dumps({"tasks": ["cstance", "fomc", "scienceqa"], "rounds": rounds, "base": base}))
PY
"$CLREG" local bwt matrix.json
echo "(work files in $W)"
