/* Thin wrappers around stb_image / stb_image_write, so that stb is compiled in
 * exactly one translation unit (stb_impl.c, STYLE rule 18). Thread-safe
 * (stb's global settings are never changed at run time). */
#ifndef SCENECOMP_IMAGE_STB_GLUE_H
#define SCENECOMP_IMAGE_STB_GLUE_H

#include <stddef.h>
#include <stdint.h>

/* stbi_info_from_memory: 1 when the header is understood. */
int sc_stb_info(const uint8_t *data, size_t len, int *w, int *h, int *comp);
/* stbi_load_from_memory with req_comp 0; returns the pixels (free with
 * sc_stb_free) or NULL with *err set to stb's static reason. */
uint8_t *sc_stb_load(const uint8_t *data, size_t len, int *w, int *h, int *comp, const char **err);
void sc_stb_free(void *p);
/* stbi_write_png_to_mem with its deflate replaced by libdeflate (level 6)
 * through STBIW_ZLIB_COMPRESS. Returns malloc'd bytes or NULL. */
uint8_t *sc_stb_write_png(const uint8_t *pixels, int w, int h, int comp, size_t *out_len);

#endif
