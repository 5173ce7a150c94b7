#!/usr/bin/env bash
# Builds scenecomp with ThreadSanitizer (build-tsan/, -DSC_TSAN=ON) and runs
# the integration suite against it once. Every TSan report fails the run: the
# server exits 66 at shutdown (the test that started it fails) and the reports
# are collected from TSAN_LOG_DIR (default: a temp dir) and printed at the end.
# Known reports that are not ours go to tests/tsan.supp, each with its reason.
#   ./scripts/tsan.sh [pytest args...]     e.g. ./scripts/tsan.sh -k reload
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-tsan BUILD_TYPE=Debug ./scripts/build.sh -DSC_TSAN=ON >/dev/null || {
  echo "tsan.sh: build failed (errors above)" >&2; exit 1; }
logs=${TSAN_LOG_DIR:-$(mktemp -d /tmp/scenecomp-tsan.XXXXXX)}
mkdir -p "$logs"
opts="halt_on_error=0 exitcode=66 second_deadlock_stack=1 log_path=$logs/tsan"
[ -f tests/tsan.supp ] && opts="$opts suppressions=$PWD/tests/tsan.supp"
if [ $# -eq 0 ]; then set -- tests/integration tests/fake; fi
TSAN_OPTIONS="$opts" SCENECOMP_BIN="$PWD/build-tsan/scenecomp" SC_SANITIZED=1 \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
reports=$(ls "$logs"/tsan.* 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
  echo "tsan.sh: $reports process(es) reported (in $logs):" >&2
  grep -h '^SUMMARY' "$logs"/tsan.* | sort | uniq -c >&2
  cat "$(ls "$logs"/tsan.* | head -1)" >&2
  exit 1
fi
[ -z "${TSAN_LOG_DIR:-}" ] && rm -rf "$logs"
exit $rc
