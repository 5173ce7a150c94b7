/* Decoding and encoding entry points (codec.h). Formats are recognised by
 * their signature; the pixel limit is checked from our own header parse before
 * any decoder runs or any pixel buffer exists. PNG: fast path (png.c) with
 * stb_image as the fallback for everything outside it; JPEG: libjpeg-turbo
 * (about 2x faster than stb here), stb only for CMYK/YCCK. Files that would
 * make stb misbehave (overrunning chunks, oversized DHT tables) are refused
 * before they reach it. */
#include "image/codec.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <turbojpeg.h>

#include "image/exif.h"
#include "image/png.h"
#include "image/stb_glue.h"

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static unsigned be16(const uint8_t *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

/* ==== Header probing ==== */

static sc_codec_status_t probe_png(const uint8_t *d, size_t len, sc_image_info_t *info)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 + 25 || memcmp(d, sig, 8) != 0 || be32(d + 8) != 13 ||
        memcmp(d + 12, "IHDR", 4) != 0)
        return SC_CODEC_INVALID;
    uint32_t w = be32(d + 16), h = be32(d + 20);
    int depth = d[24], ct = d[25];
    if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff)
        return SC_CODEC_INVALID;
    static const int chans[7] = {1, 0, 3, 3, 2, 0, 4};
    if (ct > 6 || chans[ct] == 0 ||
        (depth != 1 && depth != 2 && depth != 4 && depth != 8 && depth != 16))
        return SC_CODEC_INVALID;
    info->width = (int)w;
    info->height = (int)h;
    info->channels = chans[ct];
    info->format = SC_FMT_PNG;
    return SC_CODEC_OK;
}

/* Walks JPEG markers up to the first SOFn frame header. */
static sc_codec_status_t probe_jpeg(const uint8_t *d, size_t len, sc_image_info_t *info)
{
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return SC_CODEC_INVALID;
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF)
            return SC_CODEC_INVALID;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            pos += 2;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) /* end of image / scan before any frame */
            return SC_CODEC_INVALID;
        unsigned seg = be16(d + pos + 2);
        if (seg < 2 || pos + 2 + seg > len)
            return SC_CODEC_INVALID;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (seg < 8)
                return SC_CODEC_INVALID;
            unsigned h = be16(d + pos + 5), w = be16(d + pos + 7), nc = d[pos + 9];
            if (w == 0 || h == 0 || (nc != 1 && nc != 3 && nc != 4))
                return SC_CODEC_INVALID;
            info->width = (int)w;
            info->height = (int)h;
            info->channels = nc == 1 ? 1 : 3;
            info->format = SC_FMT_JPEG;
            return SC_CODEC_OK;
        }
        pos += 2 + seg;
    }
    return SC_CODEC_INVALID;
}

sc_codec_status_t sc_codec_probe(const uint8_t *data, size_t len, long long max_pixels,
                                 sc_image_info_t *info)
{
    sc_image_info_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (info)
        memset(info, 0, sizeof(*info));
    if (!data)
        return SC_CODEC_INVALID;
    sc_codec_status_t st = probe_png(data, len, &tmp);
    if (st != SC_CODEC_OK)
        st = probe_jpeg(data, len, &tmp);
    if (st != SC_CODEC_OK)
        return st;
    tmp.orientation = sc_exif_orientation(data, len);
    if (sc_exif_swaps(tmp.orientation)) {
        int t = tmp.width;
        tmp.width = tmp.height;
        tmp.height = t;
    }
    if (info)
        *info = tmp;
    if (max_pixels > 0 && (long long)tmp.width * tmp.height > max_pixels)
        return SC_CODEC_TOO_LARGE;
    return SC_CODEC_OK;
}

/* ==== Decoding ==== */

/* Every chunk up to IEND must lie inside the file. stb_image trusts chunk
 * lengths when sizing its IDAT buffer, so a 60-byte file claiming a 2 GiB
 * chunk would make it allocate 2 GiB; such files are refused before stb.
 * Deflate expands at most ~1032:1, so IDAT data too small to hold the rows
 * the header announces cannot be a complete image: refused before any
 * decoder allocates the frame. A first IDAT of length 0 is refused too: stb
 * then computes NULL + 0, which UBSan aborts on (fuzzer finding). */
