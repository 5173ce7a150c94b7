#!/usr/bin/env bash
# Installs the Debian packages scenecomp needs to build, test and benchmark.
# Idempotent: installs only what is missing. Needs root (or sudo) and apt.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  liblua5.4-dev lua5.4 lua-cjson lua-busted
  libmicrohttpd-dev libcurl4-openssl-dev libstb-dev
  libdeflate-dev libturbojpeg0-dev libcjson-dev liblcms2-dev
  python3 python3-pytest python3-pil python3-requests curl clang-format
  # test.sh runs the integration suites in parallel (pytest -n); see pytest.ini.
  python3-pytest-xdist
  # Fleet (LIMITS_STORE=redis) and its tests: hiredis, a real redis-server, nginx in front.
  libhiredis-dev redis-server nginx-light
  # Webhook signatures (HMAC-SHA256).
  libssl-dev
  # Fuzzers (libFuzzer) in test.sh and scripts/fuzz.sh.
  clang libclang-rt-14-dev
  # Dashboard: Chart.js is embedded into the binary at build time (a build dependency);
  # the browser test drives Debian's chromium; promtool checks docs/prometheus/alerts.yml.
  libjs-chart.js chromium chromium-driver python3-selenium prometheus
)
# Benchmarks only (scripts/bench.sh): wrk, nginx, the FastAPI + Pillow anchor.
if [ "${SC_BENCH_DEPS:-0}" = 1 ]; then
  PKGS+=(wrk nginx-light python3-fastapi python3-uvicorn python3-multipart python3-uvloop python3-httptools clang)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Only promtool is wanted from the prometheus package: a Prometheus server that
# apt just started under systemd (port 9090) is stopped and disabled again.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
