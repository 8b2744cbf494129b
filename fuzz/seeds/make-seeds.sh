#!/usr/bin/env bash
# Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/ (fuzz/run.sh --cmin then
# minimizes them). Run once by hand when a format changes; CI never runs it.
#
#   fuzz/seeds/make-seeds.sh [path/to/ledger]
#
# - event: the test suite's event shapes, a batch, a signed envelope, and a few invalid ones.
# - jcs:   those events in canonical form, and a leaf around each.
# - note:  tests/vectors/signed-note, the seed bundles' checkpoints, key texts.
# - proof: tests/vectors (RFC 6962 SHA-256 and BLAKE3 tree8) in the proof target's binary form,
#          and a few trees to build.
# - rows, bundle: two tiny real bundles (SOC 2 with --since, FedRAMP) exported from a fresh ledger
#          served with fuzz/seeds/ledger.key, a source that signs with fuzz/seeds/origin.key and
#          one that does not: three batches a second apart, the period the middle one. Each also
#          with its Parquet files rewritten uncompressed (fuzz/examples/reencode.rs).
#
# fuzz/seeds/*.key are test keys for these seeds only (fuzz/fuzz_targets/bundle.rs verifies with
# ledger.pub). Needs the `ledger` binary (default: $CARGO_TARGET_DIR or target, debug), cargo,
# curl, and python3 with the `cryptography` package (to sign the origin-signed events).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seeds=$root/fuzz/seeds
corpus=$root/fuzz/corpus
ledger=${1:-${CARGO_TARGET_DIR:-target}/debug/ledger}
[ -x "$ledger" ] || { echo "make-seeds: no ledger binary at $ledger (cargo build first)" >&2; exit 2; }

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    wait "$pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$corpus"/{event,note,proof,rows,bundle,jcs}

# --- a ledger with two sources, one of which signs ---------------------------------------------
data=$work/data
# git keeps no 0600: private copies of the test keys.
install -m 600 "$seeds/ledger.key" "$work/ledger.key"
plain=$("$ledger" sources add gateway --data-dir "$data" | tail -n 1)
signer=$("$ledger" sources add edge-1 --data-dir "$data" --origin-key "$seeds/origin.pub" | tail -n 1)
"$ledger" serve --data-dir "$data" --key "$work/ledger.key" --listen 127.0.0.1:0 \
  2>"$work/server.log" &
pid=$!
addr=""
for _ in $(seq 600); do
  addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/server.log")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 2; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "make-seeds: the server did not start" >&2; exit 2; }
base="http://$addr"

# Events of three requests; `signed` wraps each in an origin-signature envelope.
python3 - "$work" "$seeds/origin.key" <<'EOF'
import base64, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

work, key_file = sys.argv[1], sys.argv[2]
_, _, name, key_id, seed = open(key_file).read().strip().split("+", 4)
key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)[1:])

def ev(i, kind, req, at, **extra):
    e = {"event_id": f"evt-{i}", "type": kind, "request_id": req, "occurred_at": at,
         "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
         "action": {"name": "grant admin", "category": "privilege_escalation", "risk": "critical"},
         "resource": {"id": "iam://prod/role/admin", "environment": "prod"}}
    e.update(extra)
    return e

def signed(e):
    # RFC 8785 for these events (ASCII strings, no numbers): sorted keys, no whitespace.
    jcs = json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    sig = base64.b64encode(key.sign(jcs)).decode()
    return {"event": e, "origin_signature": {"key_id": key_id, "signature": sig}}

bob = {"id": "bob", "idp": "okta"}
batches = {
    "1-plain": [ev(1, "approval.requested", "req-1", "2026-11-21T10:00:00Z"),
                ev(2, "approval.requested", "req-2", "2026-11-21T10:00:01.5+01:00")],
    "1-signed": [signed(ev(3, "approval.requested", "req-3", "2026-11-21T10:00:02Z"))],
    "2-plain": [ev(4, "approval.approved", "req-1", "2026-11-21T10:05:00Z", reviewer=bob,
                   channel="slack", reason="ticket CHG-1"),
                ev(5, "action.executed", "req-1", "2026-11-21T10:06:00Z"),
                ev(6, "approval.denied", "req-2", "2026-11-21T10:07:00Z",
                   reviewer={"id": "agent-7", "idp": "okta"}, emergency=True)],
    "2-signed": [signed(ev(7, "approval.approved", "req-3", "2026-11-21T10:08:00Z",
                           reviewer=bob, channel="slack"))],
    "3-plain": [ev(8, "action.executed", "req-3", "2026-11-21T10:09:00Z")],
}
for name, events in batches.items():
    json.dump(events, open(f"{work}/batch-{name}.json", "w"))
EOF