static int png_chunks_ok(const uint8_t *d, size_t len)
{
    size_t pos = 8, idat = 0;
    while (pos + 12 <= len) {
        uint32_t clen = be32(d + pos);
        if (clen > len - pos - 12)
            return 0;
        if (memcmp(d + pos + 4, "IDAT", 4) == 0) {
            if (idat == 0 && clen == 0)
                return 0;
            idat += clen;
        }
        if (memcmp(d + pos + 4, "IEND", 4) == 0)
            break;
        pos += 12 + (size_t)clen;
    }
    if (pos + 12 > len)
        return 0;
    static const int chans[7] = {1, 0, 3, 1, 2, 0, 4};
    uint64_t w = be32(d + 16), h = be32(d + 20),
             bits = (uint64_t)d[24] * (uint64_t)chans[d[25] % 7];
    uint64_t raw = h * (1 + (w * bits + 7) / 8); /* no overflow: w, h < 2^31, bits <= 64 */
    return raw / 1032 <= (uint64_t)idat + 1;
}

/* stb_image keeps the palette in an uninitialised stack array of which PLTE
 * sets only the first entries, so a file whose indices run past its PLTE put
 * stack memory into the pixels and the answer (issue 8). A palette PNG
 * therefore reaches stb with every PLTE padded to 256 entries of opaque black,
 * as Pillow pads. Chunks have been checked by png_chunks_ok. Returns a
 * malloc'd copy (*out_len set), or NULL when out of memory. */
static uint8_t *png_pad_palette(const uint8_t *d, size_t len, size_t *out_len)
{
    size_t extra = 0;
    for (size_t pos = 8; pos + 12 <= len;) {
        uint32_t clen = be32(d + pos);
        if (memcmp(d + pos + 4, "PLTE", 4) == 0 && clen < 768)
            extra += 768;
        if (memcmp(d + pos + 4, "IEND", 4) == 0)
            break;
        pos += 12 + (size_t)clen;
    }
    uint8_t *o = malloc(len + extra), *q = o;
    if (!o)
        return NULL;
    size_t pos = 8;
    memcpy(q, d, 8);
    q += 8;
    while (pos + 12 <= len) {
        uint32_t clen = be32(d + pos);
        int iend = memcmp(d + pos + 4, "IEND", 4) == 0;
        if (memcmp(d + pos + 4, "PLTE", 4) == 0 && clen < 768 && clen % 3 == 0) {
            uint8_t *start = q;
            q[0] = 0, q[1] = 0, q[2] = 768 >> 8, q[3] = 768 & 0xff;
            memcpy(q + 4, d + pos + 4, 4 + (size_t)clen);
            memset(q + 8 + clen, 0, 768 - (size_t)clen);
            uint32_t crc = libdeflate_crc32(0, start + 4, 4 + 768);
            q += 8 + 768;
            q[0] = (uint8_t)(crc >> 24), q[1] = (uint8_t)(crc >> 16), q[2] = (uint8_t)(crc >> 8),
            q[3] = (uint8_t)crc;
            q += 4;
        } else {
            memcpy(q, d + pos, 12 + (size_t)clen);
            q += 12 + (size_t)clen;
        }
        pos += 12 + (size_t)clen;
        if (iend)
            break;
    }
    *out_len = (size_t)(q - o);
    return o;
}

/* Converts stb's 1..4 channel output to our 3/4 channel layout. */
static int from_stb(const uint8_t *p, int w, int h, int comp, sc_image_t *out)
{
    int ch = (comp == 2 || comp == 4) ? 4 : 3;
    if (sc_image_alloc(out, w, h, ch) != 0)
        return -1;
    size_t n = (size_t)w * (size_t)h;
    if (comp == ch) {
        memcpy(out->pixels, p, n * (size_t)ch);
        return 0;
    }
    uint8_t *o = out->pixels;
    for (size_t i = 0; i < n; i++) {
        uint8_t g = p[i * (size_t)comp];
        o[i * (size_t)ch] = o[i * (size_t)ch + 1] = o[i * (size_t)ch + 2] = g;
        if (ch == 4)
            o[i * 4 + 3] = p[i * 2 + 1];
    }
    return 0;
}

