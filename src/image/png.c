/* Fast PNG decode (subset) and encode; see png.h. */
#include "image/png.h"

#include "image/deflate.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

const uint8_t sc_png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t sc_png_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void sc_png_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint8_t *sc_png_put_chunk_header(uint8_t *p, uint32_t len, const char *type)
{
    sc_png_put_be32(p, len);
    memcpy(p + 4, type, 4);
    return p + 8;
}

uint8_t *sc_png_put_chunk_crc(uint8_t *data, uint32_t len)
{
    sc_png_put_be32(data + len, libdeflate_crc32(0, data - 4, (size_t)len + 4));
    return data + len + 4;
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c;
    int pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc)
        return a;
    return pb <= pc ? b : c;
}

/* ==== Unfiltering (decode) ====
 * dst may overlap src when dst <= src (the decoder unfilters in place inside
 * the inflated buffer, whose rows sit 1 + y bytes ahead of their output):
 * every kernel reads a byte before any write can reach it. */

static int unfilter_scalar(int type, uint8_t *dst, const uint8_t *src, const uint8_t *prev,
                           size_t n, int bpp)
{
    size_t i, b = (size_t)bpp;
    switch (type) {
    case 0:
        memmove(dst, src, n);
        return 0;
    case 1:
        for (i = 0; i < n; i++)
            dst[i] = (uint8_t)(src[i] + (i >= b ? dst[i - b] : 0));
        return 0;
    case 2:
        for (i = 0; i < n; i++)
            dst[i] = (uint8_t)(src[i] + (prev ? prev[i] : 0));
        return 0;
    case 3:
        for (i = 0; i < n; i++) {
            int a = i >= b ? dst[i - b] : 0, up = prev ? prev[i] : 0;
            dst[i] = (uint8_t)(src[i] + ((a + up) >> 1));
        }
        return 0;
    case 4:
        for (i = 0; i < n; i++) {
            int a = i >= b ? dst[i - b] : 0, up = prev ? prev[i] : 0;
            int c = (i >= b && prev) ? prev[i - b] : 0;
            dst[i] = (uint8_t)(src[i] + paeth(a, up, c));
        }
        return 0;
    default:
        return -1;
    }
}

/* Pixel loads/stores through 32-bit moves (no stack round trip, which stalls
 * store forwarding). `full` means 4 bytes are inside the row: for bpp 3 the
 * 4th byte is the next pixel's, carried along in a lane nobody reads, and the
 * 4-byte store's extra byte is rewritten by the next pixel (in the in-place
 * case it was already consumed, see above). */
static inline __attribute__((always_inline, target("avx2"))) __m128i load_px(const uint8_t *p,
                                                                             int full)
{
    int32_t v;
    if (full)
        memcpy(&v, p, 4);
    else
        v = p[0] | (p[1] << 8) | (p[2] << 16);
    return _mm_cvtepu8_epi16(_mm_cvtsi32_si128(v));
}

static inline __attribute__((always_inline, target("avx2"))) void store_px(uint8_t *p, __m128i v16,
                                                                           int full)
{
    int32_t v = _mm_cvtsi128_si32(_mm_packus_epi16(v16, v16));
    if (full) {
        memcpy(p, &v, 4);
    } else {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)(v >> 16);
    }
}

/* Sub/Avg/Paeth are serial across pixels: one pixel (3 or 4 channels in 16-bit
 * lanes) per step, as libpng's SSE code does. bpp is a constant after inlining. */
