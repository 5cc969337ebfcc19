#!/usr/bin/env bash
# Read load on one `serve` process, measured with wrk over loopback (client and server share
# this machine's cores):
#
#   bench/load.sh [sqlite|postgres ...]     # default: both
#
# Seeds a collaboration with 100 artifacts and a 10-deep chain (each a tiny Llama model pushed
# with the CLI; the chain's rounds name the previous round as --parent), then runs wrk for
# 10 s per route with 2 threads and 32 connections, authenticated with one JWT:
#   GET /api/v1/artifacts/{id}                      one artifact
#   GET /api/v1/collaborations/{c}/artifacts        a listing of 100 artifacts
#   GET /api/v1/artifacts/{id}/lineage              the lineage of the chain's last round
# `postgres` starts a throwaway PostgreSQL cluster (fsync off) for the registry's database;
# the store is a local directory either way. Needs wrk (`apt-get install wrk`). Not part of
# the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/clreg-target}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
[ -n "${CLREG_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p clreg-server -p clreg-cli
BIN=$CARGO_TARGET_DIR/release
DURATION=${DURATION:-10s}
[ "$#" -gt 0 ] || set -- sqlite postgres

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

server_pid="" pgdir="" pgbin="" work=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  [ -z "$pgdir" ] || { as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
  [ -z "$work" ] || rm -rf "$work"
  server_pid="" pgdir="" work=""
}
trap cleanup EXIT

run() {
  local backend=$1
  work=$(mktemp -d /tmp/clreg-load.XXXXXX)
  export CLREG_CONFIG_DIR=$work/config CLREG_CACHE_DIR=$work/cache CLREG_DATA_DIR=$work/data
  unset CLREG_DATABASE_URL
  if [ "$backend" = postgres ]; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    pgdir=$(mktemp -d /tmp/clreg-load-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
    local pgport
    pgport=$(free_port)
    as_pg "$pgbin/initdb" -A trust -U postgres -D "$pgdir/data" >/dev/null
    as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
      -o "-F -p $pgport -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null
    export CLREG_DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/postgres"
  fi
  local port base key token
  port=$(free_port)
  base="http://127.0.0.1:$port"
  "$BIN/clreg-server" migrate >/dev/null 2>&1
  "$BIN/clreg-server" serve --addr "127.0.0.1:$port" >/dev/null 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
  key=$("$BIN/clreg-server" admin create-user bench 2>/dev/null)
  "$BIN/clreg" login --server "$base" --api-key "$key" >/dev/null
  "$BIN/clreg" collab create list --policy semi >/dev/null
  "$BIN/clreg" collab create chain --policy semi >/dev/null
  "$BIN/clreg" local tiny -o "$work/m" --seed 1 --hidden 16 --intermediate 32 --layers 1 \
    --heads 2 --kv-heads 2 --vocab 64 >/dev/null
  echo "seeding $backend: 100 artifacts and a 10-round chain ..." >&2
  local i one last
  for i in $(seq 100); do
    "$BIN/clreg" -q push "$work/m" --collab list --name "a$i" >/dev/null
  done
  one=$("$BIN/clreg" --json show list/a1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["artifact"]["id"])')
  "$BIN/clreg" -q push "$work/m" --collab chain --name r0 >/dev/null
  for i in $(seq 1 10); do
    "$BIN/clreg" -q push "$work/m" --collab chain --name "r$i" --parent "chain/r$((i - 1))" \
      --relation finetune --method fft >/dev/null
  done
  last=$("$BIN/clreg" --json show chain/r10 | python3 -c 'import json,sys; print(json.load(sys.stdin)["artifact"]["id"])')
  token=$(curl -sf "$base/api/v1/auth/token" -H 'content-type: application/json' \
    -d "{\"api_key\": \"$key\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  # Each route must answer 200 before it is measured.
  local name path rps p50 p99
  for spec in "artifact:/api/v1/artifacts/$one" \
    "listing (100):/api/v1/collaborations/list/artifacts" \
    "lineage (10 deep):/api/v1/artifacts/$last/lineage"; do
    name=${spec%%:*}
    path=${spec#*:}
    curl -sf -o /dev/null -H "Authorization: Bearer $token" "$base$path"
    wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $token" "$base$path" \
      >"$work/wrk.txt"
    if grep -q "Non-2xx" "$work/wrk.txt"; then
      cat "$work/wrk.txt" >&2
      echo "$name: some requests failed" >&2
      return 1
    fi
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
    printf '%-9s %-20s %10s req/s   p50 %8s   p99 %8s\n' "$backend" "$name" "$rps" "$p50" "$p99"
  done
  cleanup
}

for backend in "$@"; do
  run "$backend"
done
