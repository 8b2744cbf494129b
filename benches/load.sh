#!/usr/bin/env bash
# Reproduces the load figures in docs/performance.md: a fresh ledger, one release server, then
# `ledger bench` in each mode, each batch mode again with batch receipts (`?receipts=batch`) and
# once more with 8 connections, then array mode at 10 and 100 events per POST. Each run also
# measures the RocksDB floor in the same run.
# Usage: benches/load.sh [seconds per run, default 20] [BIN, default: build target/release/ledger]
# (give BIN to run an earlier build, e.g. the base of a comparison made in the same hour)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
bin=${2:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -q
  bin=target/release/ledger
fi
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
token=$($bin sources add bench --data-dir "$work/data" | tail -n 1)
# No per-source rate limit: the run measures the server, and one source sends everything (the
# default bucket of 100,000 events/s would answer 429 and stop the bench).
$bin serve --data-dir "$work/data" --listen 127.0.0.1:18080 --source-rate 0 2>"$work/serve.log" &
server=$!
until curl -sf http://127.0.0.1:18080/readyz >/dev/null; do sleep 0.1; done
run() { echo "== ledger bench $*"; $bin bench --server http://127.0.0.1:18080 --token "$token" --floor-dir "$work" --duration "$secs" "$@"; }
run --mode array --batch 1000 --connections 4 --events 4000000
run --mode ndjson --batch 1000 --connections 4 --events 4000000
run --mode array --batch 1000 --connections 4 --events 4000000 --receipts batch
run --mode ndjson --batch 1000 --connections 4 --events 4000000 --receipts batch
# More requests in flight: the server's CPU, not the client's wait, bounds the run.
run --mode array --batch 1000 --connections 8 --events 4000000 --receipts batch
run --mode single --connections 64 --events 1000000
# How the cost grows with batch size (array mode, same connections).
run --mode array --batch 10 --connections 4 --events 1000000
run --mode array --batch 100 --connections 4 --events 4000000
