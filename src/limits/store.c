/* The in-process limiter store: one mutex around the set of held slot tokens,
 * a growable ring of prediction start times (the sliding 60-minute window), a
 * per-UTC-day counter and a small hash table of idempotency keys. Every
 * operation is a few dozen instructions under the lock; the ring only grows
 * while more starts are admitted within an hour than it has ever held, so take
 * is O(1) amortised (release is O(in flight): a linear scan of the held slots). */
#include "limits/store.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"

#define WINDOW_SECONDS 3600.0
/* An import never brings back more starts than this: a sane file holds at most
 * MAX_KONTEXT_PER_HOUR entries, and the config caps that at 1e8. */
#define IMPORT_MAX_STARTS 10000000

#define IDEM_BUCKETS 4096

typedef struct idem_entry {
    struct idem_entry *next;
    double expires;
    char *key;
    char fingerprint[SC_IDEM_VALUE_MAX + 1];
    char record_id[SC_IDEM_VALUE_MAX + 1];
} idem_entry_t;

typedef struct limits_memory {
    sc_limits_store_t base; /* first: the vtable pointer is the struct pointer */
    pthread_mutex_t mu;
    int in_flight;
    sc_limits_token_t *slots; /* the held slots, in_flight of them */
    size_t slots_cap;
    idem_entry_t *idem[IDEM_BUCKETS];
    /* Ring of start times, oldest at head, non-decreasing (see window_push). */
    double *ring;
    size_t cap, head, len;
    long day;            /* UTC day index the counter belongs to */
    long long day_count; /* starts on that day */
} limits_memory_t;

const char *sc_limit_result_name(sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_OK:
        return "ok";
    case SC_LIMIT_CONCURRENCY:
        return "concurrency_limit";
    case SC_LIMIT_HOURLY:
        return "hourly_limit";
    case SC_LIMIT_DAILY:
        return "daily_limit";
    case SC_LIMIT_UNAVAILABLE:
        return "limiter_unavailable";
    }
    return "unknown";
}

void sc_limits_token_new(sc_limits_token_t *tok)
{
    sc_id_new(tok->s);
}

static int idem_value_ok(const char *v)
{
    if (!v || !*v || strlen(v) > SC_IDEM_VALUE_MAX)
        return -1;
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return -1;
    return 0;
}

int sc_limits_idem_check(const char *key, const char *fingerprint, const char *record_id)
{
    size_t kl = key ? strlen(key) : 0;
    if (kl == 0 || kl > SC_IDEM_KEY_MAX || key[0] == ' ' || key[kl - 1] == ' ')
        return -1;
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return -1;
    if (fingerprint && idem_value_ok(fingerprint) != 0)
        return -1;
    if (record_id && idem_value_ok(record_id) != 0)
        return -1;
    return 0;
}

/* ==== Window and day (caller holds mu) ==== */

static long day_of(double now)
{
    return sc_clock_utc_day((time_t)floor(now));
}

/* Drops starts that are 3600 s old or older: a start at t counts while
 * now - t < 3600. */
static void window_prune(limits_memory_t *m, double now)
{
    while (m->len > 0 && now - m->ring[m->head] >= WINDOW_SECONDS) {
        m->head = (m->head + 1) % m->cap;
        m->len--;
    }
}

static int window_grow(limits_memory_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    double *n = malloc(ncap * sizeof *n);
    if (!n)
        return -1;
    for (size_t i = 0; i < m->len; i++)
        n[i] = m->ring[(m->head + i) % m->cap];
    free(m->ring);
    m->ring = n;
    m->cap = ncap;
    m->head = 0;
    return 0;
}

/* Appends a start. The stored time never goes below the newest entry, so the
 * ring stays sorted and pruning from the head stays exact even if the wall
 * clock steps backwards (such a start then expires slightly late, never early). */
static int window_push(limits_memory_t *m, double t)
{
    if (m->len == m->cap && window_grow(m) != 0)
        return -1;
    if (m->len > 0) {
        double last = m->ring[(m->head + m->len - 1) % m->cap];
        if (t < last)
            t = last;
    }
    m->ring[(m->head + m->len) % m->cap] = t;
    m->len++;
    return 0;
}

/* Rolls the day counter over at UTC midnight. Only forwards: a wall clock
 * stepping back across midnight keeps the newer day's count (conservative). */
