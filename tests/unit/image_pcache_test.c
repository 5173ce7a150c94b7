/* The product cache (image/pcache.h): hits and misses, LRU eviction by bytes,
 * keys that differ in any part, off at 0, concurrent use; and through
 * sc_place_prepare_opts: a hit gives the same layer as a fresh key + resize. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "image/pcache.h"
#include "image/place.h"
#include "test.h"

static void fill(sc_image_t *img, int w, int h, int seed)
{
    CHECK_EQ_INT(sc_image_alloc(img, w, h, 4), 0);
    for (size_t i = 0; i < (size_t)w * (size_t)h * 4; i++)
        img->pixels[i] = (uint8_t)(i * 7 + (size_t)seed);
}

static sc_pcache_key_t key(int n)
{
    sc_pcache_key_t k;
    memset(&k, 0, sizeof k);
    k.sha[0] = (uint8_t)n;
    k.width = k.rw = 10;
    k.height = k.rh = 10;
    return k;
}

static void test_lru(void)
{
    sc_image_t a, got = SC_IMAGE_INIT;
    fill(&a, 10, 10, 1); /* 400 bytes + entry overhead */
    int kk = 0;
    sc_pcache_configure(3 * 400 + 3 * 200); /* room for 3 (the entry overhead < 200 B) */
    sc_pcache_key_t k1 = key(1), k2 = key(2), k3 = key(3), k4 = key(4);
    CHECK_EQ_INT(sc_pcache_get(&k1, &got, &kk), 0);
    sc_pcache_put(&k1, &a, 1);
    sc_pcache_put(&k2, &a, 2);
    sc_pcache_put(&k3, &a, 1);
    CHECK_EQ_INT(sc_pcache_get(&k1, &got, &kk), 1); /* k1 now most recent */
    CHECK_EQ_INT(kk, 1);
    CHECK(got.width == 10 && memcmp(got.pixels, a.pixels, 400) == 0);
    sc_image_free(&got);
    sc_pcache_put(&k4, &a, 1); /* evicts k2, the least recently used */
    CHECK_EQ_INT(sc_pcache_get(&k2, &got, &kk), 0);
    CHECK_EQ_INT(sc_pcache_get(&k1, &got, &kk), 1);
    sc_image_free(&got);
    CHECK_EQ_INT(sc_pcache_get(&k4, &got, &kk), 1);
    sc_image_free(&got);
    sc_pcache_stats_t st;
    sc_pcache_stats(&st);
    CHECK_EQ_INT((int)st.hits, 3);
    CHECK_EQ_INT((int)st.misses, 2);
    CHECK_EQ_INT((int)st.entries, 3);
    CHECK(st.bytes <= st.max_bytes);

    /* any field of the key matters */
    sc_pcache_key_t k5 = key(1);
    k5.shadow = 1;
    CHECK_EQ_INT(sc_pcache_get(&k5, &got, &kk), 0);
    k5 = key(1);
    k5.rx = 1;
    CHECK_EQ_INT(sc_pcache_get(&k5, &got, &kk), 0);

    /* larger than the bound: not stored; 0: off */
    sc_image_t big;
    fill(&big, 40, 40, 2);
    sc_pcache_key_t kb = key(9);
    sc_pcache_put(&kb, &big, 1);
    CHECK_EQ_INT(sc_pcache_get(&kb, &got, &kk), 0);
    sc_pcache_configure(0);
    CHECK_EQ_INT(sc_pcache_enabled(), 0);
    sc_pcache_put(&k1, &a, 1);
    CHECK_EQ_INT(sc_pcache_get(&k1, &got, &kk), 0);
    sc_image_free(&big);
    sc_image_free(&a);
}

static void *hammer(void *arg)
{
    int id = *(int *)arg;
    sc_image_t a, got = SC_IMAGE_INIT;
    fill(&a, 10, 10, id);
    for (int i = 0; i < 2000; i++) {
        sc_pcache_key_t k = key((id * 7 + i) % 13);
        int kk;
        if (sc_pcache_get(&k, &got, &kk) == 1) {
            CHECK(got.width == 10 && got.height == 10);
            sc_image_free(&got);
        } else {
            sc_pcache_put(&k, &a, 1);
        }
    }
    sc_image_free(&a);
    return NULL;
}

static void test_threads(void)
{
    sc_pcache_configure(5 * 700);
    pthread_t th[4];
    int ids[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer, &ids[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    sc_pcache_stats_t st;
    sc_pcache_stats(&st);
    CHECK(st.bytes <= st.max_bytes);
    CHECK(st.hits + st.misses == 8000);
}

/* an opaque shot on a backdrop: keyed by place, then served from the cache */
static void test_place(void)
{
    sc_image_t shot;
    CHECK_EQ_INT(sc_image_alloc(&shot, 80, 60, 3), 0);
    for (int y = 0; y < 60; y++)
        for (int x = 0; x < 80; x++) {
            uint8_t *p = shot.pixels + (y * 80 + x) * 3;
            int in = x > 20 && x < 60 && y > 15 && y < 45;
            p[0] = in ? 30 : 246, p[1] = in ? 90 : 245, p[2] = in ? 60 : 242;
        }
    uint8_t sha[32];
    CHECK_EQ_INT(sc_pcache_hash(shot.pixels, 80 * 60 * 3, sha), 0);
    sc_pcache_configure(1 << 20);
    sc_place_params_t p = {0.5, 0.5, 0.5};
    sc_place_opts_t o = {NULL, SC_KEY_SHADOW_KEEP, sha};
    sc_place_layer_t l1, l2, l3;
    const char *err = NULL;
    CHECK_EQ_INT(sc_place_prepare_opts(&shot, 200, 100, &p, &o, &l1, &err), 0);
    CHECK_EQ_INT(sc_place_prepare_opts(&shot, 200, 100, &p, &o, &l2, &err), 0);
    CHECK_EQ_INT(sc_place_prepare_opts(&shot, 200, 100, &p, NULL, &l3, &err), 0); /* no cache */
    sc_pcache_stats_t st;
    sc_pcache_stats(&st);
    CHECK_EQ_INT((int)st.hits, 1);
    CHECK_EQ_INT((int)st.misses, 1);
    CHECK_EQ_INT(l2.keying, SC_KEYING_KEYED);
    CHECK(l1.x0 == l2.x0 && l1.y0 == l2.y0 && l2.img.width == l3.img.width &&
          l2.img.height == l3.img.height && l2.img.channels == l3.img.channels);
    CHECK(memcmp(l2.img.pixels, l3.img.pixels,
                 (size_t)l3.img.width * (size_t)l3.img.height * (size_t)l3.img.channels) == 0);
    sc_place_layer_free(&l1);
    sc_place_layer_free(&l2);
    sc_place_layer_free(&l3);
    sc_image_free(&shot);
}

int main(void)
{
    test_lru();
    test_threads();
    test_place();
    return test_report("image_pcache_test");
}
