/* The product cache (pcache.h): a doubly linked LRU list under one mutex. A
 * few hundred entries at most (256 MiB of 768x768 layers), so lookup is a walk
 * of the list; hashing the key would not pay. */
#include "image/pcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

typedef struct entry {
    struct entry *prev, *next; /* prev: more recent */
    sc_pcache_key_t key;
    sc_image_t img;
    int keying;
    size_t bytes;
} entry_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static entry_t *head, *tail;
/* The bound until sc_pcache_configure sets the configured one (serve does). */
static size_t max_bytes = SC_PCACHE_DEFAULT_BYTES, cur_bytes;
static long long n_hits, n_misses, n_entries;

int sc_pcache_hash(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

int sc_pcache_hash2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, a, alen) == 1 && (!b || EVP_DigestUpdate(c, b, blen) == 1) &&
             EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

static size_t img_bytes(const sc_image_t *img)
{
    return (size_t)img->width * (size_t)img->height * (size_t)img->channels;
}

static int copy_image(const sc_image_t *src, sc_image_t *dst)
{
    if (sc_image_alloc(dst, src->width, src->height, src->channels) != 0)
        return -1;
    memcpy(dst->pixels, src->pixels, img_bytes(src));
    return 0;
}

static void unlink_entry(entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(entry_t *e)
{
    e->prev = NULL;
    e->next = head;
    if (head)
        head->prev = e;
    head = e;
    if (!tail)
        tail = e;
}

static void drop(entry_t *e)
{
    unlink_entry(e);
    cur_bytes -= e->bytes;
    n_entries--;
    sc_image_free(&e->img);
    free(e);
}

static entry_t *find(const sc_pcache_key_t *k)
{
    for (entry_t *e = head; e; e = e->next)
        if (memcmp(&e->key, k, sizeof *k) == 0)
            return e;
    return NULL;
}

int sc_pcache_enabled(void)
{
    pthread_mutex_lock(&mu);
    int on = max_bytes > 0;
    pthread_mutex_unlock(&mu);
    return on;
}

int sc_pcache_get(const sc_pcache_key_t *k, sc_image_t *img, int *keying)
{
    int rc = 0;
    pthread_mutex_lock(&mu);
    entry_t *e = max_bytes > 0 ? find(k) : NULL;
    if (e) {
        unlink_entry(e);
        push_front(e);
        if (copy_image(&e->img, img) != 0) {
            rc = -1;
        } else {
            *keying = e->keying;
            n_hits++;
            rc = 1;
        }
    } else {
        n_misses++;
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

int sc_pcache_has(const sc_pcache_key_t *k)
{
    pthread_mutex_lock(&mu);
    int rc = max_bytes > 0 && find(k) ? 1 : 0;
    pthread_mutex_unlock(&mu);
    return rc;
}

void sc_pcache_put(const sc_pcache_key_t *k, const sc_image_t *img, int keying)
{
    size_t bytes = img_bytes(img) + sizeof(entry_t);
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return;
    /* copy outside the lock: the pixels may be megabytes */
    if (img->pixels && copy_image(img, &e->img) != 0) {
        free(e);
        return;
    }
    e->key = *k;
    e->keying = keying;
    e->bytes = bytes;
    pthread_mutex_lock(&mu);
    entry_t *old = find(k);
    if (old)
        drop(old);
    if (bytes > max_bytes) {
        pthread_mutex_unlock(&mu);
        sc_image_free(&e->img);
        free(e);
        return;
    }
    while (tail && cur_bytes + bytes > max_bytes)
        drop(tail);
    push_front(e);
    cur_bytes += bytes;
    n_entries++;
    pthread_mutex_unlock(&mu);
}

void sc_pcache_stats(sc_pcache_stats_t *out)
{
    pthread_mutex_lock(&mu);
    out->hits = n_hits;
    out->misses = n_misses;
    out->entries = n_entries;
    out->bytes = cur_bytes;
    out->max_bytes = max_bytes;
    pthread_mutex_unlock(&mu);
}

void sc_pcache_configure(size_t bytes)
{
    pthread_mutex_lock(&mu);
    while (head)
        drop(head);
    max_bytes = bytes;
    n_hits = n_misses = 0;
    pthread_mutex_unlock(&mu);
}
