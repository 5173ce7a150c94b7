#!/usr/bin/env bash
# The performance benchmark, one run (docs/performance.md is written from it):
#   1. builds Release into build-bench/ (scenecomp, sc_bench, route_bench)
#   2. generates the deterministic workload (../shared/bench/gen_inputs.py)
#   3. image stages: memory bandwidth (membw.c), sc_bench, then the Pillow anchor on
#      the same inputs; `ratio stage=S pillow_over_scenecomp=X` per stage, output sizes,
#      the product cache (one product in 100 scenes, requests/s off vs on)
#   4. route(): sc_policy_route cost with the shipped policy and Lua routes
#   5. HTTP (wrk): scenecomp, nginx (/health) and FastAPI + Pillow (uvloop, 2 workers)
#      with the loads of ../shared/bench/http_anchors.sh, ratio lines against targets
#   6. Kontext at production sizes: 1,000 composites in flight with the real uploads
#      (1080p JPEG scene + 1000x1000 RGBA PNG product) against the local fake Replicate
#      answering after 5 s (bench/kontext_scale.py), four stages on fresh servers:
#      kontext_1000 (one-instant burst: VmHWM < 256 MiB, added p99 < 250 ms),
#      kontext_1000_ramp4s (arrivals over 4 s: VmHWM < 256 MiB, added p99 < 50 ms),
#      kontext_1000_distinct (burst, every scene's bytes unique: JPEG COM segment),
#      kontext_1000_distinct_pixels (burst, every scene's pixels unique; both report only),
#      kontext_1000_1mp_output (burst, a 1392x784 model answer to resize; report only),
#      then fake_creates_1000: the fake alone taking the 1,000 creates of a burst
#      (bench/fake_creates.py), the floor under kontext_1000 on this host;
#      server, fake and client CPU per run
#   7. outage drill (bench/outage_drill.py): 60 s of 100 % Kontext failures under
#      steady load, then recovery; the `drill …` line (no failed request, breaker
#      open p99 < 1 s, closed after recovery)
#   8. fleet (scripts/bench_fleet.sh): admission cost memory vs Redis store, composite
#      throughput through nginx with 1 vs 3 instances (one machine bounds it)
# Env: SC_SHARED_BENCH (default ../shared/bench, relative to the repo),
#      SC_BENCH_DIR (inputs, default /tmp/scenecomp-bench),
#      SC_BENCH_TARGET_S (seconds per image stage, default 1.5), BUILD_DIR (build-bench),
#      SC_BENCH_EXTRA=1 adds the x_* image stages (the alternatives behind the design),
#      SC_BENCH_IMAGE=0 / SC_BENCH_HTTP=0 / SC_BENCH_KONTEXT=0 / SC_BENCH_DRILL=0 /
#      SC_BENCH_FLEET=0 skip sections, SC_BENCH_HTTP_DURATION (8s),
#      SC_BENCH_KONTEXT_N (1000), SC_BENCH_KONTEXT_SMALL=1 (adds the tiny-input
#      160x120 / 64x64 burst and ramp: per-request overhead without image buffers),
#      SC_BENCH_DRILL_OUTAGE_S (60), SC_BENCH_DRILL_AFTER_S (45).
# Needs: SC_BENCH_DEPS=1 ./scripts/install-deps.sh (wrk, nginx, FastAPI, uvloop, httptools).
# Takes about 8 minutes on 2 cores (the drill alone ~2). Every server it starts is stopped by pid on exit.
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

image_section() {
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
  # one product (product_opaque.jpg, keyed), 100 different 1080p JPEG scenes, JPEG out:
  # requests per second on one thread with the product cache off and on
  awk '/stage=product_cache_100_scenes_/ {
      split($2, st, "="); split($3, r, "="); rps[st[2]] = r[2]
    }
    END {
      if (rps["product_cache_100_scenes_off"] > 0)
        printf "ratio stage=product_cache_100_scenes rps_off=%s rps_on=%s on_over_off=%.2f\n",
          rps["product_cache_100_scenes_off"], rps["product_cache_100_scenes_on"],
          rps["product_cache_100_scenes_on"] / rps["product_cache_100_scenes_off"]
    }' "$OUT/sc.txt"
}

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

