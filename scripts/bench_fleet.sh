#!/usr/bin/env bash
# The fleet stage of scripts/bench.sh (runs alone too):
#   1. admission cost, memory store against the Redis store: p50/p99 µs per
#      take+release (bench/limits_bench.c, one thread, Redis on loopback)
#   2. composite throughput (PIL, 1080p JPEG scene, Accept: image/jpeg) through
#      nginx in front of 1 instance, then 3 instances (scripts/fleet.sh,
#      LIMITS_STORE=redis), wrk -t1 -c8. On one machine every instance shares
#      the same cores, so this measures the cost of the fleet's plumbing, not
#      the gain of more machines: the 3-instance figure is bounded by this box.
# Env: BUILD_DIR (build-bench), SC_BENCH_DIR (inputs), SC_SHARED_BENCH,
#      SC_BENCH_HTTP_DURATION (8s). Every process is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SC_SHARED_BENCH:-../shared/bench}
IN=${SC_BENCH_DIR:-/tmp/scenecomp-bench}
BUILD_DIR=${BUILD_DIR:-build-bench}
DUR=${SC_BENCH_HTTP_DURATION:-8s}
PY=/usr/bin/python3
PIDS=()
OUT=$(mktemp -d)
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[[ -x $BUILD_DIR/limits_bench ]] || BUILD_DIR=$BUILD_DIR BUILD_TYPE=Release ./scripts/build.sh >/dev/null

# ---- 1. admission cost
"$BUILD_DIR/limits_bench" memory
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
  --logfile "$OUT/redis.log" &
rpid=$!
PIDS+=("$rpid")
for _ in $(seq 100); do [[ $(redis-cli -p "$rport" ping 2>/dev/null || true) == PONG ]] && break; sleep 0.05; done
"$BUILD_DIR/limits_bench" redis "redis://127.0.0.1:$rport/0"
kill "$rpid"
wait "$rpid" 2>/dev/null || true

# ---- 2. composite throughput through nginx, 1 vs 3 instances
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || [[ ! -f $SHARED/wrk_composite.lua ]]; then
  echo "# fleet http: skipped (needs wrk, nginx and $SHARED/wrk_composite.lua; SC_BENCH_DEPS=1 ./scripts/install-deps.sh)"
  exit 0
fi
[[ -f $IN/scene_1080p.jpg ]] || $PY "$SHARED/gen_inputs.py" "$IN" >/dev/null
export SCENE=$IN/scene_1080p.jpg PRODUCT=$IN/product_rgba.png FORMAT=jpeg ACCEPT=image/jpeg
bin=$(cd "$BUILD_DIR" && pwd)/scenecomp
for n in 1 3; do
  lport=$(free_port)
  FLEET_CLEAN=1 FLEET_N=$n FLEET_PORT=$lport SCENECOMP_BIN=$bin LOG_LEVEL=warning ./scripts/fleet.sh >"$OUT/fleet$n.log" 2>&1 &
  fpid=$!
  PIDS+=("$fpid")
  for _ in $(seq 400); do grep -q '^fleet:' "$OUT/fleet$n.log" && break; sleep 0.05; done
  grep -q '^fleet:' "$OUT/fleet$n.log" || { echo "# fleet http: fleet.sh did not come up"; cat "$OUT/fleet$n.log"; exit 1; }
  url="http://127.0.0.1:$lport/api/composite"
  wrk -t1 -c8 -d2s --timeout 30s -s "$SHARED/wrk_composite.lua" "$url" >/dev/null
  out=$(wrk -t1 -c8 -d"$DUR" --timeout 30s --latency -s "$SHARED/wrk_composite.lua" "$url")
  awk -v n="$n" '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v
    }
    $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END { printf "tool=scenecomp stage=fleet_nginx_composite_jpeg instances=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d conns=1/8\n", n, rps, p50, p99, reqs, err }' \
    <<<"$out" | tee -a "$OUT/fleet.txt"
  kill "$fpid"
  wait "$fpid" 2>/dev/null || true
done
awk '/stage=fleet_nginx/ { split($4, kv, "="); split($3, nn, "="); r[nn[2]] = kv[2] }
  END { if (r[1] > 0) printf "ratio stage=fleet_nginx_composite_jpeg three_over_one=%.2f cores=%d (one machine: the instances share its cores)\n", r[3] / r[1], '"$(nproc)"' }' "$OUT/fleet.txt"
