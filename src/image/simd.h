/* Runtime SIMD dispatch for the image kernels. Every kernel has a scalar
 * reference; the SIMD variants must produce the same bytes (the unit tests
 * compare them). The level is detected once with __builtin_cpu_supports and
 * can be capped with the environment variable SC_SIMD=scalar|avx2|avx512
 * (read once; for benchmarks and tests). Thread-safe. */
#ifndef SCENECOMP_IMAGE_SIMD_H
#define SCENECOMP_IMAGE_SIMD_H

typedef enum {
    SC_SIMD_SCALAR = 0,
    SC_SIMD_AVX2 = 1,   /* AVX2 (+ SSSE3/SSE4.1, which every AVX2 CPU has) */
    SC_SIMD_AVX512 = 2, /* AVX-512 F/BW/VL/VBMI */
} sc_simd_level_t;

/* The best level this CPU supports, capped by SC_SIMD. */
sc_simd_level_t sc_simd_level(void);
/* What the CPU supports, ignoring SC_SIMD (tests use it to know what to compare). */
sc_simd_level_t sc_simd_cpu_level(void);
const char *sc_simd_name(sc_simd_level_t l);

#endif
