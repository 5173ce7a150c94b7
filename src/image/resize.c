/* Separable Lanczos-3 resampling (resize.h).
 *
 * Coefficients follow Pillow's precompute_coeffs (support 3 * max(scale, 1),
 * centre (x + 0.5) * scale, normalised), quantised to 14-bit fixed point with
 * the rounding error folded into the largest tap so that a flat image stays
 * flat. RGBA is premultiplied (rounded) before and unpremultiplied (rounded,
 * clamped) after, as Pillow's RGBa path does; the intermediate is 8-bit like
 * Pillow's. All arithmetic is integer, so the SIMD kernels give exactly the
 * scalar bytes (same products, same sums; integer addition is associative).
 *
 * Kernels work on 4-channel rows. Tap lists are padded with zero weights to a
 * multiple of 8 (horizontal) / 2 (vertical); the padded taps may read past a
 * row's end (with zero weight), so the buffers they read carry zeroed slack. */
#include "image/resize.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PREC 14
#define HPAD 8 /* horizontal tap multiple (AVX-512 does 8 taps per step) */

typedef struct {
    int n;      /* outputs */
    int kpad;   /* taps per output, padded */
    int *start; /* first source index per output */
    int16_t *w; /* n * kpad weights */
} coeffs_t;

static void coeffs_free(coeffs_t *c)
{
    free(c->start);
    free(c->w);
    c->start = NULL;
    c->w = NULL;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x)
{
    if (x > -3.0 && x < 3.0)
        return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

/* The kernel of an in -> out resize along one axis: taps per output padded to
 * a multiple of mult (as a double: absurd ratios must not overflow an int). */
static double kernel_taps(int in, int out, int mult, double *scale, double *support)
{
    *scale = (double)in / out;
    *support = 3.0 * (*scale < 1.0 ? 1.0 : *scale);
    double ksize = ceil(*support) * 2 + 1;
    return ceil(ksize / mult) * mult;
}

/* First source index of output i. */
static int tap_start(double scale, double support, int i)
{
    int xmin = (int)((i + 0.5) * scale - support + 0.5);
    return xmin < 0 ? 0 : xmin;
}

/* Coefficients for outputs [first, first + count) of an in -> out resize. */
static int coeffs_make(int in, int out, int first, int count, int mult, coeffs_t *c)
{
    double scale, support, taps = kernel_taps(in, out, mult, &scale, &support);
    c->n = count;
    c->start = NULL;
    c->w = NULL;
    /* absurd downscales (a 40-Mpixel strip to a few pixels) would need huge tap
     * tables; sc_resize_region_cost refuses them first */
    if ((double)count * taps > (double)SC_RESIZE_MAX_TAPS)
        return -1;
    int kpad = (int)taps, ksize = (int)ceil(support) * 2 + 1;
    double fs = scale < 1.0 ? 1.0 : scale;
    double *k = malloc(sizeof(double) * (size_t)ksize);
    c->kpad = kpad;
    c->start = malloc(sizeof(int) * (size_t)count);
    c->w = calloc((size_t)count * (size_t)kpad, sizeof(int16_t));
    if (!k || !c->start || !c->w) {
        free(k);
        coeffs_free(c);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / fs;
        int xmin = tap_start(scale, support, xx);
        int xmax = (int)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        xmax -= xmin;
        if (xmax > ksize)
            xmax = ksize;
        for (int x = 0; x < xmax; x++) {
            k[x] = lanczos3((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int16_t *w = c->w + (size_t)i * (size_t)kpad;
        int sum = 0, big = 0;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : 0.0;
            w[x] = (int16_t)lrint(v * (1 << PREC));
            sum += w[x];
            if (w[x] > w[big])
                big = x;
        }
        if (xmax > 0)
            w[big] = (int16_t)(w[big] + ((1 << PREC) - sum));
        c->start[i] = xmin;
    }
    free(k);
    return 0;
}

static inline uint8_t clip8(int v)
{
    v = (v + (1 << (PREC - 1))) >> PREC;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ==== Horizontal pass: one row of 4-channel pixels ==== */

static void hrow_scalar(const uint8_t *src, uint8_t *dst, const coeffs_t *c)
{
    for (int x = 0; x < c->n; x++) {
        const uint8_t *s = src + (size_t)c->start[x] * 4;
        const int16_t *k = c->w + (size_t)x * (size_t)c->kpad;
        int acc[4] = {0, 0, 0, 0};
        for (int j = 0; j < c->kpad; j++)
            for (int ch = 0; ch < 4; ch++)
                acc[ch] += s[j * 4 + ch] * k[j];
        for (int ch = 0; ch < 4; ch++)
            dst[x * 4 + ch] = clip8(acc[ch]);
    }
}

static __attribute__((target("avx2"))) void hrow_avx2(const uint8_t *src, uint8_t *dst,
                                                      const coeffs_t *c)
{
    /* pair taps per channel: r0 r1 g0 g1 b0 b1 a0 a1 | r2 r3 ... for pmaddwd */
    const __m128i shuf = _mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m128i rnd = _mm_set1_epi32(1 << (PREC - 1));
    for (int x = 0; x < c->n; x++) {
        const uint8_t *s = src + (size_t)c->start[x] * 4;
        const int16_t *k = c->w + (size_t)x * (size_t)c->kpad;
        __m256i acc = _mm256_setzero_si256();
        for (int j = 0; j < c->kpad; j += 4) {
            __m128i p = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(s + j * 4)), shuf);
            __m256i kk = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(k + j))), idx);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(p), kk));
        }
        __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        sum = _mm_srai_epi32(_mm_add_epi32(sum, rnd), PREC);
        sum = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);
        uint32_t v = (uint32_t)_mm_cvtsi128_si32(sum);
        memcpy(dst + (size_t)x * 4, &v, 4);
    }
}