static inline __attribute__((always_inline, target("avx2"))) void
unfilter_serial(int type, uint8_t *dst, const uint8_t *src, const uint8_t *prev, size_t n,
                const int bpp)
{
    const __m128i m = _mm_set1_epi16(0xff);
    __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
    for (size_t i = 0; i + (size_t)bpp <= n; i += (size_t)bpp) {
        int full = i + 4 <= n;
        __m128i x = load_px(src + i, full), pred;
        if (type == 1) {
            pred = a;
        } else if (type == 3) {
            pred = _mm_srli_epi16(_mm_add_epi16(a, load_px(prev + i, full)), 1);
        } else {
            __m128i up = load_px(prev + i, full);
            __m128i bc = _mm_sub_epi16(up, c), ac = _mm_sub_epi16(a, c);
            __m128i pa = _mm_abs_epi16(bc), pb = _mm_abs_epi16(ac);
            __m128i pc = _mm_abs_epi16(_mm_add_epi16(bc, ac));
            __m128i not_a = _mm_or_si128(_mm_cmpgt_epi16(pa, pb), _mm_cmpgt_epi16(pa, pc));
            __m128i bc_pick = _mm_blendv_epi8(up, c, _mm_cmpgt_epi16(pb, pc));
            pred = _mm_blendv_epi8(a, bc_pick, not_a);
            c = up;
        }
        a = _mm_and_si128(_mm_add_epi16(x, pred), m);
        store_px(dst + i, a, full);
    }
}

static __attribute__((target("avx2"))) int unfilter_avx2(int type, uint8_t *dst, const uint8_t *src,
                                                         const uint8_t *prev, size_t n, int bpp)
{
    if (type < 0 || type > 4)
        return -1;
    /* first row: Up is None, Paeth is Sub; Avg keeps its halved left (scalar) */
    if (!prev && (type == 2 || type == 3 || type == 4))
        return unfilter_scalar(type, dst, src, prev, n, bpp);
    size_t i = 0;
    switch (type) {
    case 0:
        memmove(dst, src, n);
        return 0;
    case 2:
        for (; i + 32 <= n; i += 32) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
            __m256i u = _mm256_loadu_si256((const __m256i *)(prev + i));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_add_epi8(x, u));
        }
        for (; i < n; i++)
            dst[i] = (uint8_t)(src[i] + prev[i]);
        return 0;
    default:
        if (bpp == 3)
            unfilter_serial(type, dst, src, prev, n, 3);
        else
            unfilter_serial(type, dst, src, prev, n, 4);
        return 0;
    }
}

int sc_png_unfilter_row(int type, uint8_t *dst, const uint8_t *src, const uint8_t *prev, size_t n,
                        int bpp, sc_simd_level_t lvl)
{
    if (lvl >= SC_SIMD_AVX2 && (bpp == 3 || bpp == 4) && n % (size_t)bpp == 0 &&
        sc_simd_cpu_level() >= SC_SIMD_AVX2)
        return unfilter_avx2(type, dst, src, prev, n, bpp);
    return unfilter_scalar(type, dst, src, prev, n, bpp);
}

/* ==== Decoding ==== */

