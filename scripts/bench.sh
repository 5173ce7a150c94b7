#!/usr/bin/env bash
# The performance benchmark, one run (docs/performance.md is written from it):
#   1. builds Release into build-bench/ (scenecomp, sc_bench, route_bench)
#   2. generates the deterministic workload (../shared/bench/gen_inputs.py)
#   3. image stages: memory bandwidth (membw.c), sc_bench, then the Pillow anchor on
#      the same inputs; `ratio stage=S pillow_over_scenecomp=X` per stage, output sizes
#   4. route(): sc_policy_route cost with the shipped policy and Lua routes
#   5. HTTP (wrk): scenecomp, nginx (/health) and FastAPI + Pillow (uvloop, 2 workers)
#      with the loads of ../shared/bench/http_anchors.sh, ratio lines against targets
#   6. Kontext at scale: 1,000 composites in flight against the local fake Replicate
#      answering after 5 s (bench/kontext_scale.py)
#   7. fleet (scripts/bench_fleet.sh): admission cost memory vs Redis store, composite
#      throughput through nginx with 1 vs 3 instances (one machine bounds it)
# Env: SC_SHARED_BENCH (default ../shared/bench, relative to the repo),
#      SC_BENCH_DIR (inputs, default /tmp/scenecomp-bench),
#      SC_BENCH_TARGET_S (seconds per image stage, default 1.5), BUILD_DIR (build-bench),
#      SC_BENCH_EXTRA=1 adds the x_* image stages (the alternatives behind the design),
#      SC_BENCH_HTTP=0 / SC_BENCH_KONTEXT=0 / SC_BENCH_FLEET=0 skip sections, SC_BENCH_HTTP_DURATION (8s),
#      SC_BENCH_KONTEXT_N (1000).
# Needs: SC_BENCH_DEPS=1 ./scripts/install-deps.sh (wrk, nginx, FastAPI, uvloop, httptools).
# Takes about 3.5 minutes on 2 cores. Every server it starts is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SC_SHARED_BENCH:-../shared/bench}
IN=${SC_BENCH_DIR:-/tmp/scenecomp-bench}
TARGET_S=${SC_BENCH_TARGET_S:-1.5}
BUILD_DIR=${BUILD_DIR:-build-bench}
PY=/usr/bin/python3
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

[[ -f $SHARED/anchor_pillow.py ]] || { echo "bench.sh: no $SHARED/anchor_pillow.py (set SC_SHARED_BENCH)" >&2; exit 1; }

echo "# command: scripts/bench.sh (SC_BENCH_TARGET_S=$TARGET_S)"
echo "# machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# gcc: $(gcc -dumpfullversion), $(/usr/bin/python3 -c 'import PIL; print("Pillow", PIL.__version__)')"

BUILD_DIR=$BUILD_DIR BUILD_TYPE=Release ./scripts/build.sh >/dev/null

need=(scene_1080p.png scene_1080p.jpg scene_4k.png product_rgba.png product_opaque.jpg)
for f in "${need[@]}"; do
  [[ -f $IN/$f ]] || { $PY "$SHARED/gen_inputs.py" "$IN" >/dev/null; break; }
done

# ---- physical limit of the composite kernel
gcc -O3 -march=native -o "$OUT/membw" "$SHARED/membw.c"
"$OUT/membw" 64 10 >"$OUT/membw.txt"
grep -E '^tool=(limit|c_ref)|stage=triad' "$OUT/membw.txt"

# ---- scenecomp, then Pillow, same inputs, same method
"$BUILD_DIR/sc_bench" "$IN" --target-s "$TARGET_S" ${SC_BENCH_EXTRA:+--extra} | tee "$OUT/sc.txt"
$PY "$SHARED/anchor_pillow.py" "$IN" --target-s "$TARGET_S" | tee "$OUT/pil.txt"

