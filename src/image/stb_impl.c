/* The only translation unit that compiles stb_image / stb_image_write (STYLE
 * rule 18): PNG and JPEG decoders only, a dimension cap, and the PNG writer's
 * deflate replaced by libdeflate through STBIW_ZLIB_COMPRESS. */
#include <limits.h>
#include <stdlib.h>

#include <libdeflate.h>

#include "image/stb_glue.h"

#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 16)
#define STBI_MALLOC(sz) malloc(sz)
#define STBI_REALLOC(p, newsz) realloc(p, newsz)
#define STBI_FREE(p) free(p)
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

/* stb_image_write's own deflate is as slow as zlib and writes files ~58 %
 * larger; libdeflate at the same level is faster and smaller. The returned
 * buffer is released by stbiw with STBIW_FREE (free). */
static unsigned char *sc_stbiw_zlib(unsigned char *data, int data_len, int *out_len, int quality)
{
    (void)quality;
    *out_len = 0;
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    if (!c)
        return NULL;
    size_t bound = libdeflate_zlib_compress_bound(c, (size_t)data_len);
    unsigned char *out = malloc(bound);
    size_t n = out ? libdeflate_zlib_compress(c, data, (size_t)data_len, out, bound) : 0;
    libdeflate_free_compressor(c);
    if (n == 0 || n > INT_MAX) {
        free(out);
        return NULL;
    }
    *out_len = (int)n;
    return out;
}

#define STBIW_ZLIB_COMPRESS sc_stbiw_zlib
#define STBIW_MALLOC(sz) malloc(sz)
#define STBIW_REALLOC(p, newsz) realloc(p, newsz)
#define STBIW_FREE(p) free(p)
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

int sc_stb_info(const uint8_t *data, size_t len, int *w, int *h, int *comp)
{
    if (len > INT_MAX)
        return 0;
    return stbi_info_from_memory(data, (int)len, w, h, comp);
}

uint8_t *sc_stb_load(const uint8_t *data, size_t len, int *w, int *h, int *comp, const char **err)
{
    if (len > INT_MAX) {
        *err = "file too big";
        return NULL;
    }
    uint8_t *p = stbi_load_from_memory(data, (int)len, w, h, comp, 0);
    if (!p)
        *err = stbi_failure_reason();
    return p;
}

void sc_stb_free(void *p)
{
    stbi_image_free(p);
}

uint8_t *sc_stb_write_png(const uint8_t *pixels, int w, int h, int comp, size_t *out_len)
{
    int n = 0;
    unsigned char *p = stbi_write_png_to_mem(pixels, w * comp, w, h, comp, &n);
    *out_len = p ? (size_t)n : 0;
    return p;
}