int sc_png_decode_fast(const uint8_t *data, size_t len, sc_image_t *out)
{
    sc_image_t img = SC_IMAGE_INIT;
    uint8_t *idat_copy = NULL, *raw = NULL;
    struct libdeflate_decompressor *d = NULL;
    int rc = 1;

    if (len < 8 + 25 || memcmp(data, sc_png_sig, 8) != 0)
        return 1;
    if (sc_png_be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return 1;
    uint32_t w = sc_png_be32(data + 16), h = sc_png_be32(data + 20);
    int depth = data[24], ct = data[25];
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff || depth != 8 ||
        (ct != 2 && ct != 6) || data[26] != 0 || data[27] != 0 || data[28] != 0)
        return 1;
    int bpp = ct == 6 ? 4 : 3;

    /* walk the chunks: collect IDAT, refuse tRNS (stb expands it to alpha) */
    const uint8_t *first_idat = NULL;
    size_t idat_len = 0, idat_chunks = 0, pos = 8 + 25;
    while (pos + 12 <= len) {
        uint32_t clen = sc_png_be32(data + pos);
        if (clen > 0x7fffffff || clen > len - pos - 12)
            return 1;
        const uint8_t *type = data + pos + 4;
        if (memcmp(type, "IDAT", 4) == 0) {
            if (!first_idat)
                first_idat = data + pos + 8;
            idat_len += clen;
            idat_chunks++;
        } else if (memcmp(type, "tRNS", 4) == 0) {
            return 1;
        } else if (memcmp(type, "IEND", 4) == 0) {
            break;
        }
        pos += 12 + (size_t)clen;
    }
    if (!first_idat || idat_len == 0)
        return 1;

    const uint8_t *idat = first_idat;
    if (idat_chunks > 1) {
        idat_copy = malloc(idat_len);
        if (!idat_copy) {
            rc = -1;
            goto cleanup;
        }
        size_t off = 0;
        for (pos = 8 + 25; pos + 12 <= len;) {
            uint32_t clen = sc_png_be32(data + pos);
            if (memcmp(data + pos + 4, "IDAT", 4) == 0) {
                memcpy(idat_copy + off, data + pos + 8, clen);
                off += clen;
            } else if (memcmp(data + pos + 4, "IEND", 4) == 0) {
                break;
            }
            pos += 12 + (size_t)clen;
        }
        idat = idat_copy;
    }

    size_t stride = (size_t)w * (size_t)bpp;
    if (stride / (size_t)bpp != w || (size_t)h > ((size_t)-1 >> 2) / (stride + 1))
        goto cleanup;
    size_t raw_len = (size_t)h * (stride + 1);
    /* one buffer: inflate into it, then unfilter forwards in place; the h
     * filter-type bytes at the end are simply left unused */
    raw = malloc(raw_len);
    d = libdeflate_alloc_decompressor();
    if (!raw || !d) {
        rc = -1;
        goto cleanup;
    }
    size_t got = 0;
    if (libdeflate_zlib_decompress(d, idat, idat_len, raw, raw_len, &got) != LIBDEFLATE_SUCCESS ||
        got != raw_len)
        goto cleanup; /* odd stream (short, trailing data): let stb judge it */
    sc_simd_level_t lvl = sc_simd_level();
    for (size_t y = 0; y < h; y++) {
        const uint8_t *src = raw + y * (stride + 1);
        uint8_t *row = raw + y * stride;
        if (sc_png_unfilter_row(src[0], row, src + 1, y ? row - stride : NULL, stride, bpp, lvl) !=
            0)
            goto cleanup;
    }
    img.width = (int)w;
    img.height = (int)h;
    img.channels = bpp;
    img.pixels = raw;
    raw = NULL;
    *out = img;
    img.pixels = NULL;
    rc = 0;
cleanup:
    sc_image_free(&img);
    if (d)
        libdeflate_free_decompressor(d);
    free(raw);
    free(idat_copy);
    return rc;
}

/* ==== Filter choice (encode) ==== */

static unsigned sum_abs(const uint8_t *f, size_t n)
{
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += (unsigned)abs((int)(int8_t)f[i]);
    return s;
}

static int pick_filter(const unsigned sums[5])
{
    int best = 0;
    for (int t = 1; t < 5; t++)
        if (sums[t] < sums[best])
            best = t;
    return best;
}

static int filter_scalar(const uint8_t *cur, const uint8_t *prev, size_t n, int bpp, uint8_t *out,
                         uint8_t *scratch)
{
    uint8_t *f[5];
    unsigned sums[5];
    for (int t = 0; t < 5; t++)
        f[t] = scratch + (size_t)t * (n + 32);
    for (size_t i = 0; i < n; i++) {
        int x = cur[i], a = cur[(ptrdiff_t)i - bpp], b = prev[i], c = prev[(ptrdiff_t)i - bpp];
        f[0][i] = (uint8_t)x;
        f[1][i] = (uint8_t)(x - a);
        f[2][i] = (uint8_t)(x - b);
        f[3][i] = (uint8_t)(x - ((a + b) >> 1));
        f[4][i] = (uint8_t)(x - paeth(a, b, c));
    }
    for (int t = 0; t < 5; t++)
        sums[t] = sum_abs(f[t], n);
    int best = pick_filter(sums);
    out[0] = (uint8_t)best;
    memcpy(out + 1, f[best], n);
    return best;
}

