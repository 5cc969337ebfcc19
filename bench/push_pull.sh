#!/usr/bin/env bash
# Push/pull throughput of a ~1 GB artifact over loopback, against `openssl dgst -sha256` on the
# same file (the floor: one hashing pass with the CPU's SHA instructions).
#
#   bench/push_pull.sh
#
# Builds release binaries, starts a server on a temporary data dir (SQLite + local store), and
# prints wall times and ratios. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-server -p clreg-cli
BIN=$CARGO_TARGET_DIR/release
work=$(mktemp -d /tmp/clreg-bench.XXXXXX)
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
export CLREG_CONFIG_DIR=$work/config CLREG_CACHE_DIR=$work/cache CLREG_DATA_DIR=$work/data
# A ~1.1 GB seeded Llama-layout base model (3 layers of hidden 2048, vocabulary 32000, f32).
"$BIN/clreg" local tiny -o "$work/art" --seed 1 --hidden 2048 --intermediate 5632 --layers 3 \
  --heads 16 --kv-heads 16 --vocab 32000 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/clreg-server" serve --addr 127.0.0.1:$port 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
key=$("$BIN/clreg-server" admin create-user bench 2>/dev/null)
"$BIN/clreg" login --server "http://127.0.0.1:$port" --api-key "$key" >/dev/null
"$BIN/clreg" collab create bench --policy semi >/dev/null
sync; cat "$work/art/model.safetensors" >/dev/null   # page cache warm for every contender

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
openssl_s=$(t openssl dgst -sha256 "$work/art/model.safetensors")
sha256sum_s=$(t sha256sum "$work/art/model.safetensors")
push1_s=$(t "$BIN/clreg" -q push "$work/art" --collab bench --name big)
push2_s=$(t "$BIN/clreg" -q push "$work/art" --collab bench --name big)
rm -rf "$work/cache"   # a second push with no digest cache still sends nothing (re-hash + HEAD)
push3_s=$(t "$BIN/clreg" -q push "$work/art" --collab bench --name big)   # re-sends: see README
pull_s=$(t "$BIN/clreg" -q pull bench/big -o "$work/pulled")
cmp "$work/art/model.safetensors" "$work/pulled/model.safetensors"
rss=$(grep -s VmHWM /proc/$server_pid/status | awk '{print $2/1024 " MiB"}')
printf '%-34s %8s s\n' "openssl dgst -sha256" "$openssl_s" "sha256sum" "$sha256sum_s" \
  "clreg push (cold)" "$push1_s" "clreg push (again, digest cache)" "$push2_s" \
  "clreg push (again, no cache)" "$push3_s" "clreg pull (verify every digest)" "$pull_s"
echo "push speed vs openssl: $(echo "scale=2; $openssl_s / $push1_s" | bc)x   pull: $(echo "scale=2; $openssl_s / $pull_s" | bc)x   server peak RSS: $rss"