post() {
  curl -sf -o /dev/null "$base/v1/events" -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' --data-binary "@$2"
}
now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
post "$plain" "$work/batch-1-plain.json"
post "$signer" "$work/batch-1-signed.json"
curl -sf "$base/v1/checkpoint" >"$work/old-checkpoint"
sleep 1.1
from=$(now)
sleep 1.1
post "$plain" "$work/batch-2-plain.json"
post "$signer" "$work/batch-2-signed.json"
sleep 1.1
to=$(now)
sleep 1.1
post "$plain" "$work/batch-3-plain.json"
"$ledger" export --data-dir "$data" --key "$work/ledger.key" --framework soc2 \
  --from "$from" --to "$to" --since "$work/old-checkpoint" --out "$work/soc2"
"$ledger" export --data-dir "$data" --key "$work/ledger.key" --framework fedramp \
  --from "$from" --to "$to" --out "$work/fedramp"
for b in soc2 fedramp; do
  "$ledger" verify "$work/$b" --key-file "$seeds/ledger.pub" >/dev/null
done
"$ledger" verify "$work/soc2" --key-file "$seeds/ledger.pub" \
  --consistency "$work/old-checkpoint" >/dev/null

# --- bundle: each bundle as `\0\0FILE <name>\n<bytes>` sections; rows: its Parquet files -------
# Each twice: as exported, and with the Parquet files rewritten uncompressed and without
# dictionaries (fuzz/examples/reencode.rs), where mutations reach the row values (the file hashes
# then differ from the manifest's, but every other check still runs on the rows).
cargo build -q --manifest-path fuzz/Cargo.toml --target-dir fuzz/target --example reencode
for b in soc2 fedramp; do
  cp -r "$work/$b" "$work/$b-plain"
  for f in "$work/$b"/*.parquet; do
    fuzz/target/debug/examples/reencode "$f" "$work/$b-plain/$(basename "$f")"
  done
done
python3 - "$work" "$corpus" <<'EOF'
import hashlib, os, sys
work, corpus = sys.argv[1], sys.argv[2]

def save(target, data):
    name = hashlib.sha1(data).hexdigest()
    open(os.path.join(corpus, target, name), "wb").write(data)

since = {"@since": f"{work}/old-checkpoint"}
for b, extra in (("soc2", since), ("soc2-plain", since), ("fedramp", {}), ("fedramp-plain", {})):
    out = b""
    files = {}
    for dirpath, _, names in os.walk(f"{work}/{b}"):
        for n in names:
            p = os.path.join(dirpath, n)
            files[os.path.relpath(p, f"{work}/{b}")] = p
    for rel, p in sorted(files.items()) + sorted(extra.items()):
        out += b"\0\0FILE " + rel.encode() + b"\n" + open(p, "rb").read()
        if rel.endswith(".parquet"):
            save("rows", open(p, "rb").read())
    save("bundle", out)
    for rel in ("checkpoint",):
        save("note", open(files[rel], "rb").read())
save("note", open(f"{work}/old-checkpoint", "rb").read())
EOF

# --- event -------------------------------------------------------------------------------------
python3 - "$work" "$corpus" <<'EOF'
import hashlib, json, os, sys
work, corpus = sys.argv[1], sys.argv[2]

def save(data):
    open(os.path.join(corpus, "event", hashlib.sha1(data).hexdigest()), "wb").write(data)

for f in sorted(os.listdir(work)):
    if f.startswith("batch-"):
        batch = json.load(open(os.path.join(work, f)))
        save(json.dumps(batch).encode())
        for e in batch:
            save(json.dumps(e, separators=(",", ":")).encode())
# tests/integration/common.rs `event(n)`: numbers and an offset timestamp.
save(json.dumps({"event_id": "evt-1", "type": "approval.requested", "request_id": "req-0",
                 "occurred_at": "2026-11-21T10:00:00.5+01:00",
                 "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
                 "action": {"name": "export customers", "category": "data_export", "risk": "high"},
                 "resource": {"id": "s3://bucket/customers", "environment": "prod"},
                 "context": {"prompt": "export the customer table", "model": "m-1", "n": 1,
                             "x": -0.5, "big": 9007199254740992, "nested": [[{"a": None}]],
                             "unicode": "caf\u00e9 \ud83d\ude00 \u2028"}}).encode())
# Strict-parser edges (each must be refused).
for text in [b'{"a":1,"a":2}', b'9007199254740993', b'"a\\u0000b"', b'[' * 33 + b']' * 33,
             b'{"event_id":"x"} trailing', b'\xff']:
    save(text)
EOF

# --- note ----------------------------------------------------------------------------------------
for f in tests/vectors/signed-note/checkpoint.*; do
  cp "$f" "$corpus/note/$(sha1sum <"$f" | cut -c1-40)"
done
for text in "$(cat "$seeds/ledger.pub")" "$(cat "$seeds/origin.pub")" \
  "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx" \
  "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg" \
  $'example.com/log/testdata\n15\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=\n'; do
  printf '%s' "$text" >"$work/t"
  cp "$work/t" "$corpus/note/$(sha1sum <"$work/t" | cut -c1-40)"
done

# --- proof ---------------------------------------------------------------------------------------
python3 - "$root/tests/vectors" "$corpus" <<'EOF'
import base64, glob, hashlib, json, os, struct, sys
vectors, corpus = sys.argv[1], sys.argv[2]

def save(data):
    open(os.path.join(corpus, "proof", hashlib.sha1(data).hexdigest()), "wb").write(data)

def h(b64):
    return base64.b64decode(b64 or "")

def fixed(b):
    # The target reads exactly 32 bytes for a leaf or root.
    return (b + bytes(32))[:32]

SHA256 = 0x80
for f in sorted(glob.glob(f"{vectors}/rfc6962-sha256/inclusion/*/*.json")):
    v = json.load(open(f))
    proof = b"".join(h(p) for p in v["proof"] or [])
    save(bytes([SHA256 | 0]) + struct.pack("<QQ", v["leafIdx"] & (2**64 - 1), v["treeSize"] & (2**64 - 1))
         + fixed(h(v["leafHash"])) + fixed(h(v["root"])) + proof)
