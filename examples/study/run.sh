#!/usr/bin/env bash
# The study in miniature, through the registry: every method of "Collaboratively adding new
# knowledge to an LLM" on SmolLM2-135M-Instruct and the synthetic mini-TRACE suite, run as jobs
# on a clreg server (pushes, policy gates, train/merge/mix/eval jobs, round series), then the
# report (docs/study.md and its charts) written from what the registry holds, as its auditor.
#
#   examples/study/run.sh [WORK_DIR]          (default: ~/.cache/clreg-study)
#
# Needs the model: ../shared/peers/setup.sh (or GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf)
# and the network for one `pip download` of lm-eval (old-knowledge questions). MODEL=tiny runs
# the same protocol on a seeded byte-level model in a few minutes (a smoke test; its numbers
# mean nothing).
#
# Resumable: run it again after an interruption; the registry (WORK_DIR/registry) keeps every
# artifact, evaluation and series, and the script skips what is there. The server it starts
# stays up at the end, with the web UI on this study (the URL and the auditor's key are
# printed); later, serve the same registry with
#   CLREG_DATA_DIR=WORK_DIR/registry clreg-server serve --addr 127.0.0.1:$PORT
#
# Settings (environment; the same for every method unless the method says otherwise):
#   TASKS      tasks in training order          (cstance fomc meetingbank py150 scienceqa)
#   TRAIN      training examples per task       (64)        TEST  test examples per task (16)
#   STEPS      optimizer steps per task         (16)        BATCH examples per step     (4)
#   LORA_LR    LoRA / O-LoRA learning rate      (1e-3)      FFT_LR full fine-tuning     (5e-5)
#   RANK       LoRA rank (alpha = 2·rank)       (8)         MAX_LEN tokens per example  (128)
#   SEED       seed of data, init and order     (1)         MMLU  old-knowledge questions (60)
#   ROUTER_STEPS router training steps          (40)        PORT  server port          (8377)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
W=${1:-$HOME/.cache/clreg-study}
MODEL=${MODEL:-smollm2}
GGUF=${GGUF:-$HOME/.cache/clreg-peers/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
read -r -a TASKS <<< "${TASKS:-cstance fomc meetingbank py150 scienceqa}"
TRAIN=${TRAIN:-64} TEST=${TEST:-16} STEPS=${STEPS:-16} BATCH=${BATCH:-4}
LORA_LR=${LORA_LR:-1e-3} FFT_LR=${FFT_LR:-5e-5} RANK=${RANK:-8} MAX_LEN=${MAX_LEN:-128}
SEED=${SEED:-1} MMLU=${MMLU:-60} ROUTER_STEPS=${ROUTER_STEPS:-40} PORT=${PORT:-8377}
N=${#TASKS[@]}
SEMI=study-semi FULL=study-full
mkdir -p "$W"/{keys,data,logs}
log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$W/logs/study.log" >&2; }

# ---------------------------------------------------------------- binaries and the server
PROFILE=${PROFILE:-release}   # PROFILE=debug uses the test build's binaries (smoke runs)
[ -n "${CLREG_EXAMPLE_NO_BUILD:-}" ] || [ "$PROFILE" != release ] ||
  cargo build -q --release -p clreg-cli -p clreg-server
CLREG=$CARGO_TARGET_DIR/$PROFILE/clreg
SERVER=$CARGO_TARGET_DIR/$PROFILE/clreg-server
export CLREG_SERVER=http://127.0.0.1:$PORT CLREG_DATA_DIR=$W/registry
export CLREG_CACHE_DIR=$W/cli-cache
if ! curl -sf "$CLREG_SERVER/healthz" >/dev/null 2>&1; then
  log "starting clreg-server on $CLREG_SERVER (data: $CLREG_DATA_DIR)"
  # One worker: jobs run one at a time, each with both cores.
  CLREG_WORKERS=1 nohup "$SERVER" serve --addr "127.0.0.1:$PORT" >>"$W/logs/server.log" 2>&1 &
  for _ in $(seq 100); do curl -sf "$CLREG_SERVER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "$CLREG_SERVER/healthz" >/dev/null || { echo "the server did not start: $W/logs/server.log" >&2; exit 1; }
fi

# A key per user, made once (clreg-server admin writes to the same database).
key() {
  [ -s "$W/keys/$1" ] || "$SERVER" admin create-user "$1" > "$W/keys/$1" 2>/dev/null ||
    "$SERVER" admin create-key "$1" > "$W/keys/$1"
  tail -n 1 "$W/keys/$1"
}
OWNER=study-owner AUDITOR=study-auditor
ORGS=(); for i in $(seq "$N"); do ORGS+=("org$i"); done
# Each user logs in once, into a config directory of their own.
as() { local u=$1; shift; CLREG_CONFIG_DIR=$W/cli-config/$u "$CLREG" --quiet "$@"; }
for u in "$OWNER" "$AUDITOR" "${ORGS[@]}"; do
  as "$u" whoami >/dev/null 2>&1 || as "$u" login --server "$CLREG_SERVER" --api-key "$(key "$u")" >/dev/null
done
has() { as "$OWNER" show "$1/$2" >/dev/null 2>&1; }   # COLLAB NAME: does the artifact exist?

# ---------------------------------------------------------------- model and data (local)
if [ ! -f "$W/data/base/config.json" ]; then
  rm -rf "$W/data/base"
  if [ "$MODEL" = tiny ]; then
    "$CLREG" --quiet local tiny -o "$W/data/base" --seed 1 --tokenizer bytes --hidden 128 \
      --intermediate 256 --layers 2
  else
    [ -f "$GGUF" ] || { echo "no $GGUF: run ../shared/peers/setup.sh (or set GGUF)" >&2; exit 1; }
    "$CLREG" --quiet local import-gguf "$GGUF" -o "$W/data/base" --dtype f32
  fi
fi
S=$W/data/suite
[ -f "$S/suite.json" ] || "$CLREG" --quiet local synth -o "$S" --seed "$SEED" --train "$TRAIN" \
  --eval 8 --test "$TEST"
[ -f "$W/data/old/mmlu/test.json" ] || python3 "$REPO/examples/study/old_knowledge.py" "$W/data/old"
python3 - "$S" "$W/data" "$MMLU" "${TASKS[@]}" <<'PY'
# The evaluation sets (the first MMLU questions of the shuffled file), and the routers'
# calibration set: each task's eval split (never its test split).
import json, sys, pathlib
suite, out, mmlu, tasks = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
q = json.loads((out / "old/mmlu/test.json").read_text())[:mmlu]
(out / "mmlu.json").write_text(json.dumps(q))
calib = [e for t in tasks for e in json.loads((suite / t / "eval.json").read_text())]
(out / "calibration.json").write_text(json.dumps(calib))
PY
metric() { python3 -c "import json,sys; print({t['name']: t['metric'] for t in json.load(open('$S/suite.json'))['tasks']}['$1'])"; }

# ---------------------------------------------------------------- collaborations
for c in "$SEMI" "$FULL"; do
  policy=semi; [ "$c" = "$FULL" ] && policy=full
  if ! as "$OWNER" collab show "$c" >/dev/null 2>&1; then
    log "collaboration $c ($policy)"
    as "$OWNER" collab create "$c" --policy "$policy"
    for o in "${ORGS[@]}"; do as "$OWNER" collab add-member "$c" "$o" --role contributor; done
    as "$OWNER" collab add-member "$c" "$AUDITOR" --role auditor
  fi
  has "$c" base || { log "push base to $c"; as "$OWNER" push "$W/data/base" --collab "$c" --name base; }
done

# Datasets. semi: manifests only, each train set registered by the org that trains on it,
# the test and old-knowledge sets and the calibration set by the owner; the data travels with
# each job and is deleted when the job ends. full: the same sets, stored.
register() { # USER COLLAB FILE TASK METRIC NAME [--manifest-only] → digest
  local u=$1 c=$2 f=$3 t=$4 m=$5 name=$6; shift 6
  as "$u" --json dataset push "$f" --collab "$c" --task "$t" --metric "$m" --name "$name" "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])' 2>/dev/null ||
    python3 -c "import hashlib; print('sha256:' + hashlib.sha256(open('$f','rb').read()).hexdigest())"
}
declare -A DIGEST
for i in "${!TASKS[@]}"; do
  t=${TASKS[$i]} org=${ORGS[$i]}
  register "$org" "$SEMI" "$S/$t/train.json" "$t" "$(metric "$t")" "$t-train" --manifest-only >/dev/null
  DIGEST[$t]=$(register "$org" "$FULL" "$S/$t/train.json" "$t" "$(metric "$t")" "$t-train")
  for c in "$SEMI" "$FULL"; do
    register "$OWNER" "$c" "$S/$t/test.json" "$t" "$(metric "$t")" "$t-test" --manifest-only >/dev/null
  done
done
for c in "$SEMI" "$FULL"; do
  register "$OWNER" "$c" "$S/facts/test.json" facts mc facts-test --manifest-only >/dev/null
  register "$OWNER" "$c" "$W/data/mmlu.json" mmlu mc mmlu-dev --manifest-only >/dev/null
done
register "$OWNER" "$SEMI" "$W/data/calibration.json" calibration exact calibration --manifest-only >/dev/null

# ---------------------------------------------------------------- jobs
COMMON=(--batch-size "$BATCH" --grad-accum 1 --max-len "$MAX_LEN" --r "$RANK"
        --alpha $((2 * RANK)) --lr-schedule constant)
timed() { # NAME COMMAND…: runs it, adds its wall time to the method's total
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - start ))" >> "$W/logs/times"
}

