#!/usr/bin/env bash
# Image benchmark: scenecomp's stages against the Pillow anchor, in one run.
#   1. builds Release into build-bench/ (sc_bench)
#   2. generates the deterministic workload (../shared/bench/gen_inputs.py)
#   3. measures memory bandwidth (membw.c) -> the composite's physical bound
#   4. runs sc_bench, then the Pillow anchor, on the same inputs
#   5. prints the stage lines of both, `ratio stage=S pillow_over_scenecomp=X`
#      per stage, and the output sizes of both
# Env: SC_SHARED_BENCH (default ../shared/bench, relative to the repo),
#      SC_BENCH_DIR (inputs, default /tmp/scenecomp-bench),
#      SC_BENCH_TARGET_S (seconds per stage, default 1.5), BUILD_DIR (build-bench),
#      SC_BENCH_EXTRA=1 adds the x_* stages (the alternatives behind the design).
#      SC_BENCH_HTTP=0 skips the HTTP section, SC_BENCH_HTTP_ANCHORS=1 adds
#      http_anchors.sh to it (see the section at the end).
# Takes about 1 minute on 2 cores (+ ~40 s HTTP, + ~2.5 min with the HTTP anchors).
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

# ==== HTTP (wrk) section =====================================================
# The service over HTTP with the loads of ../shared/bench/http_anchors.sh:
# GET /health (-t2 -c32) and POST /api/composite (scene_1080p.jpg +
# product_rgba.png, format=jpeg, Accept: image/jpeg; -t1 -c8 and -c1), lines
#   tool=scenecomp stage=... rps=.. p50_ms=.. p99_ms=.. requests=.. errors=.. srv_cpu_ms_per_req=..
# Skipped (with a note) when `scenecomp serve` does not come up or wrk is missing.
# SC_BENCH_HTTP_ANCHORS=1 also runs http_anchors.sh (nginx, FastAPI + Pillow; ~2.5 min)
# in the same run and prints `ratio` lines against the FastAPI anchor.
# SC_BENCH_HTTP=0 skips the section. Every server started here is stopped by its pid.
# ==============================================================================
http_section() {
  local bin dur=${SC_BENCH_HTTP_DURATION:-8s} port pid work
  bin=$(cd "$BUILD_DIR" && pwd)/scenecomp
  command -v wrk >/dev/null || { echo "# http: skipped (wrk not installed)"; return 0; }
  command -v curl >/dev/null || { echo "# http: skipped (curl not installed)"; return 0; }
  port=18800
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  work=$(mktemp -d)
  (cd "$work" && exec env HOST=127.0.0.1 PORT="$port" LOGS_DIR="$work/logs" \
     OUTPUT_DIR="$work/output" "$bin" serve) >"$work/serve.log" 2>&1 &
  pid=$!
  local up=0
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && { up=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ((up == 0)); then
    echo "# http: skipped (scenecomp serve did not answer /health; see its log below)"
    tail -3 "$work/serve.log" | sed 's/^/#   /'
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
    return 0
  fi
  local tck
  tck=$(getconf CLK_TCK)
  measure_http() { # STAGE THREADS CONNS URL [wrk args]
    local stage=$1 t=$2 c=$3 url=$4 c0 c1 out; shift 4
    wrk -t"$t" -c"$c" -d2s --timeout 30s "$@" "$url" >/dev/null
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(wrk -t"$t" -c"$c" -d"$dur" --timeout 30s --latency "$@" "$url")
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    awk -v stage="$stage" -v cpu=$((c1 - c0)) -v tck="$tck" -v tc="$t/$c" '
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
        printf "tool=scenecomp stage=%s rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d errors=%d srv_cores=%.2f srv_cpu_ms_per_req=%.4f conns=%s\n",
          stage, rps, p50, p99, n, err, (secs > 0 ? cs / secs : 0), (n > 0 ? cs * 1000 / n : 0), tc
      }' <<<"$out"
  }
  export SCENE=$IN/scene_1080p.jpg PRODUCT=$IN/product_rgba.png FORMAT=jpeg ACCEPT=image/jpeg
  measure_http health 2 32 "http://127.0.0.1:$port/health" | tee -a "$OUT/http.txt"
  measure_http composite_jpeg 1 8 "http://127.0.0.1:$port/api/composite" \
    -s "$SHARED/wrk_composite.lua" | tee -a "$OUT/http.txt"
  measure_http composite_jpeg_c1 1 1 "http://127.0.0.1:$port/api/composite" \
    -s "$SHARED/wrk_composite.lua" | tee -a "$OUT/http.txt"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"

  if [[ ${SC_BENCH_HTTP_ANCHORS:-0} == 1 ]]; then
    BENCH_DIR=$IN DURATION=$dur "$SHARED/http_anchors.sh" | tee "$OUT/http_anchor.txt"
    awk '
      FNR == 1 { file++ }
      /^tool=/ {
        split("", f)
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        if (file == 1) sc[f["stage"]] = f["rps"]
        else if (f["tool"] == "fastapi") fa[f["stage"]] = f["rps"]
      }
      END {
        if (("health" in sc) && ("health_w1" in fa))
          printf "ratio stage=http_health scenecomp_rps_over_fastapi_w1=%.2f\n", sc["health"] / fa["health_w1"]
        if (("composite_jpeg" in sc) && ("composite_jpeg_w1" in fa))
          printf "ratio stage=http_composite_jpeg scenecomp_rps_over_fastapi_w1=%.2f\n", sc["composite_jpeg"] / fa["composite_jpeg_w1"]
        if (("composite_jpeg" in sc) && ("composite_jpeg_w2" in fa))
          printf "ratio stage=http_composite_jpeg scenecomp_rps_over_fastapi_w2=%.2f\n", sc["composite_jpeg"] / fa["composite_jpeg_w2"]
      }' "$OUT/http.txt" "$OUT/http_anchor.txt"
  fi
}
if [[ ${SC_BENCH_HTTP:-1} != 0 ]]; then
  http_section
fi