static inline __attribute__((target("avx2"))) __m256i paeth16(__m256i a, __m256i b, __m256i c)
{
    __m256i bc = _mm256_sub_epi16(b, c), ac = _mm256_sub_epi16(a, c);
    __m256i pa = _mm256_abs_epi16(bc), pb = _mm256_abs_epi16(ac);
    __m256i pc = _mm256_abs_epi16(_mm256_add_epi16(bc, ac));
    __m256i not_a = _mm256_or_si256(_mm256_cmpgt_epi16(pa, pb), _mm256_cmpgt_epi16(pa, pc));
    __m256i bcp = _mm256_blendv_epi8(b, c, _mm256_cmpgt_epi16(pb, pc));
    return _mm256_blendv_epi8(a, bcp, not_a);
}

static __attribute__((target("avx2"))) int filter_avx2(const uint8_t *cur, const uint8_t *prev,
                                                       size_t n, int bpp, uint8_t *out,
                                                       uint8_t *scratch)
{
    uint8_t *f[5];
    unsigned sums[5] = {0, 0, 0, 0, 0};
    for (int t = 0; t < 5; t++)
        f[t] = scratch + (size_t)t * (n + 32);
    __m256i acc[5];
    for (int t = 0; t < 5; t++)
        acc[t] = _mm256_setzero_si256();
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi8(1);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(cur + i));
        __m256i a = _mm256_loadu_si256((const __m256i *)(cur + i - bpp));
        __m256i b = _mm256_loadu_si256((const __m256i *)(prev + i));
        __m256i c = _mm256_loadu_si256((const __m256i *)(prev + i - bpp));
        __m256i avg =
            _mm256_sub_epi8(_mm256_avg_epu8(a, b), _mm256_and_si256(_mm256_xor_si256(a, b), one));
        __m256i a_lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(a));
        __m256i a_hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(a, 1));
        __m256i b_lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(b));
        __m256i b_hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(b, 1));
        __m256i c_lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(c));
        __m256i c_hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(c, 1));
        __m256i pp = _mm256_permute4x64_epi64(
            _mm256_packus_epi16(paeth16(a_lo, b_lo, c_lo), paeth16(a_hi, b_hi, c_hi)), 0xD8);
        __m256i v[5] = {x, _mm256_sub_epi8(x, a), _mm256_sub_epi8(x, b), _mm256_sub_epi8(x, avg),
                        _mm256_sub_epi8(x, pp)};
        for (int t = 0; t < 5; t++) {
            _mm256_storeu_si256((__m256i *)(f[t] + i), v[t]);
            acc[t] = _mm256_add_epi64(acc[t], _mm256_sad_epu8(_mm256_abs_epi8(v[t]), zero));
        }
    }
    for (int t = 0; t < 5; t++) {
        __m128i s =
            _mm_add_epi64(_mm256_castsi256_si128(acc[t]), _mm256_extracti128_si256(acc[t], 1));
        sums[t] = (unsigned)(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
    }
    for (; i < n; i++) {
        int x = cur[i], a = cur[(ptrdiff_t)i - bpp], b = prev[i], c = prev[(ptrdiff_t)i - bpp];
        uint8_t v[5] = {(uint8_t)x, (uint8_t)(x - a), (uint8_t)(x - b),
                        (uint8_t)(x - ((a + b) >> 1)), (uint8_t)(x - paeth(a, b, c))};
        for (int t = 0; t < 5; t++) {
            f[t][i] = v[t];
            sums[t] += (unsigned)abs((int)(int8_t)v[t]);
        }
    }
    int best = pick_filter(sums);
    out[0] = (uint8_t)best;
    memcpy(out + 1, f[best], n);
    return best;
}

