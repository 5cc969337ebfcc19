#!/usr/bin/env bash
# Eight clients push the same ~500 MB artifact at once to one server (SQLite + local store):
#
#   bench/push_same.sh [CLIENTS]       # default 8
#
# Each client is its own `clreg push` process with its own digest cache, logged in as the same
# user. Checks that every client succeeds, that one artifact version exists, and that the store
# holds each file's bytes once; prints the wall time, what the server stored and its peak RSS.
# Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-server -p clreg-cli
BIN=$CARGO_TARGET_DIR/release
CLIENTS=${1:-8}
work=$(mktemp -d /tmp/clreg-bench.XXXXXX)
server_pid=""
trap '[ -z "$server_pid" ] || kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export CLREG_CONFIG_DIR=$work/config CLREG_DATA_DIR=$work/data
# A ~495 MB seeded Llama-layout model (f32).
"$BIN/clreg" local tiny -o "$work/art" --seed 1 --hidden 1536 --intermediate 2048 --layers 2 \
  --heads 12 --kv-heads 12 --vocab 28000 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/clreg-server" serve --addr 127.0.0.1:$port >/dev/null 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
key=$("$BIN/clreg-server" admin create-user bench 2>/dev/null)
"$BIN/clreg" login --server "http://127.0.0.1:$port" --api-key "$key" >/dev/null
"$BIN/clreg" collab create bench --policy semi >/dev/null
size=$(du -sb "$work/art" | cut -f1)
sync; cat "$work/art"/* >/dev/null

start=$(date +%s.%N)
pids=()
for i in $(seq "$CLIENTS"); do
  CLREG_CACHE_DIR=$work/cache-$i "$BIN/clreg" -q push "$work/art" --collab bench --name same \
    >"$work/push-$i.out" 2>"$work/push-$i.err" &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { failed=$((failed + 1)); cat "$work/push-$((i + 1)).err" >&2; }
done
end=$(date +%s.%N)

versions=$("$BIN/clreg" --json ls --collab bench | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
stored=$(find "$work/data/store/blobs" -type f | wc -l)
stored_bytes=$(du -sb "$work/data/store/blobs" | cut -f1)
files=$(find "$work/art" -type f | wc -l)
left=$(find "$work/data/store/uploads" -type f 2>/dev/null | wc -l)
rss=$(grep -s VmHWM /proc/$server_pid/status | awk '{print $2/1024 " MiB"}')
printf '%s clients pushed %s bytes each in %.2f s; failed: %s\n' "$CLIENTS" "$size" "$(echo "$end - $start" | bc)" "$failed"
printf 'artifact versions: %s   blobs stored: %s of %s files (%s bytes)   chunks left: %s   server peak RSS: %s\n' \
  "$versions" "$stored" "$files" "$stored_bytes" "$left" "$rss"
[ "$failed" = 0 ] && [ "$versions" = 1 ] && [ "$stored" = "$files" ] && [ "$left" = 0 ]