# ==== Kontext at production sizes =============================================
# scenecomp serve with Kontext for everyone (MAX_CONCURRENT_KONTEXT=1000, limits
# high) against the local fake Replicate (tests/fake/fake_replicate.py) answering
# after 5 s. bench/kontext_scale.py opens N connections, then sends N composites
# with the REAL uploads ($IN/scene_1080p.jpg 1080p JPEG + $IN/product_rgba.png
# 1000x1000 RGBA PNG, ~432 KB a request, 431 MB for 1,000). Each stage runs on a
# fresh server (its own VmHWM and CPU figures); the fake is reset in between:
#   kontext_N             all N in the same instant       targets VmHWM < 256 MiB,
#                                                         added p99 < 250 ms
#   kontext_N_ramp4s      request i at i x 4 s / N (all N still in flight
#                         together, no one-instant CPU queue)  VmHWM < 256 MiB,
#                                                         added p99 < 50 ms
#   kontext_N_distinct    the burst, every scene's bytes unique (a JPEG COM segment
#                         with the request index): no cache keyed on the uploaded
#                         bytes can help (report only)
#   kontext_N_distinct_pixels  the burst, every scene re-encoded with its own pixels
#                         (the COM segment does not survive a server-side re-encode;
#                         this one does): a different scene per request (report only)
#   kontext_N_1mp_output  the burst, the fake answers a ~1 MP image (1392x784) the
#                         server must resize to 1080p and re-encode (report only)
# SC_BENCH_KONTEXT_SMALL=1 adds the tiny-input burst and ramp of before (160x120
# scene, 64x64 product: the per-request overhead without image buffers; report only).
# Lines per stage: the client's `tool=scenecomp stage=S …` (kontext_scale.py: added
# latency, VmHWM, threads, the client's own CPU and write times, and for bursts
# to_create_*: how long after the burst began its creates reached the fake, i.e.
# the part of the added latency spent before the model starts), `tool=scenecomp
# stage=S_cpu srv_cpu_ms_per_req=… fake_cpu_ms_per_req=…`, and
# `ratio stage=S … target_mib=… target_ms=… met=yes|no` (met=n/a: report only).
# ==============================================================================
KONTEXT_BIN=""
KFPID="" KFPORT=""
kontext_fake_start() {  # WORK DELAY_MS; sets KFPID KFPORT
  $PY tests/fake/fake_replicate.py --port 0 --token test --delay-ms "$2" --quiet \
    >"$1/fake.out" 2>"$1/fake.err" &
  KFPID=$!
  SERVER_PIDS+=("$KFPID")
  for _ in $(seq 100); do grep -q READY "$1/fake.out" && break; sleep 0.1; done
  KFPORT=$(sed -n 's/^READY port=//p' "$1/fake.out")
  [[ -n $KFPORT ]] || { echo "# kontext: the fake Replicate did not start"; return 1; }
}
KPID="" KPORT=""
kontext_server_start() {  # WORK [VAR=VALUE...]; sets KPID KPORT (the settings of issue 11)
  local work=$1; shift
  free_port
  KPORT=$port
  (cd "$work" && exec env HOST=127.0.0.1 PORT="$KPORT" LOGS_DIR="$work/logs" OUTPUT_DIR="$work/output" \
     POLICY_FILE="$work/none.lua" USE_KONTEXT_COMPOSITE=true COMPOSITE_METHOD=kontext \
     MAX_CONCURRENT_KONTEXT=1000 MAX_KONTEXT_PER_HOUR=10000000 KONTEXT_DAILY_GENERATION_LIMIT=10000000 \
     REPLICATE_API_TOKEN=test REPLICATE_API_BASE="http://127.0.0.1:$KFPORT/v1" LOG_LEVEL=warning \
     "$@" "$KONTEXT_BIN" serve) >>"$work/serve.log" 2>&1 &
  KPID=$!
  SERVER_PIDS+=("$KPID")
  wait_ready "$KPORT" "$KPID" || { echo "# kontext: scenecomp serve did not come up"; tail -3 "$work/serve.log"; return 1; }
}
kontext_stage() {  # WORK STAGE SCENE PRODUCT FAKE_CONFIG_JSON [kontext_scale.py args]
  local work=$1 stage=$2 scene=$3 product=$4 cfg=$5 c0 c1 f0 f1 t0 t1 n=${SC_BENCH_KONTEXT_N:-1000}
  shift 5
  curl -s -X POST "http://127.0.0.1:$KFPORT/_control/reset" >/dev/null
  [[ $cfg == "{}" ]] || curl -s -X POST -d "$cfg" "http://127.0.0.1:$KFPORT/_control/config" >/dev/null
  # The stage before left ~400 MB of outputs and records in writeback on the same
  # disk; without this the next stage's fsyncs wait behind it (spread after a burst,
  # 3 runs each: added p99 22-49 ms without, 12.0-16.7 ms with).
  sync
  kontext_server_start "$work" || return 1
  c0=$(cpu_ticks "$KPID"); f0=$(cpu_ticks "$KFPID"); t0=$(date +%s.%N)
  $PY bench/kontext_scale.py --port "$KPORT" --pid "$KPID" --scene "$scene" --product "$product" \
    --n "$n" --delay-s 5 --fake-port "$KFPORT" --stage "$stage" "$@" | tee -a "$OUT/kontext.txt" || true
  c1=$(cpu_ticks "$KPID"); f1=$(cpu_ticks "$KFPID"); t1=$(date +%s.%N)
  awk -v s="$stage" -v c="$((c1 - c0))" -v f="$((f1 - f0))" -v tck="$TCK" -v n="$n" -v w="$(echo "$t1 - $t0" | bc)" 'BEGIN {
    printf "tool=scenecomp stage=%s_cpu srv_cpu_ms_per_req=%.3f srv_cpu_s=%.2f fake_cpu_ms_per_req=%.3f fake_cpu_s=%.2f wall_s=%.2f\n",
      s, c / tck * 1000 / n, c / tck, f / tck * 1000 / n, f / tck, w }' | tee -a "$OUT/kontext.txt"
  stop_tree "$KPID"
}