/* stb_image 2.27 overflows its Huffman tables on a DHT whose counts add up
 * to more than 256 symbols (found by our fuzzer), so any JPEG handed to stb
 * has its DHT segments checked first. Returns 1 when they are sane. */
static int jpeg_dht_ok(const uint8_t *d, size_t len)
{
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF)
            return 0;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) {
            pos++;
            continue;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            pos += 2;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) /* headers end at the first scan */
            return 1;
        size_t seg = be16(d + pos + 2);
        if (seg < 2 || pos + 2 + seg > len)
            return 0;
        if (m == 0xC4) {
            size_t q = pos + 4, end = pos + 2 + seg;
            while (q < end) {
                if (q + 17 > end)
                    return 0;
                size_t n = 0;
                for (int i = 0; i < 16; i++)
                    n += d[q + 1 + i];
                if (n > 256 || q + 17 + n > end)
                    return 0;
                q += 17 + n;
            }
        }
        pos += 2 + seg;
    }
    return 0;
}

/* libjpeg-turbo decode to RGB. Returns 0, 1 (CMYK/YCCK, which TurboJPEG
 * cannot turn into RGB: stb_image decodes those), 2 (invalid: a file
 * libjpeg-turbo rejects is not retried elsewhere), -1 out of memory. */
static int decode_jpeg_tj(const uint8_t *data, size_t len, sc_image_t *out)
{
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return -1;
    int w, h, subsamp, cs, rc = 2;
    if (len > 0xffffffffUL ||
        tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs) != 0)
        goto cleanup;
    if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        rc = 1;
        goto cleanup;
    }
    if (sc_image_alloc(out, w, h, 3) != 0) {
        rc = -1;
        goto cleanup;
    }
    /* any error or warning (e.g. a truncated file) refuses the image */
    if (tjDecompress2(tj, data, (unsigned long)len, out->pixels, w, w * 3, h, TJPF_RGB, 0) != 0) {
        sc_image_free(out);
        goto cleanup;
    }
    rc = 0;
cleanup:
    tjDestroy(tj);
    return rc;
}

/* Successful decodes since start (sc_codec_decodes). */
static atomic_llong n_decodes;

sc_codec_status_t sc_codec_decode(const uint8_t *data, size_t len, long long max_pixels,
                                  sc_image_t *out, const char **err)
{
    sc_image_info_t info;
    const char *e = NULL;
    sc_image_t tmp = SC_IMAGE_INIT;
    if (out)
        *out = tmp;
    if (!out)
        return SC_CODEC_INVALID;
    sc_codec_status_t st = sc_codec_probe(data, len, max_pixels, &info);
    if (st == SC_CODEC_TOO_LARGE) {
        e = "image has too many pixels";
        goto done;
    }
    if (st != SC_CODEC_OK) {
        e = "not a PNG or JPEG image";
        goto done;
    }
    int r = 1;
    if (info.format == SC_FMT_PNG)
        r = png_chunks_ok(data, len) ? sc_png_decode_fast(data, len, &tmp) : 2;
    else
        r = decode_jpeg_tj(data, len, &tmp);
    if (r < 0) {
        st = SC_CODEC_NOMEM;
        e = "out of memory";
        goto done;
    }
    if (r == 1 && info.format == SC_FMT_JPEG && !jpeg_dht_ok(data, len))
        r = 2;
    if (r == 2) {
        st = SC_CODEC_INVALID;
        e = "corrupt or truncated image";
        goto done;
    }
    if (r > 0) {
        int w, h, comp;
        /* stb's own cap (STBI_MAX_DIMENSIONS) and header sanity come first */
        if (!sc_stb_info(data, len, &w, &h, &comp)) {
            st = SC_CODEC_INVALID;
            e = "corrupt image header";
            goto done;
        }
        if (max_pixels > 0 && (long long)w * h > max_pixels) {
            st = SC_CODEC_TOO_LARGE;
            e = "image has too many pixels";
            goto done;
        }
        const char *why = NULL;
        const uint8_t *src = data;
        size_t src_len = len;
        uint8_t *padded = NULL;
        if (info.format == SC_FMT_PNG && data[25] == 3) {
            padded = png_pad_palette(data, len, &src_len);
            if (!padded) {
                st = SC_CODEC_NOMEM;
                e = "out of memory";
                goto done;
            }
            src = padded;
        }
        uint8_t *p = sc_stb_load(src, src_len, &w, &h, &comp, &why);
        free(padded);
        if (!p) {
            st = SC_CODEC_INVALID;
            e = why && strstr(why, "outofmem") ? "out of memory" : "corrupt image data";
            if (why && strstr(why, "outofmem"))
                st = SC_CODEC_NOMEM;
            goto done;
        }
        int fr = from_stb(p, w, h, comp, &tmp);
        sc_stb_free(p);
        if (fr != 0) {
            st = SC_CODEC_NOMEM;
            e = "out of memory";
            goto done;
        }
    }
    if (sc_exif_apply(&tmp, info.orientation) != 0) {
        sc_image_free(&tmp);
        st = SC_CODEC_NOMEM;
        e = "out of memory";
        goto done;
    }
    *out = tmp;
    st = SC_CODEC_OK;
    atomic_fetch_add_explicit(&n_decodes, 1, memory_order_relaxed);
done:
    if (err)
        *err = e;
    return st;
}

