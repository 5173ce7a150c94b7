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
# Takes about 2 minutes on 2 cores.
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
# To be added: start `build/scenecomp serve` on 127.0.0.1 (free port), run the
# same wrk loads as ../shared/bench/http_anchors.sh (GET /health -t2 -c32;
# POST /api/composite scene_1080p.jpg + product_rgba.png, format=jpeg,
# -t1 -c8 and -c1), print `tool=scenecomp stage=http_* rps=.. p50_ms=.. p99_ms=..`
# and the ratios against http_anchors.sh's figures, then stop the server by pid.
# ==============================================================================
