#!/usr/bin/env bash
# Reproduces the export/verify memory and speed figures in docs/performance.md: a fresh ledger of N
# events (default 1,000,000) written by `ledger bench`, then `ledger export` of the first quarter,
# half and all of it, and `ledger verify` of the whole, each under /usr/bin/time -v.
# Usage: benches/export-memory.sh [events] [work dir, default a temp dir on the same disk]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
work=${2:-$(mktemp -d -p .)}
mkdir -p "$work"
cargo build --release --locked -q
bin=$PWD/target/release/ledger
port=18090
token=$($bin sources add bench --data-dir "$work/data" | tail -n 1)
auditor=$($bin auditors add audit --data-dir "$work/data" | tail -n 1)
$bin serve --data-dir "$work/data" --listen 127.0.0.1:$port 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.1; done
$bin bench --server http://127.0.0.1:$port --token "$token" --mode array --batch 1000 \
  --connections 4 --events "$events" --duration 3600 --no-floor | tail -n 3
# The ingested_at of an entry, to cut periods at a fraction of the log.
at() { curl -sf -H "authorization: Bearer $auditor" http://127.0.0.1:$port/v1/entries/"$1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["ingested_at"])'; }
curl -sf http://127.0.0.1:$port/v1/verifier-key >"$work/pub"
cuts=("$(at $((events / 4)))" "$(at $((events / 2)))" "2100-01-01T00:00:00Z")
kill $server; wait $server || true
trap - EXIT
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" 2>"$work/time.txt" >/dev/null || { cat "$work/time.txt"; exit 1; }
  printf '%-28s wall %-9s max RSS %6d MB\n' "$label" \
    "$(grep -oP 'Elapsed.*: \K.*' "$work/time.txt")" \
    "$(( $(grep -oP 'Maximum resident set size \(kbytes\): \K\d+' "$work/time.txt") / 1024 ))"
}
for i in 0 1 2; do
  rm -rf "$work/bundle$i"
  measure "export to ${cuts[$i]}" $bin export --framework soc2 --from 2000-01-01T00:00:00Z \
    --to "${cuts[$i]}" --out "$work/bundle$i" --data-dir "$work/data"
done
measure "verify (all rows)" $bin verify "$work/bundle2" --key-file "$work/pub"
ls -l "$work/bundle2"
echo "work dir: $work (remove when done)"
