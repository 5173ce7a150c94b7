#!/usr/bin/env bash
# A scenecomp fleet on this machine, to watch one budget being shared:
# redis-server, N instances (LIMITS_STORE=redis, default 3) and nginx in front,
# all on 127.0.0.1 free ports, in a private directory. Prints the URL and waits;
# Ctrl-C (or the end of --smoke) stops every process it started, by pid.
#
#   ./scripts/fleet.sh                 # serve until Ctrl-C
#   ./scripts/fleet.sh --smoke         # start, check the fleet through nginx, stop
#   FLEET_N=5 ./scripts/fleet.sh       # five instances
#   FLEET_PORT=8080 ...                # nginx on this port (default: a free one)
#   FLEET_CLEAN=1 ...                  # remove the fleet directory on exit
#
# Every instance gets the caller's environment (USE_KONTEXT_COMPOSITE,
# REPLICATE_API_TOKEN, MAX_CONCURRENT_KONTEXT, ...), so the caps you set are the
# fleet's caps. They share one OUTPUT_DIR (so any instance serves any image);
# each has its own LOGS_DIR under the fleet directory (printed at start).
# Needs: redis-server, nginx (./scripts/install-deps.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${FLEET_N:-3}
SMOKE=0
[[ ${1:-} == --smoke ]] && SMOKE=1
BIN=${SCENECOMP_BIN:-$ROOT/build/scenecomp}

for tool in redis-server nginx python3; do
  command -v "$tool" >/dev/null || { echo "fleet.sh: $tool is missing (./scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $BIN ]] || ./scripts/build.sh >/dev/null

DIR=$(mktemp -d "${TMPDIR:-/tmp}/scenecomp-fleet.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${FLEET_CLEAN:-0} == 1 ]]; then
    rm -rf "$DIR"
    echo "fleet stopped"
  else
    echo "fleet stopped (logs kept in $DIR)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url, seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "fleet.sh: $1 did not answer" >&2
  return 1
}

# ---- Redis (AOF on: the day's count survives a Redis restart)
RPORT=$(free_port)
mkdir -p "$DIR/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$DIR/redis" --appendonly yes \
  --appendfsync everysec --save "" --logfile "$DIR/redis/redis.log" &
PIDS+=($!)
for ((i = 0; i < 200; i++)); do
  [[ $(redis-cli -p "$RPORT" ping 2>/dev/null || true) == PONG ]] && break
  sleep 0.05
done

# ---- instances
PORTS=()
mkdir -p "$DIR/output"
for ((i = 1; i <= N; i++)); do
  p=$(free_port)
  PORTS+=("$p")
  mkdir -p "$DIR/instance-$i"
  (cd "$DIR/instance-$i" && HOST=127.0.0.1 PORT=$p LIMITS_STORE=redis \
    REDIS_URL="redis://127.0.0.1:$RPORT/0" INSTANCE_ID="fleet-$i" \
    LOGS_DIR="$DIR/instance-$i/logs" OUTPUT_DIR="$DIR/output" \
    POLICY_FILE="${POLICY_FILE:-$ROOT/lua/policy.lua}" ALERTS_FILE="${ALERTS_FILE:-$ROOT/lua/alerts.lua}" \
    exec "$BIN" serve >"$DIR/instance-$i/stderr.log" 2>&1) &
  PIDS+=($!)
done
for p in "${PORTS[@]}"; do wait_http "http://127.0.0.1:$p/health" 20; done

# ---- nginx in front (the upstream block of docs/fleet.md)
LPORT=${FLEET_PORT:-$(free_port)}
mkdir -p "$DIR/nginx/tmp"
if [[ $(id -u) == 0 ]]; then
  # nginx workers of a root master run as nobody: let them reach their temp dir.
  chmod 711 "$DIR"
  chown nobody "$DIR/nginx/tmp"
fi
{
  echo "worker_processes 1;"
  echo "pid $DIR/nginx/nginx.pid;"
  echo "error_log $DIR/nginx/error.log warn;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  echo "  access_log off;"
  echo "  client_body_temp_path $DIR/nginx/tmp/body; proxy_temp_path $DIR/nginx/tmp/proxy;"
  echo "  fastcgi_temp_path $DIR/nginx/tmp/fcgi; uwsgi_temp_path $DIR/nginx/tmp/uwsgi; scgi_temp_path $DIR/nginx/tmp/scgi;"
  echo "  upstream scenecomp {"
  echo "    least_conn;"
  for p in "${PORTS[@]}"; do echo "    server 127.0.0.1:$p max_fails=2 fail_timeout=5s;"; done
  echo "    keepalive 64;"
  echo "  }"
  echo "  server {"
  echo "    listen 127.0.0.1:$LPORT;"
  echo "    client_max_body_size 26m;"
  echo "    location / {"
  echo "      proxy_pass http://scenecomp;"
  echo "      proxy_http_version 1.1;"
  echo "      proxy_set_header Connection \"\";"
  echo "      proxy_request_buffering on;"
  echo "      proxy_read_timeout 120s;"
  echo "      proxy_next_upstream error timeout;"
  echo "    }"
  echo "  }"
  echo "}"
} >"$DIR/nginx/nginx.conf"
nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g 'daemon off;' 2>>"$DIR/nginx/error.log" &
PIDS+=($!)
URL="http://127.0.0.1:$LPORT"
wait_http "$URL/health" 20

echo "fleet: $N instances behind nginx at $URL (Redis 127.0.0.1:$RPORT, files in $DIR)"
echo "  curl $URL/api/admin/fleet            # the instances, from their heartbeats"
echo "  curl $URL/api/admin/metrics/composite  # today_generations, rate_limiter: fleet-wide"
echo "  (admin answers loopback peers; set ADMIN_TOKEN to require a token)"
if [[ ${POLICY_SOURCE:-file} == redis ]]; then
  echo "  REDIS_URL=redis://127.0.0.1:$RPORT/0 $BIN policy push lua/policy.lua  # the fleet's policy"
fi

if ((SMOKE)); then
  for ((i = 0; i < 50; i++)); do
    n=$(curl -fsS "$URL/api/admin/fleet" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["instances"]))')
    [[ $n == "$N" ]] && break
    sleep 0.2
  done
  echo "smoke: /api/admin/fleet lists $n of $N instances"
  [[ $n == "$N" ]]
  exit 0
fi
echo "Ctrl-C stops the fleet."
wait "${PIDS[0]}"
