#!/usr/bin/env bash
# Installs what is missing, builds, and runs every suite:
#   1. C unit tests (ctest)            2. Lua specs (busted)
#   3. integration tests (pytest, the real server + a local fake Replicate)
#   4. the C unit + integration suites again under ASan + UBSan
#   5. the thread-heavy integration tests under ThreadSanitizer (scripts/tsan.sh;
#      SC_TSAN_FULL=1 runs the whole suite, as `./scripts/tsan.sh` alone does)
#   6. every libFuzzer target for a short budget (SC_FUZZ_SECONDS, default 15,
#      nproc targets at a time)
# Before them: every Python import is declared (check-deps.py), clang-format.
# Each step prints its duration; SC_SKIP_SANITIZE=1 skips 4 and 5.
# Prints one "N passed, N failed" line at the end; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh || exit 1

PY=/usr/bin/python3
# The integration suites mostly wait (sleeps, timeouts, subprocesses), so they
# run on SC_TEST_JOBS pytest-xdist workers even on 2 cores
# (4 workers: 411 s -> 186 s for the plain suite here);
# --dist loadfile keeps a module's tests, and its module-scoped fake, on one worker.
XDIST=(-n "${SC_TEST_JOBS:-4}" --dist loadfile)
passed=0
failed=0
timings=()
step() { # name, command...
  local name=$1 t0=$SECONDS; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0))s)"
  else failed=$((failed + 1)); echo "=== $name: FAILED ($((SECONDS - t0))s)"; fi
  timings+=("$(printf '%5ds  %s' $((SECONDS - t0)) "$name")")
}

# Every Python import of tests/, bench/ and scripts/ comes from a package
# install-deps.sh installs (a fresh machine has nothing else).
step "python deps declared" $PY scripts/check-deps.py
step "script tests" $PY -m pytest -q -p no:cacheprovider "${XDIST[@]}" tests/scripts

# The C sources follow .clang-format (STYLE.md rule 17).
step "format check" clang-format --dry-run -Werror src/*/*.c src/*/*.h src/main.c \
  tests/unit/*.c tests/unit/*.h tests/fuzz/*.c bench/*.c
step "build" ./scripts/build.sh
step "unit tests" ctest --test-dir build --output-on-failure -j2
step "lua specs" busted --lua=lua5.4 -o utfTerminal tests/lua
step "integration tests" env SCENECOMP_BIN="$PWD/build/scenecomp" \
  $PY -m pytest -q -x -p no:cacheprovider "${XDIST[@]}" tests/integration tests/fake

if [ "${SC_SKIP_SANITIZE:-0}" != 1 ]; then
  step "build (asan+ubsan)" env BUILD_DIR=build-asan BUILD_TYPE=Debug ./scripts/build.sh -DSC_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  step "unit tests (asan+ubsan)" ctest --test-dir build-asan --output-on-failure -j2
  step "integration tests (asan+ubsan)" env SCENECOMP_BIN="$PWD/build-asan/scenecomp" SC_SANITIZED=1 \
    $PY -m pytest -q -x -p no:cacheprovider "${XDIST[@]}" tests/integration tests/fake
  unset ASAN_OPTIONS UBSAN_OPTIONS
  # Data races: against a TSan build, the tests that drive the threads hardest
  # (suspended connections, disconnects, reloads, async jobs, the Redis store's
  # threads, the front door); the whole suite would add ~4 min to every run.
  tsan_tests=(tests/integration/test_http_nonblocking.py tests/integration/test_client_disconnect.py
    tests/integration/test_scene_disconnect.py tests/integration/test_policy_reload.py
    tests/integration/test_async_records.py tests/integration/test_fleet_redis.py
    tests/integration/test_http_edge.py tests/integration/test_kontext_fake.py)
  [ "${SC_TSAN_FULL:-0}" = 1 ] && tsan_tests=(tests/integration tests/fake)
  step "integration tests (tsan)" ./scripts/tsan.sh "${XDIST[@]}" "${tsan_tests[@]}"
fi

# Every tests/fuzz/*_fuzz.c for a short budget (scripts/fuzz.sh runs longer).
step "fuzzers (${SC_FUZZ_SECONDS:-15}s each)" ./scripts/fuzz.sh "${SC_FUZZ_SECONDS:-15}"

printf '%s\n' "${timings[@]}"
echo "test.sh: $passed passed, $failed failed (${SECONDS}s)"
[ "$failed" -eq 0 ]