# ---- ratios
awk '
  FNR == 1 { file++ }
  /^tool=/ {
    split("", f)
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if (file == 1) sc[f["stage"]] = f["ms"]; else if (file == 2) pil[f["stage"]] = f["ms"]
    if (file == 1) order[++n] = f["stage"]
  }
  /^tool=limit stage=composite_region_768/ && file == 3 {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "ms_dram_median") bound = kv[2] }
  }
  END {
    for (i = 1; i <= n; i++) {
      s = order[i]
      if (s in pil) printf "ratio stage=%s pillow_over_scenecomp=%.2f pillow_ms=%s scenecomp_ms=%s\n", s, pil[s] / sc[s], pil[s], sc[s]
    }
    if (bound > 0 && ("composite_paste" in sc))
      printf "bound stage=composite_paste dram_bound_ms=%.3f scenecomp_over_bound=%.2f\n", bound, sc["composite_paste"] / bound
  }' "$OUT/sc.txt" "$OUT/pil.txt" "$OUT/membw.txt"

echo "# output sizes (bytes), the same composited 1080p frame:"
grep '^# scenecomp output sizes' "$OUT/sc.txt" | sed 's/^# /  /'
grep '^# pillow' "$OUT/pil.txt" | sed 's/^# /  /'
png_sc=$(grep -o 'png_l6=[0-9]*' "$OUT/sc.txt" | head -1 | cut -d= -f2)
png_pil=$(grep -o 'png_l6=[0-9]*' "$OUT/pil.txt" | head -1 | cut -d= -f2)
if [[ -n $png_sc && -n $png_pil ]]; then
  awk -v a="$png_sc" -v b="$png_pil" 'BEGIN { printf "size stage=encode_png_l6 scenecomp_over_pillow=%.4f\n", a / b }'
fi

