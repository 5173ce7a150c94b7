/* Decoding and encoding entry points (codec.h). Formats are recognised by
 * their signature; the pixel limit is checked from our own header parse before
 * any decoder runs or any pixel buffer exists. PNG: fast path (png.c) with
 * stb_image as the fallback for everything outside it; JPEG: libjpeg-turbo
 * (about 2x faster than stb here) with stb as the fallback (e.g. CMYK). */
#include "image/codec.h"

#include <stdlib.h>
#include <string.h>

#include <turbojpeg.h>

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
    if (ct > 6 || chans[ct] == 0 || (depth != 1 && depth != 2 && depth != 4 && depth != 8 &&
                                     depth != 16))
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
    if (info)
        *info = tmp;
    if (max_pixels > 0 && (long long)tmp.width * tmp.height > max_pixels)
        return SC_CODEC_TOO_LARGE;
    return SC_CODEC_OK;
}

/* ==== Decoding ==== */

/* Every chunk up to IEND must lie inside the file. stb_image trusts chunk
 * lengths when sizing its IDAT buffer, so a 60-byte file claiming a 2 GiB
 * chunk would make it allocate 2 GiB; such files are refused before stb. */
static int png_chunks_ok(const uint8_t *d, size_t len)
{
    size_t pos = 8;
    while (pos + 12 <= len) {
        uint32_t clen = be32(d + pos);
        if (clen > len - pos - 12)
            return 0;
        if (memcmp(d + pos + 4, "IEND", 4) == 0)
            return 1;
        pos += 12 + (size_t)clen;
    }
    return 0;
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

/* libjpeg-turbo decode to RGB. Returns 0, 1 (not handled: fall back), -1 nomem. */
static int decode_jpeg_tj(const uint8_t *data, size_t len, sc_image_t *out)
{
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return 1;
    int w, h, subsamp, cs, rc = 1;
    if (len > 0xffffffffUL ||
        tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs) != 0 ||
        cs == TJCS_CMYK || cs == TJCS_YCCK)
        goto cleanup;
    if (sc_image_alloc(out, w, h, 3) != 0) {
        rc = -1;
        goto cleanup;
    }
    if (tjDecompress2(tj, data, (unsigned long)len, out->pixels, w, w * 3, h, TJPF_RGB, 0) != 0) {
        /* warnings (e.g. a truncated file) are not fatal for stb either; retry there */
        sc_image_free(out);
        goto cleanup;
    }
    rc = 0;
cleanup:
    tjDestroy(tj);
    return rc;
}

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
        r = sc_png_decode_fast(data, len, &tmp);
    else
        r = decode_jpeg_tj(data, len, &tmp);
    if (r < 0) {
        st = SC_CODEC_NOMEM;
        e = "out of memory";
        goto done;
    }
    if (r > 0 && info.format == SC_FMT_PNG && !png_chunks_ok(data, len)) {
        st = SC_CODEC_INVALID;
        e = "corrupt or truncated PNG";
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
        uint8_t *p = sc_stb_load(data, len, &w, &h, &comp, &why);
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
    *out = tmp;
    st = SC_CODEC_OK;
done:
    if (err)
        *err = e;
    return st;
}

/* ==== Encoding ==== */

/* 0 = our Huffman + run-length deflate on two threads (png.h): within a few
 * percent of Pillow's zlib-6 size at a fraction of libdeflate-6's time; the
 * figures are in docs/performance.md. */
#define SC_PNG_DEFLATE_LEVEL 0

int sc_codec_encode_png(const sc_image_t *img, uint8_t **out, size_t *out_len)
{
    return sc_png_encode(img, SC_PNG_DEFLATE_LEVEL, out, out_len);
}

int sc_codec_encode_jpeg(const sc_image_t *img, int quality, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4) || quality < 1 || quality > 100)
        return -1;
    tjhandle tj = tjInitCompress();
    if (!tj)
        return -1;
    int rc = -1;
    unsigned long cap = tjBufSize(img->width, img->height, TJSAMP_420);
    uint8_t *buf = cap != (unsigned long)-1 ? malloc(cap) : NULL;
    unsigned long size = cap;
    if (!buf)
        goto cleanup;
    /* TJFLAG_NOREALLOC: the buffer is ours (malloc), so the caller can free() it */
    if (tjCompress2(tj, img->pixels, img->width, img->width * img->channels, img->height,
                    img->channels == 4 ? TJPF_RGBX : TJPF_RGB, &buf, &size, TJSAMP_420, quality,
                    TJFLAG_NOREALLOC) != 0)
        goto cleanup;
    uint8_t *shrunk = realloc(buf, size);
    if (shrunk)
        buf = shrunk;
    *out = buf;
    *out_len = size;
    buf = NULL;
    rc = 0;
cleanup:
    free(buf);
    tjDestroy(tj);
    return rc;
}