static __attribute__((target("avx512f,avx512bw,avx512vl"))) void
hrow_avx512(const uint8_t *src, uint8_t *dst, const coeffs_t *c)
{
    const __m256i shuf = _mm256_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15, 0,
                                          4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m128i rnd = _mm_set1_epi32(1 << (PREC - 1));
    for (int x = 0; x < c->n; x++) {
        const uint8_t *s = src + (size_t)c->start[x] * 4;
        const int16_t *k = c->w + (size_t)x * (size_t)c->kpad;
        __m512i acc = _mm512_setzero_si512();
        for (int j = 0; j < c->kpad; j += 8) {
            __m256i p = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(s + j * 4)), shuf);
            __m512i kk = _mm512_permutexvar_epi32(
                idx, _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(k + j))));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_cvtepu8_epi16(p), kk));
        }
        __m256i a2 =
            _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
        __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(a2), _mm256_extracti128_si256(a2, 1));
        sum = _mm_srai_epi32(_mm_add_epi32(sum, rnd), PREC);
        sum = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);
        uint32_t v = (uint32_t)_mm_cvtsi128_si32(sum);
        memcpy(dst + (size_t)x * 4, &v, 4);
    }
}

/* Four source rows at once, one per 128-bit lane: the weights are shared, so
 * there is no horizontal reduction per output pixel. */
static __attribute__((target("avx512f,avx512bw,avx512vl"))) void
hrow4_avx512(const uint8_t *const s[4], uint8_t *const d[4], const coeffs_t *c)
{
    const __m512i shuf =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15));
    const __m512i zero = _mm512_setzero_si512(), rnd = _mm512_set1_epi32(1 << (PREC - 1));
    const __m512i c255 = _mm512_set1_epi32(255);
    for (int x = 0; x < c->n; x++) {
        size_t off = (size_t)c->start[x] * 4;
        const int16_t *k = c->w + (size_t)x * (size_t)c->kpad;
        __m512i acc = zero;
        for (int j = 0; j < c->kpad; j += 4) {
            size_t o = off + (size_t)j * 4;
            __m512i p = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(s[0] + o)));
            p = _mm512_inserti32x4(p, _mm_loadu_si128((const __m128i *)(s[1] + o)), 1);
            p = _mm512_inserti32x4(p, _mm_loadu_si128((const __m128i *)(s[2] + o)), 2);
            p = _mm512_inserti32x4(p, _mm_loadu_si128((const __m128i *)(s[3] + o)), 3);
            p = _mm512_shuffle_epi8(p, shuf);
            int32_t w01, w23;
            memcpy(&w01, k + j, 4);
            memcpy(&w23, k + j + 2, 4);
            acc = _mm512_add_epi32(
                acc, _mm512_madd_epi16(_mm512_unpacklo_epi8(p, zero), _mm512_set1_epi32(w01)));
            acc = _mm512_add_epi32(
                acc, _mm512_madd_epi16(_mm512_unpackhi_epi8(p, zero), _mm512_set1_epi32(w23)));
        }
        acc = _mm512_srai_epi32(_mm512_add_epi32(acc, rnd), PREC);
        acc = _mm512_min_epi32(_mm512_max_epi32(acc, zero), c255);
        __m128i b = _mm512_cvtepi32_epi8(acc); /* row r's pixel in dword r */
        uint32_t v[4];
        _mm_storeu_si128((__m128i *)v, b);
        for (int r = 0; r < 4; r++)
            memcpy(d[r] + (size_t)x * 4, &v[r], 4);
    }
}

