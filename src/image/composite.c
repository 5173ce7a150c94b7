/* Straight-alpha "over" row kernels (composite.h).
 *
 * The RGB-scene kernel is the hot one (the service composites onto decoded
 * RGB scenes). All levels compute round(x / 255) for x = p*a + s*(255-a)
 * (<= 65025) as ((x + 128) + ((x + 128) >> 8)) >> 8, exact over that range, so
 * they agree byte for byte. SIMD levels skip 8/16-pixel groups that are fully
 * transparent and copy fully opaque ones: a cut-out product is mostly one or
 * the other. */
#include "image/composite.h"

#include <immintrin.h>
#include <string.h>

static inline uint8_t div255(unsigned x)
{
    x += 128;
    return (uint8_t)((x + (x >> 8)) >> 8);
}

static void over_rgb_scalar(uint8_t *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++, d += 3, p += 4) {
        unsigned a = p[3];
        if (a == 0)
            continue;
        if (a == 255) {
            d[0] = p[0];
            d[1] = p[1];
            d[2] = p[2];
            continue;
        }
        unsigned na = 255 - a;
        d[0] = div255(p[0] * a + d[0] * na);
        d[1] = div255(p[1] * a + d[1] * na);
        d[2] = div255(p[2] * a + d[2] * na);
    }
}

static inline __attribute__((target("avx2"))) __m256i blend16(__m256i c, __m256i a, __m256i s)
{
    const __m256i c255 = _mm256_set1_epi16(255), c128 = _mm256_set1_epi16(128);
    __m256i x = _mm256_add_epi16(_mm256_mullo_epi16(c, a),
                                 _mm256_mullo_epi16(s, _mm256_sub_epi16(c255, a)));
    x = _mm256_add_epi16(x, c128);
    return _mm256_srli_epi16(_mm256_add_epi16(x, _mm256_srli_epi16(x, 8)), 8);
}

static __attribute__((target("avx2"))) void over_rgb_avx2(uint8_t *d, const uint8_t *p, size_t n)
{
    /* per 128-bit lane: 4 RGBA pixels -> 12 colour bytes / 12 alpha bytes */
    const __m256i col_shuf =
        _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6,
                         8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const __m256i a_shuf =
        _mm256_setr_epi8(3, 3, 3, 7, 7, 7, 11, 11, 11, 15, 15, 15, -1, -1, -1, -1, 3, 3, 3, 7, 7, 7,
                         11, 11, 11, 15, 15, 15, -1, -1, -1, -1);
    const __m256i pack = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
    const __m256i amask = _mm256_set1_epi32((int)0xff000000u);
    size_t i = 0;
    for (; i + 8 <= n; i += 8, d += 24, p += 32) {
        __m256i px = _mm256_loadu_si256((const __m256i *)p);
        if (_mm256_testz_si256(px, amask))
            continue;
        __m256i col = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(px, col_shuf), pack);
        unsigned opaque =
            (unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_and_si256(px, amask), amask));
        if (opaque == 0xffffffffu) {
            _mm_storeu_si128((__m128i *)d, _mm256_castsi256_si128(col));
            _mm_storel_epi64((__m128i *)(d + 16), _mm256_extracti128_si256(col, 1));
            continue;
        }
        __m256i al = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(px, a_shuf), pack);
        __m128i s_lo = _mm_loadu_si128((const __m128i *)d);
        __m128i s_hi = _mm_loadl_epi64((const __m128i *)(d + 16));
        __m256i lo =
            blend16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(col)),
                    _mm256_cvtepu8_epi16(_mm256_castsi256_si128(al)), _mm256_cvtepu8_epi16(s_lo));
        __m256i hi = blend16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(col, 1)),
                             _mm256_cvtepu8_epi16(_mm256_extracti128_si256(al, 1)),
                             _mm256_cvtepu8_epi16(s_hi));
        __m256i o = _mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0xD8);
        _mm_storeu_si128((__m128i *)d, _mm256_castsi256_si128(o));
        _mm_storel_epi64((__m128i *)(d + 16), _mm256_extracti128_si256(o, 1));
    }
    over_rgb_scalar(d, p, n - i);
}

static inline __attribute__((target("avx512f,avx512bw"))) __m512i blend16_512(__m512i c, __m512i a,
                                                                              __m512i s)
{
    const __m512i c255 = _mm512_set1_epi16(255), c128 = _mm512_set1_epi16(128);
    __m512i x = _mm512_add_epi16(_mm512_mullo_epi16(c, a),
                                 _mm512_mullo_epi16(s, _mm512_sub_epi16(c255, a)));
    x = _mm512_add_epi16(x, c128);
    return _mm512_srli_epi16(_mm512_add_epi16(x, _mm512_srli_epi16(x, 8)), 8);
}

