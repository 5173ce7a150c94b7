/* The decision log: append with rotation, newest-N by reverse scan (see decisions.h). */
#include "records/decisions.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/fsutil.h"

#define READ_CHUNK 65536
#define NFILES 3 /* decisions.jsonl, .1, .2 */

struct sc_decisions {
    pthread_mutex_t mu; /* fd, size, rotation */
    int fd;             /* O_APPEND on decisions.jsonl; -1 after a failed reopen */
    size_t size;
    size_t max_bytes;
    char path[NFILES][PATH_MAX]; /* [0] current, [1] .1, [2] .2 */
};

/* ==== Writing ==== */

static int open_current(sc_decisions_t *d)
{
    struct stat st;
    d->fd = open(d->path[0], O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (d->fd < 0)
        return -1;
    d->size = fstat(d->fd, &st) == 0 ? (size_t)st.st_size : 0;
    /* A torn last line (crash mid-write) must not swallow the next one. */
    char last = '\n';
    if (d->size > 0 && pread(d->fd, &last, 1, (off_t)d->size - 1) == 1 && last != '\n' &&
        write(d->fd, "\n", 1) == 1)
        d->size++;
    return 0;
}

sc_decisions_t *sc_decisions_open(const char *logs_dir, size_t max_bytes)
{
    sc_decisions_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->fd = -1;
    d->max_bytes = max_bytes ? max_bytes : SC_DECISIONS_DEFAULT_MAX_BYTES;
    static const char *const suffix[NFILES] = {"", ".1", ".2"};
    for (int i = 0; i < NFILES; i++) {
        int n = snprintf(d->path[i], sizeof d->path[i], "%s/%s%s", logs_dir, SC_DECISIONS_FILE,
                         suffix[i]);
        if (n < 0 || (size_t)n >= sizeof d->path[i]) {
            free(d);
            errno = ENAMETOOLONG;
            return NULL;
        }
    }
    if (sc_fs_mkdirs(logs_dir) != 0 || open_current(d) != 0) {
        int e = errno;
        free(d);
        errno = e;
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    return d;
}

void sc_decisions_close(sc_decisions_t *d)
{
    if (!d)
        return;
    if (d->fd >= 0)
        close(d->fd);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* decisions.jsonl -> .1 -> .2 (the old .2 is replaced). Under d->mu. */
static int rotate(sc_decisions_t *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    if (rename(d->path[1], d->path[2]) != 0 && errno != ENOENT)
        return -1;
    if (rename(d->path[0], d->path[1]) != 0 && errno != ENOENT)
        return -1;
    return open_current(d);
}

/* Appends at most max bytes of s, cut on a UTF-8 character boundary. */
static int json_str_cut(sc_buf_t *b, const char *s, size_t max)
{
    if (!s || strlen(s) <= max)
        return sc_buf_json_str(b, s);
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* s[n] is a continuation byte: the character starts before the cut */
    char *cut = malloc(n + 1);
    if (!cut)
        return -1;
    memcpy(cut, s, n);
    cut[n] = '\0';
    int rc = sc_buf_json_str(b, cut);
    free(cut);
    return rc;
}

static int json_num_or_null(sc_buf_t *b, double v, bool known)
{
    return known ? sc_buf_json_num(b, v) : sc_buf_puts(b, "null");
}

int sc_decisions_entry_json(const sc_decision_entry_t *e, sc_buf_t *b)
{
    char ts[32];
    sc_clock_rfc3339(e->ts, ts);
    int rc = sc_buf_printf(b, "{\"ts\":\"%s\",\"id\":", ts);
    rc |= sc_buf_json_str(b, e->id);
    rc |= sc_buf_puts(b, ",\"user_id\":");
    rc |= json_str_cut(b, e->user_id, 256);
    rc |= sc_buf_puts(b, ",\"prompt\":");
    rc |= json_str_cut(b, e->prompt, SC_DECISIONS_PROMPT_MAX);
    rc |= sc_buf_printf(b,
                        ",\"scene\":{\"width\":%d,\"height\":%d,\"has_alpha\":%s},"
                        "\"product\":{\"width\":%d,\"height\":%d,\"has_alpha\":%s},"
                        "\"requested_method\":",
                        e->scene_w, e->scene_h, e->scene_alpha ? "true" : "false", e->product_w,
                        e->product_h, e->product_alpha ? "true" : "false");
    rc |= sc_buf_json_str(b, e->requested_method);
    rc |= sc_buf_puts(b, ",\"method\":");
    rc |= sc_buf_json_str(b, e->method);
    rc |= sc_buf_puts(b, ",\"fallback_reason\":");
    rc |=
        sc_buf_json_str(b, e->fallback_reason && e->fallback_reason[0] ? e->fallback_reason : NULL);
    const sc_record_decision_t *d = e->decision;
    rc |= sc_buf_puts(b, ",\"decision\":{\"policy_version\":");
    rc |= json_num_or_null(b, d ? (double)d->policy_version : 0, d && d->policy_version >= 0);
    rc |= sc_buf_puts(b, ",\"phase\":");
    rc |= sc_buf_json_str(b, d && d->phase[0] ? d->phase : NULL);
    rc |= sc_buf_puts(b, ",\"rule\":");
    rc |= sc_buf_json_str(b, d && d->rule[0] ? d->rule : NULL);
    rc |= sc_buf_puts(b, ",\"bucket\":");
    rc |= json_num_or_null(b, d ? d->bucket : 0, d && d->bucket >= 0);
    rc |= sc_buf_puts(b, ",\"percent\":");
    rc |= json_num_or_null(b, d ? d->percent : 0, d && isfinite(d->percent));
    rc |= sc_buf_puts(b, "}}");
    return rc ? -1 : 0;
}

int sc_decisions_append(sc_decisions_t *d, const sc_decision_entry_t *e)
{
    sc_buf_t b = SC_BUF_INIT;
    if (sc_decisions_entry_json(e, &b) != 0 || sc_buf_puts(&b, "\n") != 0) {
        sc_buf_free(&b);
        errno = ENOMEM;
        return -1;
    }
    int rc = -1;
    pthread_mutex_lock(&d->mu);
    if (d->fd >= 0 && d->size > 0 && d->size + b.len > d->max_bytes) {
        if (rotate(d) != 0)
            goto out;
    }
    if (d->fd < 0 && open_current(d) != 0) /* a failed rotation retries here */
        goto out;
    if (sc_fs_write_all(d->fd, b.data, b.len) != 0)
        goto out;
    d->size += b.len;
    rc = 0;
out:;
    int err = errno;
    pthread_mutex_unlock(&d->mu);
    sc_buf_free(&b);
    errno = err;
    return rc;
}

/* ==== Reading backwards ==== */

typedef struct rev {
    int (*fn)(const char *line, size_t len, void *ud);
    void *ud;
    size_t want, got;
    bool stop;
} rev_t;

/* Passes one line; skips empty and oversized ones. */
static void emit(rev_t *r, const char *p, size_t len)
{
    if (r->stop || len == 0 || len > SC_DECISIONS_LINE_MAX)
        return;
    if (r->fn(p, len, r->ud) != 0) {
        r->stop = true;
        return;
    }
    if (++r->got >= r->want)
        r->stop = true;
}

/* Reads the first size bytes of fd backwards, emitting lines newest first.
 * acc holds the bytes after the read position that do not yet form a whole
 * line (its start may be the middle of a line). Returns 0 or -1. */
static int scan_file(int fd, size_t size, rev_t *r)
{
    char *buf = NULL;
    size_t cap = 0, len = 0; /* buf[0..len) = unconsumed bytes ending at the file position */
    off_t pos = (off_t)size;
    bool skipping = false; /* the tail of buf is part of an oversized line */
    int rc = -1;
    while (!r->stop) {
        size_t chunk = pos > READ_CHUNK ? READ_CHUNK : (size_t)pos;
        if (chunk == 0)
            break;
        if (len + chunk > cap) {
            size_t ncap = (len + chunk) * 2;
            char *nb = realloc(buf, ncap);
            if (!nb)
                goto out;
            buf = nb;
            cap = ncap;
        }
        memmove(buf + chunk, buf, len);
        pos -= (off_t)chunk;
        size_t done = 0;
        while (done < chunk) {
            ssize_t n = pread(fd, buf + done, chunk - done, pos + (off_t)done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n == 0)
                    errno = EIO; /* truncated under us */
                goto out;
            }
            done += (size_t)n;
        }
        len += chunk;
        /* Emit every line that has a newline before it (complete), newest first. */
        size_t end = len;
        for (size_t i = len; i-- > 0 && !r->stop;) {
            if (buf[i] != '\n')
                continue;
            if (!skipping)
                emit(r, buf + i + 1, end - i - 1);
            skipping = false;
            end = i;
        }
        len = end; /* the part before the first newline stays */
        if (len > SC_DECISIONS_LINE_MAX) {
            len = 0; /* drop the giant line's tail; skip its head too */
            skipping = true;
        }
    }
    if (!r->stop && !skipping && pos == 0)
        emit(r, buf, len); /* the file's first line */
    rc = 0;
out:
    free(buf);
    return rc;
}

int sc_decisions_newest(sc_decisions_t *d, size_t n,
                        int (*fn)(const char *line, size_t len, void *ud), void *ud)
{
    int fds[NFILES];
    size_t sizes[NFILES] = {0};
    /* Open all files under the lock: a rotation after that renames paths but
     * our descriptors keep the snapshot (no line twice, none missed). */
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < NFILES; i++) {
        struct stat st;
        fds[i] = open(d->path[i], O_RDONLY | O_CLOEXEC);
        if (fds[i] >= 0 && fstat(fds[i], &st) == 0)
            sizes[i] = (size_t)st.st_size;
    }
    if (d->fd >= 0 && fds[0] >= 0)
        sizes[0] = d->size < sizes[0] ? d->size : sizes[0];
    pthread_mutex_unlock(&d->mu);
    rev_t r = {fn, ud, n, 0, n == 0};
    int rc = 0;
    for (int i = 0; i < NFILES && !r.stop && rc == 0; i++)
        if (fds[i] >= 0)
            rc = scan_file(fds[i], sizes[i], &r);
    int err = errno;
    for (int i = 0; i < NFILES; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    errno = err;
    return rc == 0 ? (int)r.got : -1;
}

typedef struct json_acc {
    sc_buf_t *out;
    size_t want, got;
    bool oom;
} json_acc_t;

/* Appends line when it is a JSON object; invalid lines do not count towards
 * the n the caller asked for. Stops (returns 1) at n lines or out of memory. */
static int json_line(const char *line, size_t len, void *ud)
{
    json_acc_t *a = ud;
    cJSON *o = cJSON_ParseWithLength(line, len);
    bool ok = o && cJSON_IsObject(o);
    cJSON_Delete(o);
    if (!ok)
        return 0;
    if (sc_buf_puts(a->out, a->got ? "," : "") != 0 || sc_buf_append(a->out, line, len) != 0) {
        a->oom = true;
        return 1;
    }
    return ++a->got >= a->want ? 1 : 0;
}

int sc_decisions_newest_json(sc_decisions_t *d, size_t n, sc_buf_t *out)
{
    json_acc_t a = {out, n, 0, false};
    if (sc_buf_puts(out, "{\"decisions\":[") != 0)
        return -1;
    /* json_line stops the scan once n valid lines are in; the line limit given
     * here only bounds the work on a log full of torn lines. */
    if (n > 0 && sc_decisions_newest(d, n * 4 + 16, json_line, &a) < 0)
        return -1;
    if (a.oom || sc_buf_puts(out, "]}") != 0)
        return -1;
    return 0;
}