# train USER COLLAB NAME METHOD_KEY [clreg train args…] (TRAIN_SEED overrides SEED)
train() {
  local u=$1 c=$2 name=$3 key=$4; shift 4
  has "$c" "$name" && return
  log "train $c/$name"
  timed "$key" as "$u" train --collab "$c" --name "$name" "${COMMON[@]}" \
    --seed "${TRAIN_SEED:-$SEED}" --max-steps "${TRAIN_STEPS:-$STEPS}" "$@" --wait \
    > "$W/logs/$c-$name.log"
}

# A round series per sequential method, created before its first round; each round is added
# once trained (so the BWT history is snapshotted as the rounds complete).
series_rounds() { as "$OWNER" --json series report "$2" --collab "$1" 2>/dev/null |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)["matrix"]))' 2>/dev/null || echo -1; }
series_add() { # COLLAB PREFIX ROUND
  local c=$1 p=$2 r=$3 have
  have=$(series_rounds "$c" "$p")
  if [ "$have" = -1 ]; then
    as "$OWNER" series create "$p" --collab "$c" --base "$c/base" --tasks "$(IFS=,; echo "${TASKS[*]}")" \
      --description "sequential $p, seed ${TRAIN_SEED:-$SEED}" >/dev/null
    have=0
  fi
  [ "$have" -ge "$r" ] || as "$OWNER" series add "$p" "$c/$p-r$r" --collab "$c" >/dev/null
}