/* 16 pixels per step with plain loads/stores (masked byte stores are slow on
 * AMD); the tail (< 16 pixels) uses masked loads/stores. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vbmi"))) __m512i
over16_512(__m512i px, __m512i sc, __m512i col_idx, __m512i a_idx)
{
    __m512i col = _mm512_permutexvar_epi8(col_idx, px);
    __m512i al = _mm512_permutexvar_epi8(a_idx, px);
    __m512i lo = blend16_512(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(col)),
                             _mm512_cvtepu8_epi16(_mm512_castsi512_si256(al)),
                             _mm512_cvtepu8_epi16(_mm512_castsi512_si256(sc)));
    __m512i hi = blend16_512(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(col, 1)),
                             _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(al, 1)),
                             _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(sc, 1)));
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(lo)),
                              _mm512_cvtepi16_epi8(hi), 1);
}

static const uint8_t col_idx_tab[64] = {
    0,  1,  2,  4,  5,  6,  8,  9,  10, 12, 13, 14, 16, 17, 18, 20, 21, 22, 24, 25, 26, 28,
    29, 30, 32, 33, 34, 36, 37, 38, 40, 41, 42, 44, 45, 46, 48, 49, 50, 52, 53, 54, 56, 57,
    58, 60, 61, 62, 60, 61, 62, 60, 61, 62, 60, 61, 62, 60, 61, 62, 60, 61, 62, 60};
static const uint8_t a_idx_tab[64] = {
    3,  3,  3,  7,  7,  7,  11, 11, 11, 15, 15, 15, 19, 19, 19, 23, 23, 23, 27, 27, 27, 31,
    31, 31, 35, 35, 35, 39, 39, 39, 43, 43, 43, 47, 47, 47, 51, 51, 51, 55, 55, 55, 59, 59,
    59, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

static __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void
over_rgb_avx512(uint8_t *d, const uint8_t *p, size_t n)
{
    const __m512i col_idx = _mm512_loadu_si512(col_idx_tab), a_idx = _mm512_loadu_si512(a_idx_tab);
    const __m512i amask = _mm512_set1_epi32((int)0xff000000u);
    for (; n >= 16; n -= 16, d += 48, p += 64) {
        __m512i px = _mm512_loadu_si512((const void *)p);
        __mmask16 visible = _mm512_test_epi32_mask(px, amask);
        if (!visible)
            continue;
        __m512i o;
        if (_mm512_cmpeq_epi32_mask(_mm512_and_si512(px, amask), amask) == 0xffff) {
            o = _mm512_permutexvar_epi8(col_idx, px);
        } else {
            __m512i sc =
                _mm512_inserti32x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)d)),
                                   _mm_loadu_si128((const __m128i *)(d + 32)), 2);
            o = over16_512(px, sc, col_idx, a_idx);
        }
        _mm256_storeu_si256((__m256i *)d, _mm512_castsi512_si256(o));
        _mm_storeu_si128((__m128i *)(d + 32), _mm512_extracti32x4_epi32(o, 2));
    }
    if (n > 0) {
        __mmask64 pm = (1ULL << (4 * n)) - 1, sm = (1ULL << (3 * n)) - 1;
        __m512i px = _mm512_maskz_loadu_epi8(pm, p);
        if (_mm512_test_epi32_mask(px, amask)) {
            __m512i sc = _mm512_maskz_loadu_epi8(sm, d);
            _mm512_mask_storeu_epi8(d, sm, over16_512(px, sc, col_idx, a_idx));
        }
    }
}

void sc_over_rgba_on_rgb(uint8_t *scene, const uint8_t *prod, size_t n, sc_simd_level_t lvl)
{
    sc_simd_level_t cpu = sc_simd_cpu_level();
    if (lvl > cpu)
        lvl = cpu;
    if (lvl >= SC_SIMD_AVX512)
        over_rgb_avx512(scene, prod, n);
    else if (lvl >= SC_SIMD_AVX2)
        over_rgb_avx2(scene, prod, n);
    else
        over_rgb_scalar(scene, prod, n);
}

void sc_over_rgba_on_rgba(uint8_t *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++, d += 4, p += 4) {
        unsigned ap = p[3];
        if (ap == 0)
            continue;
        if (ap == 255) {
            memcpy(d, p, 4);
            continue;
        }
        unsigned as = d[3], na = 255 - ap;
        unsigned A = ap * 255 + as * na; /* out alpha * 255, > 0 since ap > 0 */
        for (int c = 0; c < 3; c++) {
            unsigned num = p[c] * ap * 255 + d[c] * as * na;
            d[c] = (uint8_t)((num + A / 2) / A);
        }
        d[3] = (uint8_t)((A + 127) / 255);
    }
}