kontext_section() {
  local work n=${SC_BENCH_KONTEXT_N:-1000}
  KONTEXT_BIN=$(cd "$BUILD_DIR" && pwd)/scenecomp
  work=$OUT/kontext
  mkdir -p "$work"
  : >"$OUT/kontext.txt"
  kontext_fake_start "$work" 5000 || return 1
  local scene=$IN/scene_1080p.jpg product=$IN/product_rgba.png
  kontext_stage "$work" "kontext_$n" "$scene" "$product" '{}'
  kontext_stage "$work" "kontext_${n}_ramp4s" "$scene" "$product" '{}' --ramp-s 4
  kontext_stage "$work" "kontext_${n}_distinct" "$scene" "$product" '{}' --distinct-scenes
  kontext_stage "$work" "kontext_${n}_distinct_pixels" "$scene" "$product" '{}' --distinct-pixels
  kontext_stage "$work" "kontext_${n}_1mp_output" "$scene" "$product" \
    '{"output_width": 1392, "output_height": 784}'
  if [[ ${SC_BENCH_KONTEXT_SMALL:-0} != 0 ]]; then
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
    kontext_stage "$work" "kontext_${n}_small" "$work/scene.jpg" "$work/product.png" '{}'
    kontext_stage "$work" "kontext_${n}_small_ramp4s" "$work/scene.jpg" "$work/product.png" '{}' --ramp-s 4
  fi
  # The floor under kontext_N on this host: the fake alone taking the N creates
  # (bench/fake_creates.py, same inputs, nothing else running but its client).
  curl -s -X POST "http://127.0.0.1:$KFPORT/_control/reset" >/dev/null
  $PY bench/fake_creates.py --fake-port "$KFPORT" --pid "$KFPID" --scene "$scene" \
    --product "$product" --n "$n" | tee -a "$OUT/kontext.txt" || true
  stop_tree "$KFPID"
  awk -v n="$n" '
    /^tool=fake stage=fake_creates_/ {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); fc[kv[1]] = kv[2] }
      next
    }
    /^tool=scenecomp stage=kontext_/ {
      split("", f)
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      s = f["stage"]
      if (s ~ /_cpu$/) { s = substr(s, 1, length(s) - 4); srv[s] = f["srv_cpu_ms_per_req"]; fk[s] = f["fake_cpu_ms_per_req"]; next }
      order[++m] = s
      for (k in f) v[s, k] = f[k]
    }
    END {
      for (i = 1; i <= m; i++) {
        s = order[i]
        tms = ""; tmib = ""
        if (s == "kontext_" n) { tms = 250; tmib = 256 }
        else if (s == "kontext_" n "_ramp4s") { tms = 50; tmib = 256 }
        all = v[s, "kontext"] + v[s, "errors"] + v[s, "fallback"]
        if (tms == "") met = "n/a"
        else met = (v[s, "kontext"] == n && all == n && v[s, "vmhwm_mib"] < tmib && v[s, "added_p99_ms"] < tms) ? "yes" : "no"
        printf "ratio stage=%s completed=%s/%s fallback=%s errors=%s vmhwm_mib=%s target_mib=%s added_p50_ms=%s added_p99_ms=%s target_ms=%s met=%s threads_max=%s in_flight_together=%s srv_cpu_ms_per_req=%s fake_cpu_ms_per_req=%s client_cpu_share=%s sent_p99_ms=%s to_create_p99_ms=%s\n",
          s, v[s, "kontext"], all, v[s, "fallback"], v[s, "errors"], v[s, "vmhwm_mib"], (tmib == "" ? "none" : "<" tmib),
          v[s, "added_p50_ms"], v[s, "added_p99_ms"], (tms == "" ? "none" : "<" tms), met, v[s, "threads_max"],
          v[s, "client_max_inflight"], srv[s], fk[s], v[s, "client_cpu_share"], v[s, "sent_p99_ms"],
          (v[s, "to_create_p99_ms"] == "" ? "n/a" : v[s, "to_create_p99_ms"])
      }
      if (fc["stage"] != "")
        printf "ratio stage=%s completed=%s/%s p50_ms=%s p99_ms=%s target_ms=none met=n/a fake_cpu_ms_per_req=%s floor_of=kontext_%s\n",
          fc["stage"], fc["completed"], n, fc["p50_ms"], fc["p99_ms"], fc["fake_cpu_ms_per_req"], n
    }' "$OUT/kontext.txt"
}