# Sequential methods in semi: round k is trained by org k on task k, on top of round k-1
# (FFT: from its checkpoint; LoRA and O-LoRA: over the earlier adapters).
sequential() { # PREFIX METHOD_ARGS…
  local prefix=$1; shift
  local earlier=() i t from
  for i in "${!TASKS[@]}"; do
    t=${TASKS[$i]} from=$SEMI/base
    [[ $prefix == seq-fft* ]] && [ "$i" -gt 0 ] && from=$SEMI/$prefix-r$i
    train "${ORGS[$i]}" "$SEMI" "$prefix-r$((i + 1))" "$prefix" --base "$from" \
      ${earlier[@]+"${earlier[@]}"} --data "$S/$t/train.json" "$@"
    series_add "$SEMI" "$prefix" $((i + 1))
    [[ $prefix == seq-fft* ]] || earlier+=(--adapter "$SEMI/$prefix-r$((i + 1))")
  done
}
sequential seq-lora --method lora --lr "$LORA_LR"
sequential seq-fft --method fft --lr "$FFT_LR"
sequential olora-0.5 --method olora --lambda 0.5 --lr "$LORA_LR"
sequential olora-5 --method olora --lambda 5 --lr "$LORA_LR"
# Variation: the two cheapest methods again with a second seed.
TRAIN_SEED=$((SEED + 1)) sequential seq-lora-s2 --method lora --lr "$LORA_LR"
TRAIN_SEED=$((SEED + 1)) sequential olora-0.5-s2 --method olora --lambda 0.5 --lr "$LORA_LR"

