#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.c, clang, -DSC_FUZZ=ON) and
# runs each for SECONDS (default FUZZ_SECONDS or 180), FUZZ_JOBS (default nproc)
# targets at a time.
#   ./scripts/fuzz.sh [SECONDS] [name ...]     e.g. ./scripts/fuzz.sh 600 policy_load_fuzz
# Corpus: FUZZ_CORPUS_DIR/<name> (default fuzz-corpus/, ignored by git), kept
# between runs and seeded from tests/fuzz/seeds/<name>/ plus the example files
# below. A crash, leak or timeout (FUZZ_TIMEOUT s per input, default 10) is
# saved as FUZZ_CORPUS_DIR/artifacts/<name>-crash-... and fails the script;
# replay it with: build-fuzz/<name> FILE
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-${FUZZ_SECONDS:-180}}
shift $(( $# > 0 ? 1 : 0 ))
BUILD_DIR=${BUILD_DIR:-build-fuzz}
CORPUS=${FUZZ_CORPUS_DIR:-fuzz-corpus}
TIMEOUT=${FUZZ_TIMEOUT:-10}

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for f in tests/fuzz/*_fuzz.c; do names+=("$(basename "$f" .c)"); done
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSC_FUZZ=ON >/dev/null || exit 1
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${names[@]}" >/dev/null || {
  echo "fuzz.sh: build failed; run: cmake --build $BUILD_DIR --target ${names[*]}" >&2; exit 1; }

# Seeds a target starts from, beyond tests/fuzz/seeds/<name>/.
seeds_for() {
  case $1 in
    image_decode_fuzz | image_check_fuzz) ls examples/*.png examples/*.jpg 2>/dev/null ;;
    policy_load_fuzz) ls lua/policy.lua examples/policies/*.lua 2>/dev/null ;;
  esac
  [ -d "tests/fuzz/seeds/$1" ] && find "tests/fuzz/seeds/$1" -type f
}

mkdir -p "$CORPUS/artifacts"
# Each target is single-threaded: FUZZ_JOBS (default nproc) of them run at once,
# each for its full SECONDS; the reports are printed in order afterwards.
JOBS=${FUZZ_JOBS:-$(nproc)}
run_one() { # name: fuzzes it, writes $CORPUS/<name>.log and .status
  local n=$1
  "$BUILD_DIR/$n" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$CORPUS/artifacts/$n-" "$CORPUS/$n" \
    >"$CORPUS/$n.log" 2>&1
  echo $? >"$CORPUS/$n.status"
}
for n in "${names[@]}"; do
  mkdir -p "$CORPUS/$n"
  rm -f "$CORPUS/$n.status"
  seeds_for "$n" | while read -r s; do cp -n "$s" "$CORPUS/$n/" 2>/dev/null; done
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  run_one "$n" &
done
wait
failed=()
for n in "${names[@]}"; do
  echo "--- $n: ${SECONDS_EACH}s, corpus $CORPUS/$n ($(ls "$CORPUS/$n" | wc -l) files)"
  if [ "$(cat "$CORPUS/$n.status" 2>/dev/null)" = 0 ]; then
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$CORPUS/$n.log" | tr '\n' ' '
    echo
  else
    failed+=("$n")
    tail -n 60 "$CORPUS/$n.log"
    echo "--- $n FAILED (log: $CORPUS/$n.log, input: $CORPUS/artifacts/$n-*)"
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz.sh: failed: ${failed[*]}" >&2; exit 1; }
