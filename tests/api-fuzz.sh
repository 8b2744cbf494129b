#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from the OpenAPI document a live
# `ledger serve` publishes (GET /v1/openapi.json) and checks every answer against it: no 5xx, only
# documented statuses and content types, bodies valid against their schemas.
#
#   tests/api-fuzz.sh [--release] [extra `st run` arguments]
#
# Builds the binary, serves a fresh temp data dir with a source, an auditor and an admin, seeds a
# few events, runs schemathesis once per role over the operations that role may call, then stops
# the server. Needs `st` (pip install schemathesis==4.32.5) and curl.
# API_FUZZ_MAX_EXAMPLES (default 50) bounds test cases per operation and phase; API_FUZZ_SEED
# makes a run repeatable (the seed of each run is printed). Exit status: 0 if every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

profile=debug
if [ "${1:-}" = "--release" ]; then
  profile=release
  shift
fi
command -v st >/dev/null || {
  echo "api-fuzz: schemathesis is not installed: pip install schemathesis==4.32.5" >&2
  exit 2
}

# Debug: the binary `cargo test` builds (same dependency features, so no second RocksDB build).
if [ "$profile" = release ]; then cargo build --locked --release; else cargo test --locked --no-run -q; fi
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
# A private copy: target/ may be shared, and rebuilt by someone else while this runs.
cp "${CARGO_TARGET_DIR:-target}/$profile/ledger" "$work/ledger"
ledger="$work/ledger"
data="$work/data"
source_token=$("$ledger" sources add fuzz-source --data-dir "$data" | tail -n 1)
auditor_token=$("$ledger" auditors add fuzz-auditor --data-dir "$data" | tail -n 1)
admin_token=$("$ledger" admins add fuzz-admin --data-dir "$data" | tail -n 1)

"$ledger" serve --data-dir "$data" --listen 127.0.0.1:0 --origin api-fuzz.test/log \
  2>"$work/server.log" &
pid=$!
# The server logs `listening addr=HOST:PORT` once it accepts connections.
addr=""
for _ in $(seq 600); do
  addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/server.log")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 2; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "api-fuzz: the server did not start" >&2; exit 2; }
base="http://$addr"

# Something to read: a few events over two requests.
events='['
for i in 0 1 2 3 4 5; do
  events+="{\"event_id\":\"seed-$i\",\"type\":\"approval.requested\",\"request_id\":\"req-$((i / 3))\",
    \"occurred_at\":\"2026-11-21T10:00:00Z\",\"actor\":{\"id\":\"agent-7\",\"kind\":\"agent\"},
    \"action\":{\"name\":\"export customers\",\"category\":\"data_export\"},
    \"resource\":{\"id\":\"s3://bucket/customers\",\"environment\":\"prod\"}}"
  [ "$i" -lt 5 ] && events+=','
done
events+=']'
curl -sf -o /dev/null "$base/v1/events" -H "Authorization: Bearer $source_token" \
  -H 'Content-Type: application/json' -d "$events"

cd "$work" # schemathesis writes its example database in the working directory
status=0
run() {
  local role=$1 token=$2
  shift 2
  echo "== api-fuzz: $role token =="
  SCHEMATHESIS_HOOKS="$root/tests/api-fuzz-hooks.py" st run "$base/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --max-examples "${API_FUZZ_MAX_EXAMPLES:-50}" \
    ${API_FUZZ_SEED:+--seed "$API_FUZZ_SEED"} \
    --no-color "$@" || status=1
}
run source "$source_token" --include-tag events --include-tag entries --include-tag log \
  --include-tag health "$@"
run auditor "$auditor_token" --include-tag export --include-tag entries "$@"
# Last: it issues and revokes credentials.
run admin "$admin_token" --include-tag admin "$@"

if grep -q ' ERROR ' "$work/server.log"; then
  echo "api-fuzz: the server logged errors:" >&2
  grep ' ERROR ' "$work/server.log" >&2
  status=1
fi
exit $status