# Independent models, each org on its own task from the base (task 1's are the sequential
# round-1 models: the same job).
IND_LORA=("$SEMI/seq-lora-r1") IND_FFT=("$SEMI/seq-fft-r1")
for i in $(seq 1 $((N - 1))); do
  t=${TASKS[$i]}
  train "${ORGS[$i]}" "$SEMI" "ind-lora-t$((i + 1))" ind-lora --base "$SEMI/base" \
    --data "$S/$t/train.json" --method lora --lr "$LORA_LR"
  train "${ORGS[$i]}" "$SEMI" "ind-fft-t$((i + 1))" ind-fft --base "$SEMI/base" \
    --data "$S/$t/train.json" --method fft --lr "$FFT_LR"
  IND_LORA+=("$SEMI/ind-lora-t$((i + 1))") IND_FFT+=("$SEMI/ind-fft-t$((i + 1))")
done

# Merges of the independent adapters.
merge() { # NAME METHOD DENSITY
  local name=$1 method=$2 density=$3 recipe=$W/data/$1.yml
  has "$SEMI" "$name" && return
  {
    echo "merge_method: $method"; echo "base_model: $SEMI/base"; echo "models:"
    for a in "${IND_LORA[@]}"; do
      echo "  - model: $a"
      if [ "$method" = linear ]; then echo "    parameters: {weight: 1.0}"
      else echo "    parameters: {weight: 1.0, density: $density}"; fi
    done
    echo "dtype: float32"; echo "seed: $SEED"
  } > "$recipe"
  log "merge $SEMI/$name"
  timed "$name" as "$OWNER" merge --collab "$SEMI" --config "$recipe" --name "$name" --wait \
    > "$W/logs/$SEMI-$name.log"
}
merge merge-linear linear 1
merge merge-ties ties 0.5
merge merge-dare dare_ties 0.5

# Mixtures of the independent models: `hidden` routers from two prompts of each task; with
# router training on the calibration set (the tasks' eval splits), carried with the job.
mix() { # NAME lora|fft [--train-router …]
  local name=$1 kind=$2 recipe=$W/data/$1.yml; shift 2
  has "$SEMI" "$name" && return
  local experts=("${IND_FFT[@]}") flag=()
  [ "$kind" = lora ] && experts=("${IND_LORA[@]}") flag=(--lora)
  python3 - "$S" "$SEMI/base" "$SEED" "${TASKS[@]}" -- "${experts[@]}" > "$recipe" <<'PY'
import json, sys
args = sys.argv[1:]; cut = args.index("--")
suite, base, seed, tasks, experts = args[0], args[1], args[2], args[3:cut], args[cut + 1:]
print(f"base_model: {base}\ngate_mode: hidden\nexperts_per_token: 2\nseed: {seed}\nexperts:")
for t, e in zip(tasks, experts):
    prompts = [x["prompt"] for x in json.load(open(f"{suite}/{t}/train.json"))[:2]]
    print(f"  - source_model: {e}\n    positive_prompts: {json.dumps(prompts)}")
PY
  log "mix $SEMI/$name"
  timed "$name" as "$OWNER" mix --collab "$SEMI" --config "$recipe" --name "$name" \
    ${flag[@]+"${flag[@]}"} "$@" --wait > "$W/logs/$SEMI-$name.log"
}
ROUTER=(--train-router "$W/data/calibration.json" --steps "$ROUTER_STEPS")
mix moe-fft fft
mix moe-fft-rt fft "${ROUTER[@]}"
mix moe-lora lora
mix moe-lora-rt lora "${ROUTER[@]}"

