#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for a bounded time each, then adds to the
# saved corpus (fuzz/corpus/<target>/) and shrinks it to a small set that
# keeps all the coverage (libFuzzer's set-cover merge). Crashes, hangs and
# out-of-memory inputs land in fuzz/artifacts/<target>/ and make the
# script exit 1.
#
#   bash scripts/fuzz.sh [seconds-per-target] [target...]
#
# Default: 60 seconds for each of the five targets. The machine has one
# stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags
# (AddressSanitizer, coverage instrumentation) to it. Builds go to
# fuzz/target, so the workspace build lock is never held.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ws_frame handshake_query client_frame bus_envelope api_body)
fi
# Keep the saved corpus small: short inputs, and only new coverage.
max_len=${FUZZ_MAX_LEN:-1024}

export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The seeds (written by the crates' fuzzing modules) go into the corpus
# first, so a fresh checkout fuzzes from meaningful inputs.
for crate in switchboard-protocol switchboard-edge switchboard-router; do
  cargo run -q -p "$crate" --example write_fuzz_seeds
done

# -O: optimized; -a: debug assertions and overflow checks on.
(cd fuzz && nice -n 10 cargo fuzz build -O -a)
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$triple/release

status=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  work=fuzz/target/work/$t
  artifacts=fuzz/artifacts/$t
  rm -rf "$work"
  mkdir -p "$corpus" "$work" "$artifacts"
  before=$(find "$corpus" -type f | wc -l)
  echo "== $t: ${secs}s from $before saved inputs"
  # New inputs are written to $work; the saved corpus is only read.
  if ! nice -n 10 "$bin_dir/$t" "$work" "$corpus" \
    -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"fuzz/target/$t.log" 2>&1; then
    echo "!! $t: the fuzzer stopped on a finding (fuzz/target/$t.log):"
    grep -E "^(==[0-9]+==ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)" "fuzz/target/$t.log" | head -20 || true
    status=1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^Done [0-9]+ runs" "fuzz/target/$t.log" || true
  # The saved corpus becomes the smallest set of old and new inputs that
  # reaches every edge that either reaches (hit counts aside).
  merged=fuzz/target/merged/$t
  rm -rf "$merged"
  mkdir -p "$merged"
  if ! nice -n 10 "$bin_dir/$t" -set_cover_merge=1 -use_counters=0 -max_len="$max_len" "$merged" "$corpus" "$work" \
    >"fuzz/target/$t.merge.log" 2>&1; then
    echo "!! $t: merge failed (fuzz/target/$t.merge.log); saved corpus left as it was"
    status=1
    continue
  fi
  rm -rf "$corpus"
  mv "$merged" "$corpus"
  after=$(find "$corpus" -type f | wc -l)
  echo "   saved corpus: $before -> $after inputs ($(cat "$corpus"/* | wc -c) bytes)"
done

if [ "$status" -ne 0 ]; then
  echo "findings are in fuzz/artifacts/; once fixed, copy each to fuzz/regressions/<target>/"
fi
exit "$status"
