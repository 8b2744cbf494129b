#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of what parses or checks
# untrusted bytes: builds the targets in fuzz/fuzz_targets/ and runs each for a bounded time, from
# its committed corpus in fuzz/corpus/<target>/.
#
#   fuzz/run.sh [TARGET...]          run each target (default: all) for FUZZ_SECONDS (default 30)
#   fuzz/run.sh --cmin [TARGET...]   minimize the committed corpora in place (after a long run)
#
# Targets: event (the event parser and validator, and the ingest fast path against it), note (signed notes, checkpoints, keys), proof
# (inclusion and consistency proofs), rows (the bundle's Parquet reader), jcs (the one-pass
# canonical-JSON and leaf checks against parse-and-re-encode), bundle (`ledger verify`
# on a whole bundle directory). A run reads the committed corpus and writes what it discovers to
# a temp dir, so the repository is left as it was. Exit status 0 if no target crashed: a panic or
# failed assertion, a sanitizer report, an input slower than FUZZ_TIMEOUT seconds (default 10) or
# one needing more than FUZZ_RSS_MB of memory (default 2048). The input is then in
# fuzz/artifacts/<target>/; replay it with `cargo fuzz run TARGET fuzz/artifacts/TARGET/FILE`.
#
# Needs cargo-fuzz 0.13.2 (`cargo install cargo-fuzz --locked --version 0.13.2`; .ci/install-deps
# puts it in ~/.cache/ledger-ci/cargo-fuzz) and a C++ compiler (libFuzzer is C++). The build uses
# the active toolchain (stable in CI) with RUSTC_BOOTSTRAP=1, which lets stable take the
# `-Zsanitizer=address` flag cargo-fuzz passes: stable ships the ASan runtime
# (librustc-stable_rt.asan.a), so no nightly toolchain is needed. The library is built without its
# `server` feature: no RocksDB here. Output goes to fuzz/target/ (never $CARGO_TARGET_DIR: the
# instrumented build shares nothing with the normal one).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:${XDG_CACHE_HOME:-$HOME/.cache}/ledger-ci/cargo-fuzz/bin"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR

cmin=false
if [ "${1:-}" = "--cmin" ]; then
  cmin=true
  shift
fi
command -v cargo-fuzz >/dev/null || {
  echo "fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz --locked --version 0.13.2" >&2
  exit 2
}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
seconds=${FUZZ_SECONDS:-30}

# cargo-fuzz has no --locked: fail here if fuzz/Cargo.lock is not up to date.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
cargo fuzz build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  if $cmin; then
    echo "== fuzz: minimizing $corpus ($(ls "$corpus" | wc -l) inputs) =="
    cargo fuzz cmin "$target" "$corpus"
    continue
  fi
  echo "== fuzz: $target for ${seconds}s =="
  mkdir -p "$work/$target"
  # New inputs go to the first directory (the temp one); the committed corpus is only read.
  failed=false
  cargo fuzz run "$target" "$work/$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -print_final_stats=1 2>"$work/$target.log" || failed=true
  # libFuzzer's last status line (execs/s, coverage), the final stats, and any crash report.
  grep -E '^#[0-9]+' "$work/$target.log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/$target.log" || true
  if $failed; then
    status=1
    grep -v -E '^(#[0-9]+|stat::)' "$work/$target.log" | tail -n 60 >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
  fi
done
exit $status
