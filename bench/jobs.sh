#!/usr/bin/env bash
# Job overhead and queue throughput, release build, on this machine.
#
#   bench/jobs.sh            # results on stdout; work files under $CLREG_BENCH_DIR (/tmp/clreg-jobs-bench)
#
# 1. Five models of SmolLM2-135M's shape (hidden 576, 30 layers, 9/3 heads, vocab 49152, tied,
#    f32, 540 MB each; seeded random weights: a merge's cost depends on sizes, not values),
#    pushed to a fresh server (SQLite + local store, one worker).
# 2. A linear merge of four of them: `clreg local merge` on the files vs `clreg merge --wait` on
#    the registry references (submit → claim → stage → child process → upload → commit →
#    seen by the polling client). Three runs each, alternating; the first server run stages
#    the inputs (hard links), later ones find them staged.
# 3. Queue throughput: 200 merge jobs of three tiny models, drained by 2 workers (jobs/s).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-cli -p clreg-server
BIN=$CARGO_TARGET_DIR/release
W=${CLREG_BENCH_DIR:-/tmp/clreg-jobs-bench}
rm -rf "$W/data" "$W/home" "$W/local-"*
mkdir -p "$W/home"
export CLREG_CONFIG_DIR=$W/home/config CLREG_CACHE_DIR=$W/home/cache NO_COLOR=1
clreg() { "$BIN/clreg" "$@"; }
smollm2_shape=(--hidden 576 --intermediate 1536 --layers 30 --heads 9 --kv-heads 3 --vocab 49152 --tie)
for i in 0 1 2 3 4; do
  [ -f "$W/m$i/model.safetensors" ] || clreg local tiny -o "$W/m$i" --seed "$i" "${smollm2_shape[@]}" >/dev/null
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CLREG_DATA_DIR=$W/data "$BIN/clreg-server" serve --addr "127.0.0.1:$port" 2>"$W/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
key=$(CLREG_DATA_DIR=$W/data "$BIN/clreg-server" admin create-user bench 2>/dev/null)
clreg login --server "http://127.0.0.1:$port" --api-key "$key" >/dev/null
clreg collab create bench --policy semi >/dev/null
clreg push "$W/m0" --collab bench --name base >/dev/null
for i in 1 2 3 4; do
  clreg push "$W/m$i" --collab bench --name "ft$i" --kind checkpoint --base bench/base >/dev/null
done
{
  echo "merge_method: linear"; echo "models:"
  for i in 1 2 3 4; do echo "  - model: @$i"; echo "    parameters: {weight: 1.0}"; done
  echo "dtype: float32"
} > "$W/template.yml"
sed "s#@\([0-9]\)#$W/m\1#" "$W/template.yml" > "$W/local.yml"
sed "s#@\([0-9]\)#bench/ft\1#" "$W/template.yml" > "$W/remote.yml"
now() { date +%s.%N; }
ready() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done; exit 1; }
echo "linear merge of 4 × 540 MB (SmolLM2-135M shape, f32)"
for run in 1 2 3; do
  sync; sleep 1
  t0=$(now); clreg local merge --config "$W/local.yml" -o "$W/local-$run" >/dev/null; t1=$(now)
  rm -rf "$W/local-$run"
  sync; sleep 1
  t2=$(now); clreg merge --collab bench --config "$W/remote.yml" --name merged --wait >/dev/null; t3=$(now)
  python3 -c "l=$t1-$t0; j=$t3-$t2; print(f'  run $run: local {l:.2f} s, job {j:.2f} s, job/local {j/l:.2f}')"
done

echo "queue: 200 merge jobs of three tiny models, 2 workers"
for i in 0 1 2; do
  [ -f "$W/t$i/model.safetensors" ] || clreg local tiny -o "$W/t$i" --seed "$i" >/dev/null
done
clreg push "$W/t0" --collab bench --name tbase >/dev/null
clreg push "$W/t1" --collab bench --name ta --kind checkpoint --base bench/tbase >/dev/null
clreg push "$W/t2" --collab bench --name tb --kind checkpoint --base bench/tbase >/dev/null
printf 'merge_method: linear\nmodels:\n  - model: bench/ta\n    parameters: {weight: 1.0}\n  - model: bench/tb\n    parameters: {weight: 1.0}\n' > "$W/tiny.yml"
kill $server; wait $server 2>/dev/null || true
# Queue first with no worker, then start a server with two and time the drain.
CLREG_WORKERS=0 CLREG_DATA_DIR=$W/data "$BIN/clreg-server" serve --addr "127.0.0.1:$port" 2>>"$W/server.log" &
server=$!
ready
for j in $(seq 1 200); do
  clreg --json merge --collab bench --config "$W/tiny.yml" --name "q$j" > /dev/null
done
kill $server; wait $server 2>/dev/null || true
t0=$(now)
CLREG_WORKERS=2 CLREG_DATA_DIR=$W/data "$BIN/clreg-server" serve --addr "127.0.0.1:$port" 2>>"$W/server.log" &
server=$!
ready
while :; do
  left=$(clreg --json jobs ls --collab bench | python3 -c 'import json,sys; print(sum(j["state"] in ("queued","running") for j in json.load(sys.stdin)))')
  [ "$left" = 0 ] && break
  sleep 0.2
done
t1=$(now)
failed=$(clreg --json jobs ls --collab bench | python3 -c 'import json,sys; print(sum(j["state"]!="succeeded" for j in json.load(sys.stdin)))')
python3 -c "d=$t1-$t0; print(f'  200 jobs drained in {d:.1f} s (server start included): {200/d:.1f} jobs/s ({$failed} not succeeded)')"
