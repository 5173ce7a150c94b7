/* Structural check of a PNG or JPEG file (check.h). */
#include "image/check.h"

#include <string.h>

#include <libdeflate.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static sc_codec_status_t check_png(const uint8_t *d, size_t len, sc_check_info_t *out)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(d, sig, 8) != 0)
        return SC_CODEC_INVALID;
    size_t pos = 8;
    bool first = true, idat = false;
    while (pos + 12 <= len) {
        uint32_t n = be32(d + pos);
        const uint8_t *type = d + pos + 4;
        if (n > 0x7fffffffu || len - pos - 12 < n)
            return SC_CODEC_INVALID; /* truncated */
        /* the CRC covers the type and the data */
        if (libdeflate_crc32(0, type, (size_t)n + 4) != be32(type + 4 + n))
            return SC_CODEC_INVALID;
        if (first) {
            if (memcmp(type, "IHDR", 4) != 0 || n != 13)
                return SC_CODEC_INVALID;
            uint8_t ct = type[4 + 9];
            out->alpha = ct == 4 || ct == 6;
            first = false;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            idat = true;
        } else if (memcmp(type, "tRNS", 4) == 0) {
            out->alpha = true; /* decoders expand it to an alpha channel */
        } else if (memcmp(type, "IEND", 4) == 0) {
            return idat ? SC_CODEC_OK : SC_CODEC_INVALID;
        }
        pos += 12 + (size_t)n;
    }
    return SC_CODEC_INVALID; /* no IEND */
}

/* Skips entropy-coded data from pos: returns the offset of the next marker
 * (0xFF followed by neither 0x00, a fill 0xFF nor RSTn), or len. */
static size_t skip_scan(const uint8_t *d, size_t len, size_t pos)
{
    while (pos < len) {
        const uint8_t *ff = memchr(d + pos, 0xFF, len - pos);
        if (!ff)
            return len;
        size_t i = (size_t)(ff - d);
        while (i + 1 < len && d[i + 1] == 0xFF)
            i++; /* fill bytes */
        if (i + 1 >= len)
            return len;
        uint8_t m = d[i + 1];
        if (m != 0x00 && !(m >= 0xD0 && m <= 0xD7))
            return i;
        pos = i + 2;
    }
    return len;
}

static sc_codec_status_t check_jpeg(const uint8_t *d, size_t len, sc_check_info_t *out)
{
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return SC_CODEC_INVALID;
    out->alpha = false;
    size_t pos = 2;
    bool frame = false, scan = false;
    while (pos + 2 <= len) {
        if (d[pos] != 0xFF)
            return SC_CODEC_INVALID;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD9) /* EOI */
            return frame && scan ? SC_CODEC_OK : SC_CODEC_INVALID;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length */
            pos += 2;
            continue;
        }
        if (m == 0xD8 || m == 0x00)
            return SC_CODEC_INVALID;
        if (pos + 4 > len)
            return SC_CODEC_INVALID;
        size_t seg = (size_t)d[pos + 2] << 8 | d[pos + 3];
        if (seg < 2 || len - pos - 2 < seg)
            return SC_CODEC_INVALID;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)
            frame = true;
        pos += 2 + seg;
        if (m == 0xDA) { /* SOS: its entropy-coded data runs to the next marker */
            if (!frame)
                return SC_CODEC_INVALID;
            scan = true;
            pos = skip_scan(d, len, pos);
        }
    }
    return SC_CODEC_INVALID; /* no EOI: truncated */
}

sc_codec_status_t sc_check_image(const uint8_t *data, size_t len, sc_check_info_t *out)
{
    sc_check_info_t tmp = {SC_FMT_UNKNOWN, false};
    if (!data)
        return SC_CODEC_INVALID;
    sc_codec_status_t st = SC_CODEC_INVALID;
    if (len >= 8 && data[0] == 0x89) {
        st = check_png(data, len, &tmp);
        tmp.format = SC_FMT_PNG;
    } else if (len >= 2 && data[0] == 0xFF) {
        st = check_jpeg(data, len, &tmp);
        tmp.format = SC_FMT_JPEG;
    }
    if (st == SC_CODEC_OK && out)
        *out = tmp;
    return st;
}