int sc_png_filter_row(const uint8_t *cur, const uint8_t *prev, size_t n, int bpp, uint8_t *out,
                      uint8_t *scratch, sc_simd_level_t lvl)
{
    if (lvl >= SC_SIMD_AVX2)
        return filter_avx2(cur, prev, n, bpp, out, scratch);
    return filter_scalar(cur, prev, n, bpp, out, scratch);
}

/* ==== Encoding ==== */

/* One horizontal band of the image: filter rows [y0, y1) into filt, then
 * (level 0) compress them as an independent deflate segment. */
typedef struct {
    const sc_image_t *img;
    uint8_t *filt; /* the whole filtered buffer */
    size_t y0, y1;
    int final;
    uint8_t *z; /* where the segment is written (level 0), inside the PNG buffer */
    size_t zlen;
    int rc;
} band_t;

static void filter_band(band_t *b)
{
    const sc_image_t *img = b->img;
    int bpp = img->channels;
    size_t n = (size_t)img->width * (size_t)bpp, row_sz = n + 32;
    uint8_t *rows = calloc(7, row_sz);
    if (!rows) {
        b->rc = -1;
        return;
    }
    uint8_t *cur = rows + 16, *prev = rows + row_sz + 16, *scratch = rows + 2 * row_sz;
    if (b->y0 > 0)
        memcpy(prev, img->pixels + (b->y0 - 1) * n, n);
    sc_simd_level_t lvl = sc_simd_level();
    for (size_t y = b->y0; y < b->y1; y++) {
        memcpy(cur, img->pixels + y * n, n);
        sc_png_filter_row(cur, prev, n, bpp, b->filt + y * (n + 1), scratch, lvl);
        uint8_t *t = cur;
        cur = prev;
        prev = t;
    }
    free(rows);
    b->rc = 0;
}

static void band_one(band_t *b)
{
    filter_band(b);
    if (b->rc != 0)
        return;
    size_t n = (size_t)b->img->width * (size_t)b->img->channels + 1;
    size_t len = (b->y1 - b->y0) * n;
    b->zlen = sc_deflate_segment(b->filt + b->y0 * n, len, b->final, b->z);
    b->rc = b->zlen ? 0 : -1;
}

/* Workers take the next band until none is left: the bands' costs differ a lot
 * (sensor noise is run-length coded fast, a product's smooth surfaces go through
 * LZ), so more bands than workers keep both busy. */
typedef struct {
    band_t *bands;
    int nb;
    atomic_int next;
} band_queue_t;

static void *band_worker(void *arg)
{
    band_queue_t *q = arg;
    for (int i; (i = atomic_fetch_add(&q->next, 1)) < q->nb;)
        band_one(&q->bands[i]);
    return NULL;
}

/* Images at least this many bytes are encoded in SC_PNG_BANDS bands by two
 * threads (the caller's and one more). */
#define SC_PNG_PARALLEL_BYTES (1u << 20)
#define SC_PNG_BANDS 4

int sc_png_encode(const sc_image_t *img, int level, uint8_t **out, size_t *out_len)
{
    return sc_png_encode_threads(img, level, 2, out, out_len);
}