/* ==== Vertical pass: one output row from kpad input rows ==== */

static void vrow_scalar(const uint8_t *rows, size_t stride, size_t nbytes, const int16_t *k,
                        int kpad, uint8_t *dst, size_t from)
{
    for (size_t i = from; i < nbytes; i++) {
        int acc = 0;
        for (int j = 0; j < kpad; j++)
            acc += rows[(size_t)j * stride + i] * k[j];
        dst[i] = clip8(acc);
    }
}

static __attribute__((target("avx2"))) void vrow_avx2(const uint8_t *rows, size_t stride,
                                                      size_t nbytes, const int16_t *k, int kpad,
                                                      uint8_t *dst)
{
    const __m256i zero = _mm256_setzero_si256(), rnd = _mm256_set1_epi32(1 << (PREC - 1));
    size_t i = 0;
    for (; i + 32 <= nbytes; i += 32) {
        __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (int j = 0; j < kpad; j += 2) {
            int32_t pair;
            memcpy(&pair, k + j, 4);
            __m256i kk = _mm256_set1_epi32(pair);
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(rows + (size_t)j * stride + i));
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(rows + (size_t)(j + 1) * stride + i));
            __m256i lo = _mm256_unpacklo_epi8(r0, r1), hi = _mm256_unpackhi_epi8(r0, r1);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, zero), kk));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, zero), kk));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_unpacklo_epi8(hi, zero), kk));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_unpackhi_epi8(hi, zero), kk));
        }
        a0 = _mm256_srai_epi32(_mm256_add_epi32(a0, rnd), PREC);
        a1 = _mm256_srai_epi32(_mm256_add_epi32(a1, rnd), PREC);
        a2 = _mm256_srai_epi32(_mm256_add_epi32(a2, rnd), PREC);
        a3 = _mm256_srai_epi32(_mm256_add_epi32(a3, rnd), PREC);
        __m256i v = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        _mm256_storeu_si256((__m256i *)(dst + i), v);
    }
    vrow_scalar(rows, stride, nbytes, k, kpad, dst, i);
}

static __attribute__((target("avx512f,avx512bw"))) void vrow_avx512(const uint8_t *rows,
                                                                    size_t stride, size_t nbytes,
                                                                    const int16_t *k, int kpad,
                                                                    uint8_t *dst)
{
    const __m512i zero = _mm512_setzero_si512(), rnd = _mm512_set1_epi32(1 << (PREC - 1));
    size_t i = 0;
    for (; i + 64 <= nbytes; i += 64) {
        __m512i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (int j = 0; j < kpad; j += 2) {
            int32_t pair;
            memcpy(&pair, k + j, 4);
            __m512i kk = _mm512_set1_epi32(pair);
            __m512i r0 = _mm512_loadu_si512((const void *)(rows + (size_t)j * stride + i));
            __m512i r1 = _mm512_loadu_si512((const void *)(rows + (size_t)(j + 1) * stride + i));
            __m512i lo = _mm512_unpacklo_epi8(r0, r1), hi = _mm512_unpackhi_epi8(r0, r1);
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_unpacklo_epi8(lo, zero), kk));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_unpackhi_epi8(lo, zero), kk));
            a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(_mm512_unpacklo_epi8(hi, zero), kk));
            a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(_mm512_unpackhi_epi8(hi, zero), kk));
        }
        a0 = _mm512_srai_epi32(_mm512_add_epi32(a0, rnd), PREC);
        a1 = _mm512_srai_epi32(_mm512_add_epi32(a1, rnd), PREC);
        a2 = _mm512_srai_epi32(_mm512_add_epi32(a2, rnd), PREC);
        a3 = _mm512_srai_epi32(_mm512_add_epi32(a3, rnd), PREC);
        __m512i v = _mm512_packus_epi16(_mm512_packs_epi32(a0, a1), _mm512_packs_epi32(a2, a3));
        _mm512_storeu_si512((void *)(dst + i), v);
    }
    vrow_scalar(rows, stride, nbytes, k, kpad, dst, i);
}

/* ==== Premultiply / unpremultiply ==== */

static inline uint8_t div255(unsigned x)
{
    x += 128;
    return (uint8_t)((x + (x >> 8)) >> 8);
}

/* src (3 or 4 channels) -> premultiplied 4-channel dst */
static void premul_scalar(const uint8_t *src, int ch, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = src + i * (size_t)ch;
        unsigned a = ch == 4 ? s[3] : 255;
        dst[i * 4 + 0] = div255(s[0] * a);
        dst[i * 4 + 1] = div255(s[1] * a);
        dst[i * 4 + 2] = div255(s[2] * a);
        dst[i * 4 + 3] = (uint8_t)a;
    }
}