# ==== HTTP (wrk) section: scenecomp vs nginx vs FastAPI + Pillow, same run ====
# The loads of ../shared/bench/http_anchors.sh: GET /health with wrk -t2 -c32;
# POST /api/composite (scene_1080p.jpg + product_rgba.png, format=jpeg,
# Accept: image/jpeg, wrk_composite.lua) with -t1 -c8 and -t1 -c1.
# Anchors: nginx_anchor.sh (/health, the practical ceiling) and
# anchor_fastapi_service.py with uvloop + httptools, 2 workers (the stack replaced).
# Lines: tool=… stage=… rps=… p50_ms=… p99_ms=… requests=… errors=… srv_cores=…
#        srv_cpu_ms_per_req=… conns=T/C   and `ratio stage=… …` lines.
# Every server started here is stopped by its own pid (trap).
# ==============================================================================
TCK=$(getconf CLK_TCK)
SERVER_PIDS=()
NGINX_PORT=""
cleanup() {
  local p
  for p in "${SERVER_PIDS[@]}"; do [[ -n $p ]] && stop_tree "$p"; done
  [[ -n $NGINX_PORT ]] && "$SHARED/nginx_anchor.sh" stop "$NGINX_PORT" >/dev/null 2>&1
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tree_pids() { local p; echo "$1"; for p in $(pgrep -P "$1" || true); do tree_pids "$p"; done; }
cpu_ticks() {
  local p t=0 f
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) }
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo $t
}
stop_tree() {
  local pid=$1 kids p
  kids=$(tree_pids "$pid" | tail -n +2)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in $kids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  local keep=() q
  for q in "${SERVER_PIDS[@]}"; do [[ $q == "$pid" ]] || keep+=("$q"); done
  SERVER_PIDS=("${keep[@]}")
  return 0
}
PORT_NEXT=18800
free_port() {  # sets $port
  port=$PORT_NEXT
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  PORT_NEXT=$((port + 1))
}
wait_ready() {  # PORT PID
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/health" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
DUR=${SC_BENCH_HTTP_DURATION:-8s}
measure() {  # TOOL STAGE ROOTPID THREADS CONNS URL [wrk args]
  local tool=$1 stage=$2 root=$3 t=$4 c=$5 url=$6 pids c0 c1 out; shift 6
  wrk -t"$t" -c"$c" -d2s --timeout 30s "$@" "$url" >/dev/null
  pids=$(tree_pids "$root")
  c0=$(cpu_ticks $pids)
  out=$(wrk -t"$t" -c"$c" -d"$DUR" --timeout 30s --latency "$@" "$url")
  c1=$(cpu_ticks $pids)
  awk -v tool="$tool" -v stage="$stage" -v cpu=$((c1 - c0)) -v tck="$TCK" -v tc="$t/$c" '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v
    }
    $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
    / requests in / { n = $1; secs = $4 + 0 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END {
      cs = cpu / tck
      printf "tool=%s stage=%s rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d errors=%d srv_cores=%.2f srv_cpu_ms_per_req=%.4f conns=%s\n",
        tool, stage, rps, p50, p99, n, err, (secs > 0 ? cs / secs : 0), (n > 0 ? cs * 1000 / n : 0), tc
    }' <<<"$out" | tee -a "$OUT/http.txt"
}

http_section() {
  local bin port pid work
  bin=$(cd "$BUILD_DIR" && pwd)/scenecomp
  command -v wrk >/dev/null && command -v curl >/dev/null && command -v nginx >/dev/null &&
    $PY -c 'import fastapi, uvicorn, multipart, uvloop, httptools' 2>/dev/null || {
    echo "# http: skipped (needs wrk, curl, nginx, FastAPI/uvicorn/uvloop/httptools:" \
         "SC_BENCH_DEPS=1 ./scripts/install-deps.sh)"
    return 0
  }
  export SCENE=$IN/scene_1080p.jpg PRODUCT=$IN/product_rgba.png FORMAT=jpeg ACCEPT=image/jpeg
  work=$OUT/serve
  mkdir -p "$work"

  # -- scenecomp (defaults: PIL, the embedded policy, connection/compute threads by core count)
  free_port
  (cd "$work" && exec env HOST=127.0.0.1 PORT="$port" LOGS_DIR="$work/logs" \
     OUTPUT_DIR="$work/output" POLICY_FILE="$work/none.lua" "$bin" serve) >"$work/serve.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  if ! wait_ready "$port" "$pid"; then
    echo "# http: scenecomp serve did not come up:"; tail -3 "$work/serve.log" | sed 's/^/#   /'
    return 1
  fi
  measure scenecomp health "$pid" 2 32 "http://127.0.0.1:$port/health"
  measure scenecomp composite_jpeg "$pid" 1 8 "http://127.0.0.1:$port/api/composite" -s "$SHARED/wrk_composite.lua"
  measure scenecomp composite_jpeg_c1 "$pid" 1 1 "http://127.0.0.1:$port/api/composite" -s "$SHARED/wrk_composite.lua"
  echo "# scenecomp threads during the run: $(awk '/^Threads/ {print $2}' "/proc/$pid/status")," \
       "VmHWM $(awk '/^VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"
  stop_tree "$pid"

  # -- nginx /health: the practical ceiling
  free_port
  NGINX_PORT=$port
  pid=$("$SHARED/nginx_anchor.sh" start "$port" 2>/dev/null)
  wait_ready "$port" "$pid" || { echo "# http: nginx did not come up"; return 1; }
  measure nginx health_w2 "$pid" 2 32 "http://127.0.0.1:$port/health"
  "$SHARED/nginx_anchor.sh" stop "$port" >/dev/null
  NGINX_PORT=""

  # -- FastAPI + Pillow, uvloop + httptools, 2 workers
  free_port
  $PY "$SHARED/anchor_fastapi_service.py" --port "$port" --workers 2 --output-dir "$work/fa_out" \
    --loop uvloop --http httptools >"$work/fastapi.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  wait_ready "$port" "$pid" || { echo "# http: FastAPI anchor did not come up"; return 1; }
  measure fastapi_uvloop health_w2 "$pid" 2 32 "http://127.0.0.1:$port/health"
  measure fastapi_uvloop composite_jpeg_w2 "$pid" 1 8 "http://127.0.0.1:$port/api/composite" -s "$SHARED/wrk_composite.lua"
  measure fastapi_uvloop composite_jpeg_w2_c1 "$pid" 1 1 "http://127.0.0.1:$port/api/composite" -s "$SHARED/wrk_composite.lua"
  stop_tree "$pid"

  awk '
    /^tool=/ {
      split("", f)
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      rps[f["tool"] "/" f["stage"]] = f["rps"]; p50[f["tool"] "/" f["stage"]] = f["p50_ms"]
    }
    function r(name, a, b, key, target) {
      if (b + 0 > 0) printf "ratio stage=%s %s=%.2f target=%s\n", name, key, a / b, target
    }
    END {
      r("http_health", rps["scenecomp/health"], rps["nginx/health_w2"], "scenecomp_rps_over_nginx", ">=0.5")
      r("http_health", rps["scenecomp/health"], rps["fastapi_uvloop/health_w2"], "scenecomp_rps_over_fastapi_uvloop_w2", ">=5")
      r("http_composite_jpeg", rps["scenecomp/composite_jpeg"], rps["fastapi_uvloop/composite_jpeg_w2"], "scenecomp_rps_over_fastapi_uvloop_w2", ">=2.5")
      r("http_composite_jpeg_c1", p50["scenecomp/composite_jpeg_c1"], p50["fastapi_uvloop/composite_jpeg_w2_c1"], "scenecomp_p50_over_fastapi_uvloop_w2", "<=0.4")
    }' "$OUT/http.txt"
}

# ==== Kontext at scale ========================================================
# scenecomp serve with Kontext for everyone (MAX_CONCURRENT_KONTEXT=1000, limits
# high) against the local fake Replicate (tests/fake/fake_replicate.py) answering
# after 5 s; bench/kontext_scale.py sends N composites at once (small inputs:
# 160x120 JPEG scene, 64x64 RGBA PNG product, so the figure is the per-request
# overhead, not image buffers) and reports completions, method, added latency,
# VmHWM and the thread count. SC_BENCH_KONTEXT_N (default 1000).
# ==============================================================================
kontext_section() {
  local bin work fpid fport port pid n=${SC_BENCH_KONTEXT_N:-1000} c0 c1 f0 f1 t0 t1
  bin=$(cd "$BUILD_DIR" && pwd)/scenecomp
  work=$OUT/kontext
  mkdir -p "$work"
  $PY - "$work" <<'PYEOF'
import sys
from PIL import Image, ImageDraw
d = sys.argv[1]
s = Image.new("RGB", (160, 120))
g = ImageDraw.Draw(s)
for i in range(0, 160, 8):
    g.line([(i, 0), (160 - i, 120)], fill=(i, 255 - i, (3 * i) % 256))
s.save(d + "/scene.jpg", quality=90)
p = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
ImageDraw.Draw(p).ellipse([4, 4, 60, 60], fill=(200, 40, 40, 255))
p.save(d + "/product.png")
PYEOF
  $PY tests/fake/fake_replicate.py --port 0 --token test --delay-ms 5000 --quiet \
    >"$work/fake.out" 2>"$work/fake.err" &
  fpid=$!
  SERVER_PIDS+=("$fpid")
  for _ in $(seq 100); do grep -q READY "$work/fake.out" && break; sleep 0.1; done
  fport=$(sed -n 's/^READY port=//p' "$work/fake.out")
  [[ -n $fport ]] || { echo "# kontext: the fake Replicate did not start"; return 1; }
  free_port
  (cd "$work" && exec env HOST=127.0.0.1 PORT="$port" LOGS_DIR="$work/logs" OUTPUT_DIR="$work/output" \
     POLICY_FILE="$work/none.lua" USE_KONTEXT_COMPOSITE=true COMPOSITE_METHOD=kontext \
     MAX_CONCURRENT_KONTEXT=1000 MAX_KONTEXT_PER_HOUR=10000000 KONTEXT_DAILY_GENERATION_LIMIT=10000000 \
     REPLICATE_API_TOKEN=test REPLICATE_API_BASE="http://127.0.0.1:$fport/v1" LOG_LEVEL=warning \
     "$bin" serve) >"$work/serve.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  wait_ready "$port" "$pid" || { echo "# kontext: scenecomp serve did not come up"; tail -3 "$work/serve.log"; return 1; }
  c0=$(cpu_ticks "$pid"); f0=$(cpu_ticks "$fpid"); t0=$(date +%s.%N)
  $PY bench/kontext_scale.py --port "$port" --pid "$pid" --scene "$work/scene.jpg" \
    --product "$work/product.png" --n "$n" --delay-s 5 --fake-port "$fport" | tee "$OUT/kontext.txt" || true
  c1=$(cpu_ticks "$pid"); f1=$(cpu_ticks "$fpid"); t1=$(date +%s.%N)
  # The same N again, arrivals spread over 4 s (< the 5 s model time, so all N
  # are still in flight together): the added latency without the burst's queue.
  curl -s -X POST "http://127.0.0.1:$fport/_control/reset" >/dev/null
  $PY bench/kontext_scale.py --port "$port" --pid "$pid" --scene "$work/scene.jpg" \
    --product "$work/product.png" --n "$n" --delay-s 5 --fake-port "$fport" --ramp-s 4 \
    | tee -a "$OUT/kontext.txt" || true
  awk -v c="$((c1 - c0))" -v f="$((f1 - f0))" -v tck="$TCK" -v n="$n" -v w="$(echo "$t1 - $t0" | bc)" 'BEGIN {
    printf "tool=scenecomp stage=kontext_%d_cpu srv_cpu_ms_per_req=%.3f srv_cpu_s=%.2f fake_cpu_s=%.2f wall_s=%.2f\n",
      n, c / tck * 1000 / n, c / tck, f / tck, w }'
  stop_tree "$pid"
  stop_tree "$fpid"
  awk '/stage=kontext_/ {
      split("", f)
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "ratio stage=%s completed=%s/%s fallback=%s vmhwm_mib=%s target_mib=<256 added_p50_ms=%s added_p99_ms=%s target_ms=<50 threads_max=%s in_flight_together=%s\n",
        f["stage"], f["kontext"], f["completed"] + f["errors"] + f["fallback"], f["fallback"], f["vmhwm_mib"], f["added_p50_ms"], f["added_p99_ms"], f["threads_max"], f["client_max_inflight"]
    }' "$OUT/kontext.txt"
}

