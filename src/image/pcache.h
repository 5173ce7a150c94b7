/* The product cache: a bounded LRU of keyed and resized products (the
 * expensive half of a PIL composite, sc_place_prepare), so a pipeline that puts
 * the same product into many scenes keys and resizes it once. Entries are keyed
 * by the SHA-256 of the product's file bytes, the placed region (resized size
 * and visible window) and the keying options; a request with a user mask is not
 * cached. Bounded by the bytes of the cached pixels: PRODUCT_CACHE_BYTES
 * (default 256 MiB, 0 = off; serve applies it with sc_pcache_configure).
 * Thread-safe (one mutex; lookups and inserts copy the pixels). */
#ifndef SCENECOMP_IMAGE_PCACHE_H
#define SCENECOMP_IMAGE_PCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

#define SC_PCACHE_DEFAULT_BYTES ((size_t)256 << 20)

/* What a cached product is for. */
typedef struct sc_pcache_key {
    uint8_t sha[32];    /* SHA-256 of the product file */
    int width, height;  /* the resized size */
    int rx, ry, rw, rh; /* the visible window inside it */
    int shadow;         /* sc_key_shadow_t */
} sc_pcache_key_t;

typedef struct sc_pcache_stats {
    long long hits, misses, entries;
    size_t bytes, max_bytes;
} sc_pcache_stats_t;

/* SHA-256 of data (libcrypto). Returns 0 or -1. */
int sc_pcache_hash(const void *data, size_t len, uint8_t out[32]);
/* SHA-256 of a then b (b may be NULL/0): the key of a product converted into
 * the colour profile b (icc.h). Returns 0 or -1. */
int sc_pcache_hash2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32]);

/* 1 when the cache is on (max bytes > 0). */
int sc_pcache_enabled(void);

/* On a hit returns 1 with a copy of the layer pixels in *img (caller frees)
 * and the keying it had in *keying; 0 on a miss; -1 out of memory. */
int sc_pcache_get(const sc_pcache_key_t *k, sc_image_t *img, int *keying);

/* 1 when k is cached, else 0; counts nothing, copies nothing (the request
 * path asks before it decodes a product only a miss needs, issue 12). */
int sc_pcache_has(const sc_pcache_key_t *k);

/* Stores a copy of img (evicting least recently used entries to stay within
 * the bound; an image larger than the bound is not stored). */
void sc_pcache_put(const sc_pcache_key_t *k, const sc_image_t *img, int keying);

void sc_pcache_stats(sc_pcache_stats_t *out);

/* Empties the cache and sets its bound (tests, bench). */
void sc_pcache_configure(size_t max_bytes);

#endif