static __attribute__((target("avx2"))) void premul_avx2(const uint8_t *src, uint8_t *dst, size_t n)
{
    const __m256i abc = _mm256_setr_epi8(6, 7, 6, 7, 6, 7, 6, 7, 14, 15, 14, 15, 14, 15, 14, 15, 6,
                                         7, 6, 7, 6, 7, 6, 7, 14, 15, 14, 15, 14, 15, 14, 15);
    const __m256i c255 = _mm256_set1_epi16(255), c128 = _mm256_set1_epi16(128);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(src + i * 4));
        __m256i r[2] = {_mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)),
                        _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1))};
        for (int h = 0; h < 2; h++) {
            __m256i m = _mm256_blend_epi16(_mm256_shuffle_epi8(r[h], abc), c255, 0x88);
            __m256i x = _mm256_add_epi16(_mm256_mullo_epi16(r[h], m), c128);
            r[h] = _mm256_srli_epi16(_mm256_add_epi16(x, _mm256_srli_epi16(x, 8)), 8);
        }
        __m256i o = _mm256_permute4x64_epi64(_mm256_packus_epi16(r[0], r[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i * 4), o);
    }
    premul_scalar(src + i * 4, 4, dst + i * 4, n - i);
}

static uint8_t unpremul_lut[256][256];
static pthread_once_t unpremul_once = PTHREAD_ONCE_INIT;

static void unpremul_init(void)
{
    for (int a = 1; a < 256; a++)
        for (int c = 0; c < 256; c++) {
            int v = (c * 255 + a / 2) / a;
            unpremul_lut[a][c] = (uint8_t)(v > 255 ? 255 : v);
        }
}

/* ==== Driver ==== */

int sc_resize_region_cost(int in_w, int in_h, int dst_w, int dst_h, int ry, int rw, int rh,
                          int channels, double *bytes)
{
    if (bytes)
        *bytes = 0;
    if (in_w <= 0 || in_h <= 0 || dst_w <= 0 || dst_h <= 0 || ry < 0 || rw <= 0 || rh <= 0 ||
        rh > dst_h - ry)
        return -1;
    double sh, suph, sv, supv;
    double kh = kernel_taps(in_w, dst_w, HPAD, &sh, &suph),
           kv = kernel_taps(in_h, dst_h, 2, &sv, &supv);
    if ((double)rw * kh > (double)SC_RESIZE_MAX_TAPS ||
        (double)rh * kv > (double)SC_RESIZE_MAX_TAPS)
        return -1;
    /* what sc_resize_lanczos_region allocates: tap tables, 4 premultiplied
     * source rows, the horizontal pass's rows, the result (and a 4-channel
     * copy of it for RGB) */
    double mid_rows = tap_start(sv, supv, ry + rh - 1) + kv - tap_start(sv, supv, ry);
    double b = (double)rw * (kh * 2 + 4) + (double)rh * (kv * 2 + 4) +
               4.0 * ((double)in_w * 4 + kh * 4 + 64) + (double)rw * 4 * mid_rows + 64 +
               (double)rw * rh * channels + (channels == 4 ? 0.0 : (double)rw * rh * 4);
    if (bytes)
        *bytes = b;
    return b <= (double)SC_RESIZE_MAX_BYTES ? 0 : -1;
}