long long sc_codec_decodes(void)
{
    return atomic_load_explicit(&n_decodes, memory_order_relaxed);
}

/* ==== Encoding ==== */

/* 0 = our LZ77 + Huffman deflate (per block the cheaper of hash-chain matches
 * and plain runs) on two threads (png.h): at most 1.05x Pillow's zlib-6 size on
 * the bench and test scenes; the figures are in docs/performance.md. */
#define SC_PNG_DEFLATE_LEVEL 0

int sc_codec_encode_png(const sc_image_t *img, uint8_t **out, size_t *out_len)
{
    return sc_png_encode(img, SC_PNG_DEFLATE_LEVEL, out, out_len);
}

/* One TurboJPEG encode of rows [y0, y0 + h) into a malloc'd buffer. */
typedef struct {
    const sc_image_t *img;
    int y0, h, quality;
    uint8_t *buf;
    unsigned long size;
    int rc;
} jpeg_job_t;

static void *jpeg_job_run(void *arg)
{
    jpeg_job_t *j = arg;
    const sc_image_t *img = j->img;
    j->rc = -1;
    tjhandle tj = tjInitCompress();
    if (!tj)
        return NULL;
    unsigned long cap = tjBufSize(img->width, j->h, TJSAMP_420);
    j->buf = cap != (unsigned long)-1 ? malloc(cap) : NULL;
    j->size = cap;
    /* TJFLAG_NOREALLOC: the buffer is ours (malloc), so the caller can free() it */
    if (j->buf &&
        tjCompress2(tj, img->pixels + (size_t)j->y0 * (size_t)img->width * (size_t)img->channels,
                    img->width, img->width * img->channels, j->h,
                    img->channels == 4 ? TJPF_RGBX : TJPF_RGB, &j->buf, &j->size, TJSAMP_420,
                    j->quality, TJFLAG_NOREALLOC) == 0)
        j->rc = 0;
    tjDestroy(tj);
    return NULL;
}

/* Offsets in a TurboJPEG output: the SOF height field, and where the entropy
 * coded data starts (after the SOS header) and ends (before EOI). */
static int jpeg_layout(const uint8_t *d, size_t len, size_t *sof_h, size_t *data_start,
                       size_t *data_end)
{
    size_t pos = 2;
    *sof_h = 0;
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8 || d[len - 2] != 0xFF || d[len - 1] != 0xD9)
        return -1;
    while (pos + 4 <= len && d[pos] == 0xFF) {
        uint8_t m = d[pos + 1];
        size_t seg = be16(d + pos + 2);
        if (seg < 2 || pos + 2 + seg > len)
            return -1;
        if (m == 0xC0 || m == 0xC1)
            *sof_h = pos + 5;
        if (m == 0xDD) /* a DRI already: do not join */
            return -1;
        if (m == 0xDA) {
            *data_start = pos + 2 + seg;
            *data_end = len - 2;
            return *sof_h && *data_start <= *data_end ? 0 : -1;
        }
        pos += 2 + seg;
    }
    return -1;
}

