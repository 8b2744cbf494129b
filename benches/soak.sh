#!/usr/bin/env bash
# Reproduces the sustained-load memory and start-up figures in docs/performance.md: a fresh ledger,
# one release server under `ledger bench` (array mode, 1,000 events per POST) for the given time,
# the server's resident memory sampled every 10 s; then the server is stopped and started again
# on the grown data dir three times, timing each start to its first `/readyz` 200.
# Usage: benches/soak.sh [seconds, default 600] [work dir, default a temp dir beside the checkout]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
work=${2:-$(mktemp -d -p .)}
mkdir -p "$work"
cargo build --release --locked -q
bin=$PWD/target/release/ledger
port=18095
token=$($bin sources add soak --data-dir "$work/data" | tail -n 1)
start_server() {
  $bin serve --data-dir "$work/data" --listen 127.0.0.1:$port 2>>"$work/serve.log" &
  server=$!
}
trap 'kill $server 2>/dev/null || true' EXIT
start_server
until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.1; done
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
$bin bench --server http://127.0.0.1:$port --token "$token" --mode array --batch 1000 \
  --connections 4 --events 100000000 --duration "$secs" --no-floor >"$work/bench.out" &
bench=$!
echo "seconds,rss_mb" >"$work/rss.csv"
t=0
while kill -0 $bench 2>/dev/null; do
  echo "$t,$(( $(rss_kb) / 1024 ))" >>"$work/rss.csv"
  sleep 10
  t=$((t + 10))
done
wait $bench
cat "$work/bench.out"
echo "RSS (MB) at 10 s steps:"
tr '\n' ' ' <"$work/rss.csv"
echo
entries=$(curl -sf http://127.0.0.1:$port/v1/checkpoint | sed -n 2p)
kill $server
wait $server || true
echo "entries: $entries; data dir: $(du -sh "$work/data" | cut -f1)"
for i in 1 2 3; do
  begin=$(date +%s.%N)
  start_server
  until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.01; done
  end=$(date +%s.%N)
  echo "start-up $i: $(echo "$end - $begin" | bc) s to ready with $entries entries"
  kill $server
  wait $server || true
done
trap - EXIT
echo "work dir: $work (remove when done)"
