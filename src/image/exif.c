/* EXIF orientation (exif.h). Lengths are size_t and every read is preceded by
 * a check of the form "off <= len && n <= len - off", which cannot overflow. */
#include "image/exif.h"

#include <stddef.h>
#include <string.h>

#define TAG_ORIENTATION 0x0112
#define TYPE_SHORT 3

static unsigned rd16(const uint8_t *p, int big)
{
    return big ? ((unsigned)p[0] << 8) | p[1] : ((unsigned)p[1] << 8) | p[0];
}

static uint32_t rd32(const uint8_t *p, int big)
{
    return big ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
               : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

int sc_exif_orientation_tiff(const uint8_t *t, size_t len)
{
    if (!t || len < 8)
        return 1;
    int big;
    if (t[0] == 'I' && t[1] == 'I')
        big = 0;
    else if (t[0] == 'M' && t[1] == 'M')
        big = 1;
    else
        return 1;
    if (rd16(t + 2, big) != 42)
        return 1;
    uint32_t ifd = rd32(t + 4, big);
    if (ifd > len || len - ifd < 2)
        return 1;
    unsigned n = rd16(t + ifd, big);
    size_t pos = (size_t)ifd + 2;
    for (unsigned i = 0; i < n; i++, pos += 12) {
        if (pos > len || len - pos < 12)
            return 1;
        const uint8_t *e = t + pos;
        if (rd16(e, big) != TAG_ORIENTATION)
            continue;
        /* SHORT, one value, stored in the first two bytes of the value field */
        if (rd16(e + 2, big) != TYPE_SHORT || rd32(e + 4, big) != 1)
            return 1;
        unsigned v = rd16(e + 8, big);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

static int jpeg_orientation(const uint8_t *d, size_t len)
{
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF)
            return 1;
        uint8_t m = d[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            pos += 2;
            continue;
        }
        if (m == 0xD9 || m == 0xDA) /* the tag lives in the headers */
            return 1;
        size_t seg = ((size_t)d[pos + 2] << 8) | d[pos + 3];
        if (seg < 2 || seg > len - pos - 2)
            return 1;
        if (m == 0xE1 && seg >= 2 + 6 && memcmp(d + pos + 4, "Exif\0\0", 6) == 0)
            return sc_exif_orientation_tiff(d + pos + 10, seg - 8);
        pos += 2 + seg;
    }
    return 1;
}

static int png_orientation(const uint8_t *d, size_t len)
{
    size_t pos = 8;
    while (pos <= len && len - pos >= 12) {
        size_t clen = ((size_t)d[pos] << 24) | ((size_t)d[pos + 1] << 16) |
                      ((size_t)d[pos + 2] << 8) | d[pos + 3];
        if (clen > len - pos - 12)
            return 1;
        const uint8_t *type = d + pos + 4;
        if (memcmp(type, "eXIf", 4) == 0)
            return sc_exif_orientation_tiff(d + pos + 8, clen);
        if (memcmp(type, "IEND", 4) == 0)
            return 1;
        pos += 12 + clen;
    }
    return 1;
}

int sc_exif_orientation(const uint8_t *data, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!data)
        return 1;
    if (len >= 8 && memcmp(data, png_sig, 8) == 0)
        return png_orientation(data, len);
    if (len >= 4 && data[0] == 0xFF && data[1] == 0xD8)
        return jpeg_orientation(data, len);
    return 1;
}

int sc_exif_swaps(int orientation)
{
    return orientation >= 5 && orientation <= 8;
}

/* The source pixel (sx, sy) shown at (dx, dy) of the upright image. */
static void source_of(int o, int w, int h, int dx, int dy, int *sx, int *sy)
{
    switch (o) {
    case 2:
        *sx = w - 1 - dx, *sy = dy;
        break;
    case 3:
        *sx = w - 1 - dx, *sy = h - 1 - dy;
        break;
    case 4:
        *sx = dx, *sy = h - 1 - dy;
        break;
    case 5:
        *sx = dy, *sy = dx;
        break;
    case 6:
        *sx = dy, *sy = h - 1 - dx;
        break;
    case 7:
        *sx = w - 1 - dy, *sy = h - 1 - dx;
        break;
    default: /* 8 */
        *sx = w - 1 - dy, *sy = dx;
        break;
    }
}

int sc_exif_apply(sc_image_t *img, int o)
{
    if (!img || !img->pixels || o <= 1 || o > 8)
        return 0;
    int w = img->width, h = img->height;
    int ow = sc_exif_swaps(o) ? h : w, oh = sc_exif_swaps(o) ? w : h;
    sc_image_t out;
    if (sc_image_alloc(&out, ow, oh, img->channels) != 0)
        return -1;
    size_t c = (size_t)img->channels;
    /* along a destination row the source moves by a constant step (one pixel
     * left/right, or one row up/down) */
    int sx0, sy0, sx1, sy1;
    source_of(o, w, h, 0, 0, &sx0, &sy0);
    source_of(o, w, h, 1, 0, &sx1, &sy1);
    ptrdiff_t step = ((ptrdiff_t)(sy1 - sy0) * w + (sx1 - sx0)) * (ptrdiff_t)c;
    for (int dy = 0; dy < oh; dy++) {
        int sx, sy;
        source_of(o, w, h, 0, dy, &sx, &sy);
        const uint8_t *src = img->pixels + ((size_t)sy * (size_t)w + (size_t)sx) * c;
        uint8_t *dst = out.pixels + (size_t)dy * (size_t)ow * c;
        for (int dx = 0; dx < ow; dx++, dst += c) {
            memcpy(dst, src, c);
            if (dx + 1 < ow)
                src += step;
        }
    }
    sc_image_free(img);
    *img = out;
    return 0;
}