/* Encodes the top and bottom halves on two threads and joins them into one
 * baseline JPEG: the halves have identical tables (same quality, TurboJPEG's
 * standard Huffman tables); a DRI segment sets the restart interval to the
 * top half's MCU count and an RST0 marker sits between the two entropy-coded
 * parts, which is exactly what a single encoder with that restart interval
 * writes (DC prediction restarts there; the top half is a whole number of
 * 16-row MCU rows, so no block straddles the seam). Returns 0, 1 when the
 * image does not suit (caller encodes it in one piece), -1 on failure. */
static int encode_jpeg_2band(const sc_image_t *img, int quality, uint8_t **out, size_t *out_len)
{
    int mcu_rows = (img->height + 15) / 16, mcu_cols = (img->width + 15) / 16;
    int top_rows = (mcu_rows + 1) / 2;
    if ((long long)img->width * img->height < (1 << 18) || mcu_rows < 4 ||
        (long long)mcu_cols * top_rows > 0xffff)
        return 1;
    jpeg_job_t jobs[2] = {{img, 0, top_rows * 16, quality, NULL, 0, -1},
                          {img, top_rows * 16, img->height - top_rows * 16, quality, NULL, 0, -1}};
    pthread_t th;
    int threaded = pthread_create(&th, NULL, jpeg_job_run, &jobs[1]) == 0;
    jpeg_job_run(&jobs[0]);
    if (threaded)
        pthread_join(th, NULL);
    else
        jpeg_job_run(&jobs[1]);
    int rc = -1;
    uint8_t *res = NULL;
    if (jobs[0].rc != 0 || jobs[1].rc != 0)
        goto cleanup;
    rc = 1;
    const uint8_t *a = jobs[0].buf, *b = jobs[1].buf;
    size_t la = jobs[0].size, lb = jobs[1].size, ha, sa, ea, hb, sb, eb;
    if (jpeg_layout(a, la, &ha, &sa, &ea) != 0 || jpeg_layout(b, lb, &hb, &sb, &eb) != 0 ||
        sa != sb || ha != hb)
        goto cleanup;
    /* the headers must be identical apart from the height */
    jobs[0].buf[ha] = jobs[1].buf[hb] = (uint8_t)(img->height >> 8);
    jobs[0].buf[ha + 1] = jobs[1].buf[hb + 1] = (uint8_t)img->height;
    if (memcmp(a, b, sa) != 0)
        goto cleanup;
    size_t sos = sa; /* the SOS header's start: walk back from the data start */
    for (size_t p = 2; p + 4 <= sa;) {
        if (a[p + 1] == 0xDA) {
            sos = p;
            break;
        }
        p += 2 + be16(a + p + 2);
    }
    size_t total = la + 6 + 2 + (eb - sb) + 2;
    res = malloc(total);
    if (!res) {
        rc = -1;
        goto cleanup;
    }
    unsigned interval = (unsigned)(mcu_cols * top_rows);
    uint8_t *q = res;
    memcpy(q, a, sos);
    q += sos;
    const uint8_t dri[6] = {0xFF, 0xDD, 0x00, 0x04, (uint8_t)(interval >> 8), (uint8_t)interval};
    memcpy(q, dri, 6);
    q += 6;
    memcpy(q, a + sos, ea - sos); /* SOS header + top half's entropy data */
    q += ea - sos;
    *q++ = 0xFF;
    *q++ = 0xD0; /* RST0 */
    memcpy(q, b + sb, eb - sb);
    q += eb - sb;
    *q++ = 0xFF;
    *q++ = 0xD9;
    *out = res;
    *out_len = (size_t)(q - res);
    res = NULL;
    rc = 0;
cleanup:
    free(res);
    free(jobs[0].buf);
    free(jobs[1].buf);
    return rc;
}

int sc_codec_encode_jpeg(const sc_image_t *img, int quality, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4) || quality < 1 || quality > 100)
        return -1;
    int r = encode_jpeg_2band(img, quality, out, out_len);
    if (r <= 0)
        return r;
    jpeg_job_t one = {img, 0, img->height, quality, NULL, 0, -1};
    jpeg_job_run(&one);
    if (one.rc != 0) {
        free(one.buf);
        return -1;
    }
    uint8_t *shrunk = realloc(one.buf, one.size);
    *out = shrunk ? shrunk : one.buf;
    *out_len = one.size;
    return 0;
}
