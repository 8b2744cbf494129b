#!/usr/bin/env bash
# Sustained batch ingest against a fresh ledger, with where the server's CPU went: the figures of
# docs/performance.md's ingest sections ("Session 14" and later). Runs `BIN serve` on a fresh data
# dir `DIR`, then `BIN bench` (array mode, 1,000 events per POST, batch receipts, CONNS
# connections) for SECONDS, and prints: events/s and p99; the server's CPU per event; CPU by
# thread name (HTTP workers `tokio-rt-worker`, `sequencer`, `committer`, RocksDB's flush
# `rocksdb:high` and compaction `rocksdb:low`); compaction CPU and bytes written per column
# family, from RocksDB's LOG; the server's RSS every 30 s; the data dir's size.
# Usage: benches/sustained.sh BIN DIR SECONDS [CONNS, default 8]   (BIN: e.g. target/release/ledger)
# DIR is deleted first and left behind for inspection (a 10-minute run writes about 20 GB).
set -uo pipefail
BIN=$1; DIR=$2; SECS=$3; CONNS=${4:-8}
rm -rf "$DIR"; mkdir -p "$DIR"
TOKEN=$($BIN sources add bench --data-dir "$DIR" 2>/dev/null | tail -n 1)
$BIN serve --data-dir "$DIR" --listen 127.0.0.1:18090 --source-rate 0 > "$DIR.serve.log" 2>&1 &
PID=$!
for i in $(seq 1 100); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.1; done
( for t in $(seq 30 30 $SECS); do sleep 30; printf "%ss:%sMB " $t $(( $(awk "/VmRSS/ {print \$2}" /proc/$PID/status) / 1024 )); done; echo ) & RP=$!
c0=$(awk '{print $14+$15}' /proc/$PID/stat)
/usr/bin/time -f "  load generator CPU %U user %S sys" $BIN bench --server http://127.0.0.1:18090 --token "$TOKEN" --mode array --batch 1000 --connections $CONNS \
  --receipts batch --events 400000000 --duration $SECS --no-floor --json > "$DIR.bench.json"
c1=$(awk '{print $14+$15}' /proc/$PID/stat)
for t in /proc/$PID/task/*; do echo "$(cat $t/comm) $(awk '{print $14+$15}' $t/stat)"; done | \
  awk '{a[$1]+=$2} END {for (k in a) printf "  %s %.2f s\n", k, a[k]/100}' | sort
kill -INT $PID; wait $PID || true
python3 - "$DIR.bench.json" "$c0" "$c1" <<'PY'
import json,sys
r=json.load(open(sys.argv[1])); cpu=(int(sys.argv[3])-int(sys.argv[2]))/100
print(f"events/s {r['events_per_sec']:.0f} events {r['events']} p99 {r['latency']['p99_ms']} ms; server CPU {cpu:.1f} s = {cpu/r['events']*1e6:.1f} us/event")
PY
python3 - "$DIR/LOG" <<'PY'
import json,re,sys,collections
cpu=collections.Counter(); n=collections.Counter(); wr=collections.Counter(); jobcf={}
for line in open(sys.argv[1]):
    m=re.search(r'EVENT_LOG_v1 (\{.*\})',line)
    if not m: continue
    e=json.loads(m.group(1))
    if e.get('event')=='compaction_started': jobcf[e['job']]=e.get('cf_name','?')
    if e.get('event')=='compaction_finished':
        cf=jobcf.get(e['job'],'?'); cpu[cf]+=e.get('compaction_time_cpu_micros',0)/1e6; n[cf]+=1; wr[cf]+=e.get('total_output_size',0)
for cf in sorted(cpu): print(f"  compaction {cf}: {n[cf]} jobs, {cpu[cf]:.2f} s CPU, {wr[cf]/1e6:.0f} MB written")
PY
du -sm "$DIR" | awk '{print "  data dir " $1 " MB"}'
