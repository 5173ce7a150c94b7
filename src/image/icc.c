/* ICC profile carry-over (icc.h). */
#include "image/icc.h"

#include "image/png.h"

#include <stdlib.h>
#include <string.h>

#include <lcms2.h>
#include <libdeflate.h>

static const char icc_tag[12] = "ICC_PROFILE"; /* with its NUL */

static int png_extract(const uint8_t *d, size_t len, uint8_t **out, size_t *out_len)
{
    size_t pos = 8;
    while (pos + 12 <= len) {
        uint32_t clen = sc_png_be32(d + pos);
        if (clen > len - pos - 12)
            return 0;
        const uint8_t *type = d + pos + 4, *body = d + pos + 8;
        if (memcmp(type, "IDAT", 4) == 0 || memcmp(type, "IEND", 4) == 0)
            return 0; /* iCCP must come before IDAT */
        if (memcmp(type, "iCCP", 4) == 0) {
            size_t name = 0;
            while (name < clen && name < 80 && body[name] != 0)
                name++;
            if (name == 0 || name >= 80 || name + 2 > clen || body[name + 1] != 0)
                return 0; /* no name, or not method 0 (zlib) */
            const uint8_t *z = body + name + 2;
            size_t zlen = clen - name - 2;
            struct libdeflate_decompressor *dec = libdeflate_alloc_decompressor();
            if (!dec)
                return -1;
            int rc = 0;
            for (size_t cap = 64 * 1024; cap <= SC_ICC_MAX_BYTES; cap *= 2) {
                uint8_t *buf = malloc(cap);
                if (!buf) {
                    rc = -1;
                    break;
                }
                size_t got = 0;
                enum libdeflate_result r = libdeflate_zlib_decompress(dec, z, zlen, buf, cap, &got);
                if (r == LIBDEFLATE_SUCCESS && got > 0) {
                    *out = buf;
                    *out_len = got;
                    rc = 1;
                    break;
                }
                free(buf);
                if (r != LIBDEFLATE_INSUFFICIENT_SPACE)
                    break;
            }
            libdeflate_free_decompressor(dec);
            return rc;
        }
        pos += 12 + (size_t)clen;
    }
    return 0;
}

static int jpeg_extract(const uint8_t *d, size_t len, uint8_t **out, size_t *out_len)
{
    /* pass 1: count and size the segments; pass 2: copy them in sequence order */
    const uint8_t *seg[256] = {0};
    size_t seg_len[256] = {0};
    int count = 0;
    size_t total = 0;
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF)
            return 0;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) /* EOI, SOS: profiles come before the scan */
            break;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            pos += 2;
            continue;
        }
        size_t sl = ((size_t)d[pos + 2] << 8) | d[pos + 3];
        if (sl < 2 || sl > len - pos - 2)
            return 0;
        const uint8_t *p = d + pos + 4;
        size_t n = sl - 2;
        if (m == 0xE2 && n > 14 && memcmp(p, icc_tag, 12) == 0) {
            int seq = p[12], cnt = p[13];
            if (seq < 1 || cnt < 1 || seq > cnt || (count && cnt != count) || seg[seq - 1])
                return 0;
            count = cnt;
            seg[seq - 1] = p + 14;
            seg_len[seq - 1] = n - 14;
            total += n - 14;
            if (total > SC_ICC_MAX_BYTES)
                return 0;
        }
        pos += 2 + sl;
    }
    if (count == 0 || total == 0)
        return 0;
    for (int i = 0; i < count; i++)
        if (!seg[i])
            return 0; /* a missing segment: drop the profile */
    uint8_t *buf = malloc(total);
    if (!buf)
        return -1;
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        memcpy(buf + off, seg[i], seg_len[i]);
        off += seg_len[i];
    }
    *out = buf;
    *out_len = total;
    return 1;
}

int sc_icc_extract(const uint8_t *data, size_t len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!data)
        return 0;
    if (len >= 8 + 25 && memcmp(data, sc_png_sig, 8) == 0)
        return png_extract(data, len, out, out_len);
    if (len >= 4 && data[0] == 0xFF && data[1] == 0xD8)
        return jpeg_extract(data, len, out, out_len);
    return 0;
}