# ==== Outage drill (issue 11), full length =====================================
# bench/outage_drill.py (the drill test_outage_protection.py runs short): scenecomp
# serve as in the Kontext section, the shipped breaker defaults (API.md: failure_rate
# 0.5, min_calls 10, window 60 s, open 30 s, 1 half-open call), the fake's model
# time 1 s; 4 closed-loop clients post scene_1080p.jpg + product_rgba.png (JSON
# answer) throughout: 5 s healthy, then the fake fails 100 % (HTTP 500 on every
# create, get and download) for SC_BENCH_DRILL_OUTAGE_S (60) s, then recovers for
# SC_BENCH_DRILL_AFTER_S (45: more than open_seconds + a trial) s. Prints the
# `drill …` line: failed must be 0, open p99 < 1 s, the breaker closed after recovery.
# ==============================================================================
drill_section() {
  local work=$OUT/drill
  mkdir -p "$work"
  KONTEXT_BIN=$(cd "$BUILD_DIR" && pwd)/scenecomp
  kontext_fake_start "$work" 1000 || return 1
  kontext_server_start "$work" || return 1
  local c0 f0 c1 f1
  c0=$(cpu_ticks "$KPID"); f0=$(cpu_ticks "$KFPID")
  $PY bench/outage_drill.py --port "$KPORT" --fake-port "$KFPORT" --scene "$IN/scene_1080p.jpg" \
    --product "$IN/product_rgba.png" --outage-s "${SC_BENCH_DRILL_OUTAGE_S:-60}" \
    --after-s "${SC_BENCH_DRILL_AFTER_S:-45}" --clients 4 --delay-ms 1000 || true
  c1=$(cpu_ticks "$KPID"); f1=$(cpu_ticks "$KFPID")
  echo "# drill: server CPU $(echo "scale=2; ($c1 - $c0) / $TCK" | bc) s, fake CPU $(echo "scale=2; ($f1 - $f0) / $TCK" | bc) s;" \
       "breaker log lines (LOG_LEVEL=warning): $(grep -o '\[Breaker\] [a-z-]*' "$work/serve.log" | sort | uniq -c | sed 's/^ *//' | paste -sd, -)"
  stop_tree "$KPID"
  stop_tree "$KFPID"
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

if [[ ${SC_BENCH_IMAGE:-1} != 0 ]]; then
  image_section
fi
echo "# ---- route() cost"
route_section | tee "$OUT/route.txt"
awk '/stage=route_/ { split($3, kv, "="); printf "ratio stage=%s ns=%s target_ns=<2000\n", substr($2, 7), kv[2] }' "$OUT/route.txt"
if [[ ${SC_BENCH_HTTP:-1} != 0 ]]; then
  echo "# ---- HTTP (wrk ${DUR} per measurement after a 2 s warm-up)"
  http_section
fi
if [[ ${SC_BENCH_KONTEXT:-1} != 0 ]]; then
  echo "# ---- Kontext at production sizes (1080p JPEG scene + 1000x1000 RGBA PNG product)"
  kontext_section
fi
if [[ ${SC_BENCH_DRILL:-1} != 0 ]]; then
  echo "# ---- Outage drill (${SC_BENCH_DRILL_OUTAGE_S:-60} s of 100 % Kontext failures, steady load)"
  drill_section
fi
if [[ ${SC_BENCH_FLEET:-1} != 0 ]]; then
  echo "# ---- Fleet (admission cost, 1 vs 3 instances behind nginx)"
  BUILD_DIR=$BUILD_DIR SC_BENCH_DIR=$IN SC_SHARED_BENCH=$SHARED SC_BENCH_HTTP_DURATION=${SC_BENCH_HTTP_DURATION:-8s} \
    ./scripts/bench_fleet.sh
fi