# ==== route() decision cost ====================================================
# bench/route_bench.c calls sc_policy_route in a loop (batches of 1000, median).
# Built by CMake as route_bench in this Release build.
# ==============================================================================
route_section() {
  cp "$BUILD_DIR/route_bench" "$OUT/route_bench"
  mkdir -p "$OUT/route"
  cat >"$OUT/route/small_route.lua" <<'LUAEOF'
-- a small custom route: 10 % of users (stable bucket) to Kontext, the rest PIL
return {
  use_kontext = true,
  method = "kontext",
  route = function(req, ctx)
    if req.user_id and ctx.bucket(req.user_id, "kontext") < 10 then
      return "kontext"
    end
    return "pil"
  end,
}
LUAEOF
  "$OUT/route_bench" route_shipped lua/policy.lua "$OUT/route"
  "$OUT/route_bench" route_percent_rollout examples/policies/percent_rollout.lua "$OUT/route"
  "$OUT/route_bench" route_lua_small "$OUT/route/small_route.lua" "$OUT/route"
  "$OUT/route_bench" route_lua_time_window examples/policies/time_window.lua "$OUT/route"
}

echo "# ---- route() cost"
route_section | tee "$OUT/route.txt"
awk '/stage=route_/ { split($3, kv, "="); printf "ratio stage=%s ns=%s target_ns=<2000\n", substr($2, 7), kv[2] }' "$OUT/route.txt"
if [[ ${SC_BENCH_HTTP:-1} != 0 ]]; then
  echo "# ---- HTTP (wrk ${DUR} per measurement after a 2 s warm-up)"
  http_section
fi
if [[ ${SC_BENCH_KONTEXT:-1} != 0 ]]; then
  echo "# ---- Kontext at scale"
  kontext_section
fi
if [[ ${SC_BENCH_FLEET:-1} != 0 ]]; then
  echo "# ---- Fleet (admission cost, 1 vs 3 instances behind nginx)"
  BUILD_DIR=$BUILD_DIR SC_BENCH_DIR=$IN SC_SHARED_BENCH=$SHARED SC_BENCH_HTTP_DURATION=${SC_BENCH_HTTP_DURATION:-8s} \
    ./scripts/bench_fleet.sh
fi
