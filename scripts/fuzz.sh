#!/usr/bin/env bash
# Coverage-guided fuzzing of Passerelle's parsers with libFuzzer (cargo-fuzz):
#
#   scripts/fuzz.sh [MINUTES] [TARGET...]
#
# runs each target (default: all of fuzz/fuzz_targets) for MINUTES (default 10) on its
# corpus fuzz/corpus/<target>, one after the other, and prints, per target, the
# executions per second, the coverage (libFuzzer's `cov`, edges) and the corpus size.
# Exits 1 when a target crashes (panic, assertion, timeout over 10 s, over 2 GiB):
# the input is kept under fuzz/artifacts/<target>/ ; once the bug is fixed, copy it to
# fuzz/regressions/<target>/, where the ordinary test suite replays it
# (fuzzing/tests/corpus.rs).
#
# Why cargo-fuzz (libFuzzer) rather than AFL: it runs in-process (thousands of
# executions per second on these parsers), needs only the nightly toolchain this
# machine has and a C++ compiler for libFuzzer, and its corpus folders are plain files
# the stable suite replays. No sanitizer: the code is safe Rust and the C libraries
# (libxml2, OpenSSL) are not instrumented anyway, so AddressSanitizer would halve the
# speed for little; debug assertions are on (overflow checks). New inputs found are added to fuzz/corpus/<target>; run
# `scripts/fuzz.sh --minimise` to shrink the corpora before checking them in.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--minimise" ]]; then
  shift
  MODE=minimise
else
  MODE=run
fi
MINUTES="${1:-10}"
shift || true
if ! [[ "$MINUTES" =~ ^[0-9]+$ ]] || (( MINUTES < 1 )); then
  echo "fuzz.sh: MINUTES must be a whole number of minutes (got '$MINUTES')" >&2
  exit 2
fi
TARGETS=("$@")
if (( ${#TARGETS[@]} == 0 )); then
  mapfile -t TARGETS < <(ls fuzz/fuzz_targets | sed 's/\.rs$//' | sort)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain list); libFuzzer's instrumentation is nightly-only" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2
fi
scripts/install-deps.sh >&2
# The INSi target builds the sandbox state from the test PKI, generated once.

status=0
summary=()
for target in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  if [[ "$MODE" == minimise ]]; then
    (cd fuzz && cargo +nightly fuzz cmin --sanitizer none --debug-assertions "$target" "corpus/$target")
    continue
  fi
  log="fuzz/artifacts/$target/last-run.log"
  echo "== $target: ${MINUTES} min" >&2
  set +e
  # Hand-written seeds (fuzz/seeds/<target>, read only) join the corpus at start.
  seeds=()
  [[ -d "fuzz/seeds/$target" ]] && seeds=("seeds/$target")
  (cd fuzz && cargo +nightly fuzz run --sanitizer none --debug-assertions "$target" "corpus/$target" "${seeds[@]}" -- \
      -max_total_time=$((MINUTES * 60)) -timeout=10 -rss_limit_mb=2048 \
      -max_len=262144 -print_final_stats=1) >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  files=$(find "$corpus" -type f | wc -l)
  line="$target: ${execs:-?} executions, ${speed:-?}/s, cov ${cov:-?} edges, corpus $files files"
  if (( rc != 0 )); then
    status=1
    line="$line: CRASH (exit $rc), see $log and fuzz/artifacts/$target/"
    tail -n 40 "$log" >&2
  fi
  echo "$line" >&2
  summary+=("$line")
done
printf '%s\n' "${summary[@]}"
exit "$status"
