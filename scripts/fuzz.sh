#!/usr/bin/env bash
# make fuzz: builds the cargo-afl targets of fuzz/ and runs each for FUZZ_SECONDS from the seed corpus, then
# prints per target the executions, exec/s, corpus size and edges found (AFL's fuzzer_stats). Exits 1 if any
# target crashed or hung, naming each input and how to replay it. docs/fuzzing.md explains the targets.
#
#   FUZZ_SECONDS   fuzzing time per target (default 60)
#   FUZZ_TARGETS   which targets (default: all four)
#   FUZZ_OUT       corpora, findings and logs (default $CARGO_TARGET_DIR/fuzz-out; wiped per target per run)
#   FUZZ_NICE      niceness of the build and the fuzzers (default 10: the machine may be shared)
#   FUZZ_MEMORY_MB address-space limit of a target run (default 2048): an image that needs more is a finding
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-decode http_extract query grpc_request}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FUZZ_OUT=${FUZZ_OUT:-$CARGO_TARGET_DIR/fuzz-out}
FUZZ_NICE=${FUZZ_NICE:-10}
FUZZ_MEMORY_MB=${FUZZ_MEMORY_MB:-2048}
TEST_IMAGES=${TEST_IMAGES:-$ROOT/../shared/images}
PY=${PY:-$ROOT/.venv/bin/python}
CARGO_AFL_VERSION=0.18.2

# --- tools: a C toolchain (AFL++ is C), cargo-afl, and AFL++ built for this rustc --------------------------
if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
  apt-get update -qq && apt-get install -y -qq build-essential
fi
if [[ "$(cargo afl --version 2>/dev/null)" != *"$CARGO_AFL_VERSION"* ]]; then
  # Installing also builds AFL++ for the current toolchain (about 70 s on 2 cores).
  time nice -n "$FUZZ_NICE" cargo install --locked "cargo-afl@$CARGO_AFL_VERSION"
fi
rustc_release=$(rustc -vV | sed -n 's/^release: //p')
rustc_commit=$(rustc -vV | sed -n 's/^commit-hash: //p')
afl_home=${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-$rustc_release-${rustc_commit:0:7}
if ! compgen -G "$afl_home/afl.rs-*/afl/bin/afl-fuzz" >/dev/null; then
  # A rustc newer than the one cargo-afl was installed with needs its own AFL++ runtime.
  nice -n "$FUZZ_NICE" cargo afl config --build
fi

# --- seeds: crafted cases (fuzz/seeds.py) plus the test photos and the CMYK test JPEG -----------------------
seeds=$FUZZ_OUT/seeds
rm -rf "$seeds"
"$PY" fuzz/seeds.py "$seeds"
find "$TEST_IMAGES" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.bmp' \) \
  -exec cp {} "$seeds/decode/" \;
cp server/tests/data/*.jpg "$seeds/decode/"

# --- build: instrumented, in a target directory of its own (other RUSTFLAGS than the server build) ---------
export CARGO_TARGET_DIR=$CARGO_TARGET_DIR/afl
(cd fuzz && nice -n "$FUZZ_NICE" cargo afl build --release --locked)
bin=$CARGO_TARGET_DIR/release

# --- run --------------------------------------------------------------------------------------------------
# For machines where the fuzzer cannot own the CPU or the kernel settings (CI, containers, shared hosts):
# no frequency-scaling check, no core-dump pattern check, no CPU pinning, no curses UI.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
# Seeds that crash or time out are reported by the replay below; AFL skips them instead of stopping.
export AFL_IGNORE_SEED_PROBLEMS=1 AFL_FAST_CAL=1 AFL_NO_CRASH_README=1

# Per-run timeout in ms: decoding a photo-sized image legitimately takes tens of ms, and a 40 MP one more;
# a hang is an input still running after this long.
timeout_ms() { [[ $1 == decode ]] && echo 5000 || echo 1000; }

afl_stat() { sed -n "s/^$1 *: *//p" "$2"; }

# Runs one input outside AFL (the targets read stdin then) under the same memory limit, and twice AFL's
# time limit: slack for a loaded machine, so that an input reported as slow is slow.
replay() { # target input
  (ulimit -v $((FUZZ_MEMORY_MB * 1024)); RUST_BACKTRACE=1 timeout "$(($(timeout_ms "$1") * 2 / 1000))" \
    "$bin/$1" <"$2")
}

failed=0
report=()
for target in $FUZZ_TARGETS; do
  out=$FUZZ_OUT/$target
  rm -rf "$out"
  # The seeds themselves first: AFL would only skip one that crashes or hangs, and they are the crafted
  # hostile cases.
  bad_seeds=0
  for input in "$seeds/$target"/*; do
    replay "$target" "$input" >/dev/null 2>"$FUZZ_OUT/replay.err" && continue
    status=$?
    failed=1 bad_seeds=$((bad_seeds + 1))
    what="exit status $status"
    [[ $status == 124 ]] && what="still running after $(($(timeout_ms "$target") * 2)) ms"
    echo "FINDING $target seed $input: $what"
    grep -m1 -v '^\s*$' "$FUZZ_OUT/replay.err" | sed 's/^/    /' || true
  done
  echo "== fuzz $target for ${FUZZ_SECONDS}s"
  nice -n "$FUZZ_NICE" cargo afl fuzz -V "$FUZZ_SECONDS" -t "$(timeout_ms "$target")" -m "$FUZZ_MEMORY_MB" \
    -i "$seeds/$target" -o "$out" -- "$bin/$target" >"$FUZZ_OUT/$target.log" 2>&1 || {
    echo "afl-fuzz failed for $target; its log, $FUZZ_OUT/$target.log, ends with:" >&2
    tail -20 "$FUZZ_OUT/$target.log" >&2
    exit 1
  }
  stats=$out/default/fuzzer_stats
  crashes=("$out"/default/crashes/id:*)
  hangs=("$out"/default/hangs/id:*)
  [[ -e ${crashes[0]} ]] || crashes=()
  [[ -e ${hangs[0]} ]] || hangs=()
  report+=("$(printf '%-13s %12s %9s %7s %16s %8s %10s %5s' "$target" "$(afl_stat execs_done "$stats")" \
    "$(afl_stat execs_per_sec "$stats")" "$(afl_stat corpus_count "$stats")" \
    "$(afl_stat edges_found "$stats")/$(afl_stat total_edges "$stats")" "$(afl_stat bitmap_cvg "$stats")" \
    "${#crashes[@]}/${#hangs[@]}" "$bad_seeds")")
  for input in "${crashes[@]}" "${hangs[@]}"; do
    failed=1
    echo "FINDING $target: $input"
    echo "  replay: $bin/$target < '$input'"
  done
  if ((${#crashes[@]})); then
    # The first crash replayed outside AFL, for its panic message or abort cause.
    echo "  first crash, replayed:"
    replay "$target" "${crashes[0]}" 2>&1 | head -40 | sed 's/^/    /' || true
  fi
done

echo
printf '%-13s %12s %9s %7s %16s %8s %10s %5s\n' target executions exec/s corpus edges bitmap crash/hang seeds
printf '%s\n' "${report[@]}"
echo "(${FUZZ_SECONDS}s per target; exec/s is the run's mean; crash/hang found by AFL, seeds: seeds that"
echo " crashed or ran over twice the time limit on replay; corpora and findings in $FUZZ_OUT)"
exit $failed