int sc_resize_lanczos_region(const sc_image_t *src, int dst_w, int dst_h, int rx, int ry, int rw,
                             int rh, sc_image_t *dst, sc_simd_level_t lvl)
{
    coeffs_t ch_ = {0, 0, NULL, NULL}, cv = {0, 0, NULL, NULL};
    uint8_t *pre = NULL, *mid = NULL, *out4 = NULL;
    sc_image_t res = SC_IMAGE_INIT;
    int rc = -1;
    if (dst)
        *dst = res;
    if (!src || !dst || !src->pixels || src->width <= 0 || src->height <= 0 ||
        (src->channels != 3 && src->channels != 4) || dst_w <= 0 || dst_h <= 0 || rx < 0 ||
        ry < 0 || rw <= 0 || rh <= 0 || rw > dst_w - rx || rh > dst_h - ry)
        return -1;
    if (lvl > sc_simd_cpu_level())
        lvl = sc_simd_cpu_level();
    int in_w = src->width, in_h = src->height, chn = src->channels;
    if (coeffs_make(in_w, dst_w, rx, rw, HPAD, &ch_) != 0 ||
        coeffs_make(in_h, dst_h, ry, rh, 2, &cv) != 0)
        goto cleanup;

    /* source rows the vertical pass needs: [ylo, ylo + mid_rows) */
    int ylo = cv.start[0], yend = 0;
    for (int i = 0; i < rh; i++) {
        if (cv.start[i] < ylo)
            ylo = cv.start[i];
        if (cv.start[i] + cv.kpad > yend)
            yend = cv.start[i] + cv.kpad;
    }
    int mid_rows = yend - ylo, src_rows = (yend < in_h ? yend : in_h) - ylo;

    /* premultiplied 4-channel source rows (up to 4 at a time, they stay in
     * cache), each with zeroed slack for the padded taps that run past its end */
    size_t slack = (size_t)ch_.kpad * 4 + 64, pre_stride = (size_t)in_w * 4 + slack;
    pre = calloc(4, pre_stride);
    size_t mid_stride = (size_t)rw * 4;
    mid = malloc(mid_stride * (size_t)mid_rows + 64);
    if (sc_image_alloc(&res, rw, rh, chn) != 0 || !pre || !mid)
        goto cleanup;
    out4 = chn == 4 ? res.pixels : malloc(mid_stride * (size_t)rh);
    if (!out4)
        goto cleanup;
    for (int y = 0; y < src_rows;) {
        int batch = (lvl >= SC_SIMD_AVX512 && src_rows - y >= 4) ? 4 : 1;
        const uint8_t *rows[4];
        uint8_t *outs[4];
        for (int r = 0; r < batch; r++) {
            const uint8_t *s0 = src->pixels + (size_t)(ylo + y + r) * (size_t)in_w * (size_t)chn;
            uint8_t *pr = pre + (size_t)r * pre_stride;
            if (chn == 4 && lvl >= SC_SIMD_AVX2)
                premul_avx2(s0, pr, (size_t)in_w);
            else
                premul_scalar(s0, chn, pr, (size_t)in_w);
            rows[r] = pr;
            outs[r] = mid + (size_t)(y + r) * mid_stride;
        }
        if (batch == 4)
            hrow4_avx512(rows, outs, &ch_);
        else if (lvl >= SC_SIMD_AVX512)
            hrow_avx512(pre, outs[0], &ch_);
        else if (lvl >= SC_SIMD_AVX2)
            hrow_avx2(pre, outs[0], &ch_);
        else
            hrow_scalar(pre, outs[0], &ch_);
        y += batch;
    }
    /* rows past the source's end only ever meet zero weights */
    memset(mid + (size_t)src_rows * mid_stride, 0, (size_t)(mid_rows - src_rows) * mid_stride + 64);

    for (int y = 0; y < rh; y++) {
        const uint8_t *rows = mid + (size_t)(cv.start[y] - ylo) * mid_stride;
        const int16_t *k = cv.w + (size_t)y * (size_t)cv.kpad;
        uint8_t *dr = out4 + (size_t)y * mid_stride;
        if (lvl >= SC_SIMD_AVX512)
            vrow_avx512(rows, mid_stride, mid_stride, k, cv.kpad, dr);
        else if (lvl >= SC_SIMD_AVX2)
            vrow_avx2(rows, mid_stride, mid_stride, k, cv.kpad, dr);
        else
            vrow_scalar(rows, mid_stride, mid_stride, k, cv.kpad, dr, 0);
    }

    size_t n = (size_t)rw * (size_t)rh;
    if (chn == 4) {
        pthread_once(&unpremul_once, unpremul_init);
        uint8_t *p = res.pixels;
        for (size_t i = 0; i < n; i++, p += 4) {
            const uint8_t *lut = unpremul_lut[p[3]];
            p[0] = lut[p[0]];
            p[1] = lut[p[1]];
            p[2] = lut[p[2]];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            res.pixels[i * 3 + 0] = out4[i * 4 + 0];
            res.pixels[i * 3 + 1] = out4[i * 4 + 1];
            res.pixels[i * 3 + 2] = out4[i * 4 + 2];
        }
    }
    *dst = res;
    res.pixels = NULL;
    rc = 0;
cleanup:
    if (out4 && out4 != res.pixels && out4 != dst->pixels)
        free(out4);
    sc_image_free(&res);
    free(mid);
    free(pre);
    coeffs_free(&ch_);
    coeffs_free(&cv);
    return rc;
}

int sc_resize_lanczos(const sc_image_t *src, int dst_w, int dst_h, sc_image_t *dst)
{
    return sc_resize_lanczos_region(src, dst_w, dst_h, 0, 0, dst_w, dst_h, dst, sc_simd_level());
}