int sc_icc_png_embed(const uint8_t *png, size_t len, const uint8_t *icc, size_t icc_len,
                     uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    const size_t ihdr_end = 8 + 25;
    if (len < ihdr_end || memcmp(png, sc_png_sig, 8) != 0 || memcmp(png + 12, "IHDR", 4) != 0 ||
        !icc || icc_len == 0 || icc_len > SC_ICC_MAX_BYTES)
        return -1;
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    if (!c)
        return -1;
    static const char name[] = "ICC profile"; /* + NUL + method 0 */
    size_t head = sizeof name + 1, bound = libdeflate_zlib_compress_bound(c, icc_len);
    uint8_t *res = malloc(len + 12 + head + bound);
    if (!res) {
        libdeflate_free_compressor(c);
        return -1;
    }
    memcpy(res, png, ihdr_end);
    uint8_t *body = res + ihdr_end + 8;
    memcpy(body, name, sizeof name);
    body[sizeof name] = 0;
    size_t z = libdeflate_zlib_compress(c, icc, icc_len, body + head, bound);
    libdeflate_free_compressor(c);
    if (z == 0) {
        free(res);
        return -1;
    }
    uint32_t clen = (uint32_t)(head + z);
    sc_png_put_chunk_header(res + ihdr_end, clen, "iCCP");
    sc_png_put_chunk_crc(body, clen);
    size_t at = ihdr_end + 12 + clen;
    memcpy(res + at, png + ihdr_end, len - ihdr_end);
    *out = res;
    *out_len = at + len - ihdr_end;
    return 0;
}

int sc_icc_jpeg_embed(const uint8_t *jpg, size_t len, const uint8_t *icc, size_t icc_len,
                      uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    const size_t max_chunk = 65535 - 2 - 14;
    if (len < 4 || jpg[0] != 0xFF || jpg[1] != 0xD8 || !icc || icc_len == 0 ||
        icc_len > max_chunk * 255)
        return -1;
    size_t nseg = (icc_len + max_chunk - 1) / max_chunk;
    /* after SOI, and after a JFIF APP0 when there is one (APP0 must come first) */
    size_t at = 2;
    if (len >= 6 && jpg[2] == 0xFF && jpg[3] == 0xE0) {
        size_t sl = ((size_t)jpg[4] << 8) | jpg[5];
        if (sl < 2 || sl > len - 4)
            return -1;
        at = 4 + sl;
    }
    uint8_t *res = malloc(len + icc_len + nseg * 18);
    if (!res)
        return -1;
    memcpy(res, jpg, at);
    size_t o = at, off = 0;
    for (size_t i = 0; i < nseg; i++) {
        size_t n = icc_len - off < max_chunk ? icc_len - off : max_chunk;
        size_t sl = n + 2 + 14;
        res[o++] = 0xFF;
        res[o++] = 0xE2;
        res[o++] = (uint8_t)(sl >> 8);
        res[o++] = (uint8_t)sl;
        memcpy(res + o, icc_tag, 12);
        res[o + 12] = (uint8_t)(i + 1);
        res[o + 13] = (uint8_t)nseg;
        memcpy(res + o + 14, icc + off, n);
        o += 14 + n;
        off += n;
    }
    memcpy(res + o, jpg + at, len - at);
    *out = res;
    *out_len = o + len - at;
    return 0;
}

int sc_icc_convert(sc_image_t *img, const uint8_t *src, size_t src_len, const uint8_t *dst,
                   size_t dst_len)
{
    if (!img || !img->pixels || (img->channels != 3 && img->channels != 4) || !src || src_len == 0)
        return 1;
    if (dst && dst_len == src_len && memcmp(src, dst, src_len) == 0)
        return 1;
    /* a context per call: lcms2's global state is not ours to share */
    cmsContext ctx = cmsCreateContext(NULL, NULL);
    if (!ctx)
        return -1;
    int rc = 1;
    cmsHPROFILE in = cmsOpenProfileFromMemTHR(ctx, src, (cmsUInt32Number)src_len);
    cmsHPROFILE out = dst && dst_len ? cmsOpenProfileFromMemTHR(ctx, dst, (cmsUInt32Number)dst_len)
                                     : cmsCreate_sRGBProfileTHR(ctx);
    cmsHTRANSFORM t = NULL;
    if (in && out && cmsGetColorSpace(in) == cmsSigRgbData &&
        cmsGetColorSpace(out) == cmsSigRgbData) {
        cmsUInt32Number fmt = img->channels == 4 ? TYPE_RGBA_8 : TYPE_RGB_8;
        /* alpha is copied through unchanged */
        t = cmsCreateTransformTHR(ctx, in, fmt, out, fmt, INTENT_PERCEPTUAL,
                                  img->channels == 4 ? cmsFLAGS_COPY_ALPHA : 0);
    }
    if (t) {
        /* row by row: cmsDoTransform takes a 32-bit pixel count */
        for (int y = 0; y < img->height; y++) {
            uint8_t *row = img->pixels + (size_t)y * (size_t)img->width * (size_t)img->channels;
            cmsDoTransform(t, row, row, (cmsUInt32Number)img->width);
        }
        rc = 0;
        cmsDeleteTransform(t);
    }
    if (in)
        cmsCloseProfile(in);
    if (out)
        cmsCloseProfile(out);
    cmsDeleteContext(ctx);
    return rc;
}