# Fully-cooperative: sequential with 10% replay of the stored earlier tasks, and joint training.
replay() { # PREFIX METHOD LR
  local prefix=$1 method=$2 lr=$3 i t earlier=() past=()
  for i in "${!TASKS[@]}"; do
    t=${TASKS[$i]}
    local schedule=(); [ "$i" -gt 0 ] && schedule=(--replay 0.1 --past-dataset "${past[@]}")
    local from=(--base "$FULL/base")
    [ "$method" = fft ] && [ "$i" -gt 0 ] && from=(--base "$FULL/$prefix-r$i")
    train "${ORGS[$i]}" "$FULL" "$prefix-r$((i + 1))" "$prefix" "${from[@]}" \
      ${earlier[@]+"${earlier[@]}"} --dataset "${DIGEST[$t]}" ${schedule[@]+"${schedule[@]}"} \
      --method "$method" --lr "$lr"
    series_add "$FULL" "$prefix" $((i + 1))
    [ "$method" = lora ] && earlier+=(--adapter "$FULL/$prefix-r$((i + 1))")
    past+=("${DIGEST[$t]}")
  done
}
replay rep-lora lora "$LORA_LR"
replay rep-fft fft "$FFT_LR"
ALL_PAST=(); for t in "${TASKS[@]:1}"; do ALL_PAST+=("${DIGEST[$t]}"); done
# Joint: every task's data at once, for as many steps as the sequential rounds together.
JOINT=(--base "$FULL/base" --dataset "${DIGEST[${TASKS[0]}]}" --past-dataset "${ALL_PAST[@]}" --joint)
TRAIN_STEPS=$((STEPS * N)) train "$OWNER" "$FULL" joint-lora joint-lora "${JOINT[@]}" --method lora --lr "$LORA_LR"
TRAIN_STEPS=$((STEPS * N)) train "$OWNER" "$FULL" joint-fft joint-fft "${JOINT[@]}" --method fft --lr "$FFT_LR"

# ---------------------------------------------------------------- evaluations
# Skips a (model, task) pair the collaboration already holds an evaluation of.
scored() { as "$OWNER" --json evaluations --collab "$1" --artifact "$1/$2" 2>/dev/null |
  python3 -c 'import json,sys; print(" ".join(sorted({e["task"] for e in json.load(sys.stdin)})))'; }
evaluate() { # COLLAB NAME new|old|all
  local c=$1 name=$2 which=$3 have args=() t
  have=" $(scored "$c" "$name") "
  if [ "$which" != old ]; then
    for t in "${TASKS[@]}"; do
      [[ $have == *" $t "* ]] || args+=(--task "$t:$(metric "$t"):$S/$t/test.json")
    done
  fi
  if [ "$which" != new ]; then
    [[ $have == *" facts "* ]] || args+=(--task "facts:mc:$S/facts/test.json")
    [[ $have == *" mmlu "* ]] || args+=(--task "mmlu:mc:$W/data/mmlu.json")
  fi
  [ ${#args[@]} -gt 0 ] || return 0
  log "eval $c/$name ($which)"
  timed "eval" as "$OWNER" eval "$c/$name" --collab "$c" "${args[@]}" --wait \
    > "$W/logs/$c-$name-eval.log"
}
for c in "$SEMI" "$FULL"; do evaluate "$c" base all; done
for p in seq-lora seq-fft olora-0.5 olora-5 seq-lora-s2 olora-0.5-s2; do
  for r in $(seq 1 $((N - 1))); do evaluate "$SEMI" "$p-r$r" new; done
  evaluate "$SEMI" "$p-r$N" all
done
for i in $(seq 2 "$N"); do
  evaluate "$SEMI" "ind-lora-t$i" new; evaluate "$SEMI" "ind-fft-t$i" new
done
for m in merge-linear merge-ties merge-dare moe-fft moe-fft-rt moe-lora moe-lora-rt; do
  evaluate "$SEMI" "$m" all
done
for p in rep-lora rep-fft; do
  for r in $(seq 1 $((N - 1))); do evaluate "$FULL" "$p-r$r" new; done
  evaluate "$FULL" "$p-r$N" all
done
for m in joint-lora joint-fft; do evaluate "$FULL" "$m" all; done

# ---------------------------------------------------------------- report
log "report"
CLREG_CONFIG_DIR=$W/cli-config/$AUDITOR python3 "$REPO/examples/study/report.py" --clreg "$CLREG" --semi "$SEMI" --full "$FULL" \
  --tasks "${TASKS[@]}" --times "$W/logs/times" --out "${REPORT:-$REPO/docs/study.md}" --test "$TEST" \
  --settings "model=$MODEL train=$TRAIN test=$TEST steps=$STEPS batch=$BATCH lora_lr=$LORA_LR fft_lr=$FFT_LR rank=$RANK max_len=$MAX_LEN seed=$SEED mmlu=$MMLU router_steps=$ROUTER_STEPS"
for c in "$SEMI" "$FULL"; do as "$AUDITOR" audit verify --collab "$c" >/dev/null; done
log "the ledgers of $SEMI and $FULL verify (clreg audit verify, as the auditor)"
echo "web UI: $CLREG_SERVER/ui/  (auditor key: $(key "$AUDITOR"))"