int sc_png_encode_threads(const sc_image_t *img, int level, int threads, uint8_t **out,
                          size_t *out_len)
{
    uint8_t *filt = NULL, *png = NULL;
    struct libdeflate_compressor *c = NULL;
    band_t bands[SC_PNG_BANDS];
    memset(bands, 0, sizeof(bands));
    int rc = -1, nb = 1;
    *out = NULL;
    *out_len = 0;
    if (!img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4) || level < 0 || level > 12)
        return -1;
    int bpp = img->channels;
    size_t n = (size_t)img->width * (size_t)bpp, h = (size_t)img->height;
    size_t filt_len = h * (n + 1);
    filt = malloc(filt_len);
    if (!filt)
        goto cleanup;
    size_t zlen = 0;
    const size_t head = 8 + 25 + 8 + 2, tail = 4 + 4 + 12;
    if (level == 0) {
        if (threads >= 2 && filt_len >= SC_PNG_PARALLEL_BYTES && h >= SC_PNG_BANDS)
            nb = SC_PNG_BANDS;
        for (int i = 0; i < nb; i++) {
            bands[i].img = img;
            bands[i].filt = filt;
            bands[i].y0 = h * (size_t)i / (size_t)nb;
            bands[i].y1 = h * (size_t)(i + 1) / (size_t)nb;
            bands[i].final = i == nb - 1;
        }
        /* one buffer: each band deflates into its own region, then the
         * outputs are moved down to follow each other */
        size_t cap = head + tail;
        for (int i = 0; i < nb; i++)
            cap += sc_deflate_bound((bands[i].y1 - bands[i].y0) * (n + 1));
        png = malloc(cap);
        if (!png)
            goto cleanup;
        bands[0].z = png + head;
        for (int i = 1; i < nb; i++)
            bands[i].z =
                bands[i - 1].z + sc_deflate_bound((bands[i - 1].y1 - bands[i - 1].y0) * (n + 1));
        band_queue_t q = {bands, nb, 0};
        pthread_t th;
        int threaded = nb > 1 && pthread_create(&th, NULL, band_worker, &q) == 0;
        band_worker(&q);
        if (threaded)
            pthread_join(th, NULL);
        for (int i = 0; i < nb; i++)
            if (bands[i].rc != 0)
                goto cleanup;
        uint8_t *z = png + head - 2;
        z[0] = 0x78; /* zlib header: deflate, 32 KiB window, no dictionary */
        z[1] = 0x01;
        size_t off = 2;
        for (int i = 0; i < nb; i++) {
            if (i > 0)
                memmove(z + off, bands[i].z, bands[i].zlen);
            off += bands[i].zlen;
        }
        zlen = off + 4;
        sc_png_put_be32(z + zlen - 4, libdeflate_adler32(1, filt, filt_len));
    } else {
        band_t all = {img, filt, 0, h, 1, NULL, 0, 0};
        filter_band(&all);
        c = libdeflate_alloc_compressor(level);
        if (all.rc != 0 || !c)
            goto cleanup;
        size_t bound = libdeflate_zlib_compress_bound(c, filt_len);
        png = malloc(head - 2 + bound + tail);
        if (!png)
            goto cleanup;
        zlen = libdeflate_zlib_compress(c, filt, filt_len, png + head - 2, bound);
        if (zlen == 0)
            goto cleanup;
    }
    if (zlen > 0x7fffffff)
        goto cleanup;
    uint8_t *p = png;
    memcpy(p, sc_png_sig, 8);
    p = sc_png_put_chunk_header(p + 8, 13, "IHDR");
    sc_png_put_be32(p, (uint32_t)img->width);
    sc_png_put_be32(p + 4, (uint32_t)img->height);
    p[8] = 8;
    p[9] = bpp == 4 ? 6 : 2;
    p[10] = p[11] = p[12] = 0;
    p = sc_png_put_chunk_crc(p, 13);
    p = sc_png_put_chunk_header(p, (uint32_t)zlen, "IDAT");
    p = sc_png_put_chunk_crc(p, (uint32_t)zlen);
    p = sc_png_put_chunk_header(p, 0, "IEND");
    p = sc_png_put_chunk_crc(p, 0);
    *out_len = (size_t)(p - png);
    *out = png;
    png = NULL;
    rc = 0;
cleanup:
    if (c)
        libdeflate_free_compressor(c);
    free(png);
    free(filt);
    return rc;
}