for f in sorted(glob.glob(f"{vectors}/rfc6962-sha256/consistency/*/*.json")):
    v = json.load(open(f))
    proof = b"".join(h(p) for p in v["proof"] or [])
    save(bytes([SHA256 | 1]) + struct.pack("<QQ", v["size1"] & (2**64 - 1), v["size2"] & (2**64 - 1))
         + fixed(h(v["root1"])) + fixed(h(v["root2"])) + proof)
t = json.load(open(f"{vectors}/blake3/tree8.json"))
BLAKE3 = 0
for v in t["inclusion"]:
    save(bytes([BLAKE3 | 0]) + struct.pack("<QQ", v["leafIdx"], v["treeSize"])
         + h(v["leafHash"]) + h(v["root"]) + b"".join(h(p) for p in v["proof"]))
for v in t["consistency"]:
    save(bytes([BLAKE3 | 1]) + struct.pack("<QQ", v["size1"], v["size2"])
         + h(v["root1"]) + h(v["root2"]) + b"".join(h(p) for p in v["proof"]))
# Trees to build (op 2): selectors, then tree8's leaves (length byte, bytes), with both hashes.
leaves = b"".join(bytes([len(bytes.fromhex(x))]) + bytes.fromhex(x) for x in t["leaves_hex"])
for hasher in (BLAKE3, SHA256):
    for sel in ((0, 0, 8, 0), (5, 2, 3, 300), (7, 1, 5, 777)):
        save(bytes([hasher | 2]) + struct.pack("<HHHH", *sel) + leaves)
    save(bytes([hasher | 2]) + struct.pack("<HHHH", 41, 99, 17, 5) + leaves * 9)
EOF

# --- jcs: the event seeds' canonical forms and leaves around them ------------------------------
# ASCII only and no fractions, so Python's sorted compact dump is exactly their RFC 8785 form.
python3 - "$corpus" <<'EOF'
import hashlib, json, os, sys
corpus = sys.argv[1]

def save(b):
    open(os.path.join(corpus, "jcs", hashlib.sha1(b).hexdigest()), "wb").write(b)

def jcs(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

def plain(v):
    if isinstance(v, float):
        return False
    if isinstance(v, dict):
        return all(plain(x) for x in v.values())
    if isinstance(v, list):
        return all(plain(x) for x in v)
    return True

for name in sorted(os.listdir(f"{corpus}/event")):
    try:
        v = json.loads(open(f"{corpus}/event/{name}", "rb").read())
    except ValueError:
        continue
    for e in v if isinstance(v, list) else [v]:
        if not isinstance(e, dict) or not plain(e):
            continue
        sig = e.get("origin_signature") if "event" in e else None
        e = e["event"] if "event" in e else e
        if not jcs(e).isascii():
            continue
        save(jcs(e))
        leaf = {"event": e, "index": 7, "ingested_at": "2026-11-21T09:06:00.123456Z",
                "prev_leaf_hash": "ab" * 32, "source": "edge-1", "v": 1}
        if isinstance(sig, dict):
            leaf["origin_signature"] = sig
        save(jcs(leaf))
EOF

echo "make-seeds: wrote $(find "$corpus" -type f | wc -l) seeds under fuzz/corpus/"
