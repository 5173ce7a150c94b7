/* CPU feature detection for the image kernels (see simd.h). */
#include "image/simd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t simd_once = PTHREAD_ONCE_INIT;
static sc_simd_level_t simd_cpu = SC_SIMD_SCALAR;
static sc_simd_level_t simd_used = SC_SIMD_SCALAR;

static void simd_detect(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        simd_cpu = SC_SIMD_AVX2;
    if (simd_cpu == SC_SIMD_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vbmi"))
        simd_cpu = SC_SIMD_AVX512;
    simd_used = simd_cpu;
    const char *cap = getenv("SC_SIMD");
    if (cap) {
        sc_simd_level_t c = simd_cpu;
        if (strcmp(cap, "scalar") == 0)
            c = SC_SIMD_SCALAR;
        else if (strcmp(cap, "avx2") == 0)
            c = SC_SIMD_AVX2;
        if (c < simd_used)
            simd_used = c;
    }
}

sc_simd_level_t sc_simd_level(void)
{
    pthread_once(&simd_once, simd_detect);
    return simd_used;
}

sc_simd_level_t sc_simd_cpu_level(void)
{
    pthread_once(&simd_once, simd_detect);
    return simd_cpu;
}

const char *sc_simd_name(sc_simd_level_t l)
{
    switch (l) {
    case SC_SIMD_AVX512:
        return "avx512";
    case SC_SIMD_AVX2:
        return "avx2";
    default:
        return "scalar";
    }
}
