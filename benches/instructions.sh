#!/usr/bin/env bash
# Instruction counts (valgrind's callgrind: deterministic, unlike time on a shared 2-core VM) for
# the figures in docs/performance.md:
#   ingest  the whole server taking 48 POSTs of 1,000 events (batch receipts), per event;
#   export  a SOC 2 export of a fresh 100,000-event ledger, per row;
#   verify  `ledger verify` of that bundle, per row.
# Each writes its callgrind file to the work dir, for `callgrind_annotate`.
# Usage: benches/instructions.sh [BIN, default target/release/ledger] [work dir, default a temp dir]
# Compare two builds by running it once per binary (about 4 minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -q
  bin=target/release/ledger
fi
bin=$(realpath "$bin")
work=${2:-$(mktemp -d -p .)}
mkdir -p "$work"
work=$(realpath "$work")
port=18093
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; true' EXIT

serve() { # data dir, then the command prefix to run the server under
  local dir=$1; shift
  "$@" "$bin" serve --data-dir "$dir" --listen 127.0.0.1:$port --source-rate 0 >"$dir.log" 2>&1 &
  server=$!
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && return; sleep 0.2; done
  echo "server did not start: $dir.log" >&2
  exit 1
}
load() { # data dir's token, events
  "$bin" bench --server http://127.0.0.1:$port --token "$1" --mode array --batch 1000 \
    --connections 4 --receipts batch --events "$2" --duration 3600 --no-floor --json >/dev/null
}
stop() { kill -INT $server; wait $server || true; server=; }
total() { callgrind_annotate "$1" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | tr -d ',' | awk '{print $1}'; }
report() { # label, callgrind file, units
  printf '%-7s %15s instructions, %8d per %s\n' "$1" "$(total "$2")" $(($(total "$2") / $3)) "$4"
}

# Ingest: the server under callgrind from start to stop (start-up and the final flush included).
rm -rf "$work/ingest"
token=$("$bin" sources add bench --data-dir "$work/ingest" | tail -n 1)
serve "$work/ingest" valgrind --tool=callgrind --callgrind-out-file="$work/cg.ingest"
load "$token" 48000
stop
report ingest "$work/cg.ingest" 48000 event

# A 100,000-event ledger to export, written at full speed.
rm -rf "$work/ledger"
token=$("$bin" sources add bench --data-dir "$work/ledger" | tail -n 1)
serve "$work/ledger"
load "$token" 100000
curl -sf http://127.0.0.1:$port/v1/verifier-key >"$work/ledger.pub"
stop
rm -rf "$work/bundle"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.export" "$bin" export --framework soc2 \
  --from 2000-01-01T00:00:00Z --to 2100-01-01T00:00:00Z --data-dir "$work/ledger" \
  --out "$work/bundle" >/dev/null 2>&1
report export "$work/cg.export" 100000 row
valgrind --tool=callgrind --callgrind-out-file="$work/cg.verify" "$bin" verify "$work/bundle" \
  --key-file "$work/ledger.pub" >/dev/null 2>&1
report verify "$work/cg.verify" 100000 row
echo "work dir: $work (remove when done)"