static void day_roll(limits_memory_t *m, double now)
{
    long d = day_of(now);
    if (d > m->day) {
        m->day = d;
        m->day_count = 0;
    }
}

/* Read-only views for count and export, so that a reader with another notion
 * of "now" (the metrics writer, a snapshot) never changes what take sees. */

/* Index (from the head) of the first start still inside the window at now. */
static size_t window_first_live(const limits_memory_t *m, double now)
{
    size_t lo = 0, hi = m->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (now - m->ring[(m->head + mid) % m->cap] >= WINDOW_SECONDS)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static long long day_count_at(const limits_memory_t *m, double now)
{
    return day_of(now) > m->day ? 0 : m->day_count;
}

/* ==== vtable ==== */

static int slots_grow(limits_memory_t *m)
{
    size_t ncap = m->slots_cap ? m->slots_cap * 2 : 16;
    sc_limits_token_t *n = realloc(m->slots, ncap * sizeof *n);
    if (!n)
        return -1;
    m->slots = n;
    m->slots_cap = ncap;
    return 0;
}

static sc_limit_result_t mem_take(sc_limits_store_t *s, double now, const sc_limits_caps_t *caps,
                                  sc_limits_token_t *tok, sc_limits_counts_t *seen)
{
    limits_memory_t *m = (limits_memory_t *)s;
    sc_limit_result_t r = SC_LIMIT_OK;
    sc_limits_token_t t;
    sc_limits_token_new(&t); /* outside the lock: getrandom */
    tok->s[0] = '\0';
    pthread_mutex_lock(&m->mu);
    day_roll(m, now);
    window_prune(m, now);
    if (m->day_count >= caps->daily_limit)
        r = SC_LIMIT_DAILY;
    else if ((long long)m->len >= caps->max_per_hour)
        r = SC_LIMIT_HOURLY;
    else if (m->in_flight >= caps->max_concurrent)
        r = SC_LIMIT_CONCURRENCY;
    else if ((size_t)m->in_flight == m->slots_cap && slots_grow(m) != 0)
        r = SC_LIMIT_CONCURRENCY; /* out of memory: refuse rather than lose count */
    else if (window_push(m, now) != 0)
        r = SC_LIMIT_HOURLY;
    else {
        m->slots[m->in_flight++] = t;
        m->day_count++;
        *tok = t;
    }
    if (seen) {
        seen->in_flight = m->in_flight;
        seen->last_hour = m->len > (size_t)0x7fffffff ? 0x7fffffff : (int)m->len;
        seen->today = m->day_count;
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

static void mem_release(sc_limits_store_t *s, const sc_limits_token_t *tok)
{
    limits_memory_t *m = (limits_memory_t *)s;
    if (!tok || !tok->s[0])
        return;
    pthread_mutex_lock(&m->mu);
    /* Only a held token frees a slot: an unmatched or repeated release must
     * not open an extra one. */
    for (int i = 0; i < m->in_flight; i++) {
        if (strcmp(m->slots[i].s, tok->s) == 0) {
            m->slots[i] = m->slots[--m->in_flight];
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static int mem_count(sc_limits_store_t *s, double now, sc_limits_counts_t *out)
{
    limits_memory_t *m = (limits_memory_t *)s;
    pthread_mutex_lock(&m->mu);
    size_t live = m->len - window_first_live(m, now);
    out->in_flight = m->in_flight;
    out->last_hour = live > (size_t)0x7fffffff ? 0x7fffffff : (int)live;
    out->today = day_count_at(m, now);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* ==== Idempotency keys (caller holds mu for the helpers) ==== */

/* FNV-1a: the table is private to the process, so no keyed hash is needed
 * beyond what a bucket scan of expired entries costs. */
static size_t idem_bucket(const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % IDEM_BUCKETS);
}

/* Unlinks and frees the expired entries of one bucket. */
static void idem_prune(limits_memory_t *m, size_t b, double now)
{
    idem_entry_t **pp = &m->idem[b];
    while (*pp) {
        idem_entry_t *e = *pp;
        if (e->expires <= now) {
            *pp = e->next;
            free(e->key);
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

static sc_idem_result_t mem_idem_claim(sc_limits_store_t *s, double now, const char *key,
                                       const char *fingerprint, const char *record_id,
                                       int ttl_seconds, sc_idem_existing_t *out)
{
    limits_memory_t *m = (limits_memory_t *)s;
    if (sc_limits_idem_check(key, fingerprint, record_id) != 0 || !fingerprint || !record_id ||
        ttl_seconds <= 0)
        return SC_IDEM_INVALID;
    idem_entry_t *n = calloc(1, sizeof *n);
    char *k = strdup(key);
    if (!n || !k) {
        free(n);
        free(k);
        return SC_IDEM_UNAVAILABLE;
    }
    sc_idem_result_t r = SC_IDEM_CLAIMED;
    size_t b = idem_bucket(key);
    pthread_mutex_lock(&m->mu);
    idem_prune(m, b, now);
    for (idem_entry_t *e = m->idem[b]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            if (out) {
                memcpy(out->fingerprint, e->fingerprint, sizeof out->fingerprint);
                memcpy(out->record_id, e->record_id, sizeof out->record_id);
            }
            r = SC_IDEM_EXISTING;
            break;
        }
    }
    if (r == SC_IDEM_CLAIMED) {
        n->key = k;
        n->expires = now + ttl_seconds;
        snprintf(n->fingerprint, sizeof n->fingerprint, "%s", fingerprint);
        snprintf(n->record_id, sizeof n->record_id, "%s", record_id);
        n->next = m->idem[b];
        m->idem[b] = n;
        n = NULL;
        k = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    free(n);
    free(k);
    return r;
}

static int mem_idem_forget(sc_limits_store_t *s, const char *key)
{
    limits_memory_t *m = (limits_memory_t *)s;
    if (sc_limits_idem_check(key, NULL, NULL) != 0)
        return -1;
    size_t b = idem_bucket(key);
    pthread_mutex_lock(&m->mu);
    for (idem_entry_t **pp = &m->idem[b]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            idem_entry_t *e = *pp;
            *pp = e->next;
            free(e->key);
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static bool mem_available(sc_limits_store_t *s)
{
    (void)s;
    return true;
}

/* Appends [second, starts] to the hour window. 0 or -1 (out of memory). */
static int window_pair_add(cJSON *arr, double sec, long long starts)
{
    cJSON *pair = cJSON_CreateArray();
    cJSON *t = cJSON_CreateNumber(sec);
    cJSON *c = cJSON_CreateNumber((double)starts);
    if (pair)
        cJSON_AddItemToArray(arr, pair);
    if (!pair || !t || !c) {
        cJSON_Delete(t);
        cJSON_Delete(c);
        return -1;
    }
    cJSON_AddItemToArray(pair, t);
    cJSON_AddItemToArray(pair, c);
    return 0;
}

/* {"hour_window": [[second, starts], ...] (wall seconds, oldest first),
 *  "date": "YYYY-MM-DD", "day_count": n}. Caller owns the result; NULL on out of memory. */
static cJSON *mem_export(sc_limits_store_t *s, double now, long long reserved)
{
    limits_memory_t *m = (limits_memory_t *)s;
    double *copy = NULL;
    size_t n;
    long day;
    long long count;
    char date[11];

    pthread_mutex_lock(&m->mu);
    size_t first = window_first_live(m, now);
    n = m->len - first;
    if (n > 0)
        copy = malloc(n * sizeof *copy);
    if (copy)
        for (size_t i = 0; i < n; i++)
            copy[i] = m->ring[(m->head + first + i) % m->cap];
    day = day_of(now) > m->day ? day_of(now) : m->day;
    count = day_count_at(m, now);
    pthread_mutex_unlock(&m->mu);
    if (n > 0 && !copy)
        return NULL;

    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "hour_window");
    if (!o || !arr)
        goto fail;
    /* Run-length pairs [second, starts] with each start rounded up to its
     * whole second: at most 3600 pairs however busy the hour was, and a
     * restored start expires at most 1 s late, never early. */
    for (size_t i = 0; i < n;) {
        double sec = ceil(copy[i]);
        size_t j = i;
        while (j < n && ceil(copy[j]) == sec)
            j++;
        if (window_pair_add(arr, sec, (long long)(j - i)) != 0)
            goto fail;
        i = j;
    }
    /* after every real start: the window stays in order */
    if (reserved > 0 && window_pair_add(arr, ceil(now) + 1, reserved) != 0)
        goto fail;
    count += reserved > 0 ? reserved : 0;
    sc_clock_utc_date((time_t)day * 86400, date);
    if (!cJSON_AddStringToObject(o, "date", date) ||
        !cJSON_AddNumberToObject(o, "day_count", (double)count))
        goto fail;
    free(copy);
    return o;
fail:
    free(copy);
    cJSON_Delete(o);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One hour_window entry: a number (one start) or [second, starts] with
 * starts a positive integer. Returns 0 or -1. */
static int window_entry(const cJSON *it, double *t, double *k)
{
    const cJSON *v = it;
    *k = 1;
    if (cJSON_IsArray(it)) {
        const cJSON *c = cJSON_GetArrayItem(it, 1);
        if (cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(c))
            return -1;
        *k = c->valuedouble;
        if (!isfinite(*k) || *k < 1 || *k > IMPORT_MAX_STARTS || *k != floor(*k))
            return -1;
        v = cJSON_GetArrayItem(it, 0);
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return -1;
    *t = v->valuedouble;
    return 0;
}

/* Replaces the hour window and day counter with state (the export shape).
 * Validates everything before touching the store: returns -1 and changes
 * nothing on a wrong shape. Starts already outside the window are dropped,
 * starts in the future (clock skew, hand edits) count as now, and a day
 * counter of another day than today is not carried over. */
static int mem_import(sc_limits_store_t *s, const cJSON *state, double now)
{
    limits_memory_t *m = (limits_memory_t *)s;
    const cJSON *win = cJSON_GetObjectItemCaseSensitive(state, "hour_window");
    const cJSON *date = cJSON_GetObjectItemCaseSensitive(state, "date");
    const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(state, "day_count");
    long day;

    if (!cJSON_IsObject(state) || !cJSON_IsArray(win) || !cJSON_IsString(date) ||
        !cJSON_IsNumber(cnt))
        return -1;
    if (sc_clock_parse_utc_date(date->valuestring, &day) != 0)
        return -1;
    double c = cnt->valuedouble;
    if (!isfinite(c) || c < 0 || c > 1e15 || c != floor(c))
        return -1;
    /* Each entry is [second, starts] (what export writes) or a bare start
     * time (one start). First pass: validate and total the starts. */
    long long total = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, win)
    {
        double t, k;
        if (window_entry(it, &t, &k) != 0)
            return -1;
        total += (long long)k;
        if (total > IMPORT_MAX_STARTS)
            return -1;
    }

    size_t cap = 64;
    while (cap < (size_t)total)
        cap *= 2;
    double *ring = malloc(cap * sizeof *ring);
    if (!ring)
        return -1;
    size_t len = 0;
    cJSON_ArrayForEach(it, win)
    {
        double t, k;
        window_entry(it, &t, &k);
        if (t > now)
            t = now;
        if (now - t >= WINDOW_SECONDS)
            continue;
        for (long long i = 0; i < (long long)k; i++)
            ring[len++] = t;
    }
    qsort(ring, len, sizeof *ring, cmp_double);

    pthread_mutex_lock(&m->mu);
    free(m->ring);
    m->ring = ring;
    m->cap = cap;
    m->head = 0;
    m->len = len;
    m->day = day_of(now);
    m->day_count = (day == m->day) ? (long long)c : 0;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static void mem_reset(sc_limits_store_t *s)
{
    limits_memory_t *m = (limits_memory_t *)s;
    pthread_mutex_lock(&m->mu);
    m->head = 0;
    m->len = 0;
    m->day_count = 0;
    pthread_mutex_unlock(&m->mu);
}

static void mem_destroy(sc_limits_store_t *s)
{
    limits_memory_t *m = (limits_memory_t *)s;
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    for (size_t b = 0; b < IDEM_BUCKETS; b++) {
        while (m->idem[b]) {
            idem_entry_t *e = m->idem[b];
            m->idem[b] = e->next;
            free(e->key);
            free(e);
        }
    }
    free(m->slots);
    free(m->ring);
    free(m);
}

sc_limits_store_t *sc_limits_memory_new(void)
{
    limits_memory_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->base.take = mem_take;
    m->base.release = mem_release;
    m->base.count = mem_count;
    m->base.idem_claim = mem_idem_claim;
    m->base.idem_forget = mem_idem_forget;
    m->base.available = mem_available;
    m->base.export_state = mem_export;
    m->base.import_state = mem_import;
    m->base.reset = mem_reset;
    m->base.destroy = mem_destroy;
    m->day = 0; /* the first take rolls it to today */
    return &m->base;
}
