/* Multipart parse cost: a 6 MiB body (small fields, a 5 MiB and a ~1 MiB file)
 * fed to sc_multipart_feed in CHUNK-byte pieces (default 64 KiB, what
 * libmicrohttpd hands its upload callback), single thread, the callback only
 * sums lengths. REPS parses (default 30) timed one by one; prints the best and
 * the median as ns/byte and MB/s. Two contents: "random" (uniform bytes, a CR
 * every 256 on average) and "crlf" (dense "\r\n-" and partial boundaries, the
 * worst ordinary case for a boundary scan).
 *
 *   multipart_bench [REPS] [CHUNK]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/multipart.h"

#define BOUNDARY "----WebKitFormBoundary7MA4YWxkTrZu0gW"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int sum(void *ud, const char *name, const char *data, size_t len, bool first)
{
    (void)name;
    (void)data;
    (void)first;
    *(size_t *)ud += len;
    return 0;
}

/* Appends len bytes of part content at b + n; returns the new n. */
static size_t put_content(char *b, size_t n, size_t len, bool crlf, uint64_t *x)
{
    static const char near[] = "\r\n--" BOUNDARY;
    for (size_t i = 0; i < len; i++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17; /* xorshift64 */
        if (crlf && (*x & 0x3f) == 0) { /* every 64 bytes or so: a partial delimiter */
            size_t k = (size_t)(*x >> 40) % (sizeof near - 2) + 1;
            if (k + 1 > len - i)
                k = len - i - 1;
            memcpy(b + n, near, k);
            n += k;
            b[n++] = '.'; /* never completes it: the boundary has no '.' */
            i += k;
            continue;
        }
        b[n++] = (char)(*x >> 24);
    }
    return n;
}

/* Fills b with a total-byte body: three small fields, a 5 MiB "scene" file,
 * a "product" file making up the rest. Returns the content length. */
static size_t make_body(char *b, size_t total, bool crlf)
{
    static const char *fields[][2] = {
        {"prompt", "a sofa in a sunny loft, 35mm"}, {"strength", "0.8"}, {"user_id", "u-1234567"}};
    static const char file_head[] = "--" BOUNDARY "\r\nContent-Disposition: form-data; "
                                    "name=\"%s\"; filename=\"%s.png\"\r\n"
                                    "Content-Type: image/png\r\n\r\n";
    static const char close[] = "\r\n--" BOUNDARY "--\r\n";
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t n = 0, content = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        n += (size_t)sprintf(b + n,
                             "--" BOUNDARY "\r\nContent-Disposition: form-data; "
                             "name=\"%s\"\r\n\r\n%s\r\n",
                             fields[i][0], fields[i][1]);
        content += strlen(fields[i][1]);
    }
    n += (size_t)sprintf(b + n, file_head, "scene", "scene");
    n = put_content(b, n, 5u << 20, crlf, &x);
    content += 5u << 20;
    n += (size_t)sprintf(b + n, "\r\n");
    n += (size_t)sprintf(b + n, file_head, "product", "product");
    size_t rest = total - n - (sizeof close - 1);
    n = put_content(b, n, rest, crlf, &x);
    content += rest;
    memcpy(b + n, close, sizeof close - 1);
    return content;
}

static void run(const char *label, const char *body, size_t len, size_t content, int reps,
                size_t chunk)
{
    double *t = malloc((size_t)reps * sizeof *t);
    if (!t)
        exit(1);
    for (int r = -2; r < reps; r++) { /* two warm-ups */
        size_t got = 0;
        sc_multipart_t *m = sc_multipart_new(BOUNDARY, sum, &got);
        if (!m)
            exit(1);
        double t0 = mono();
        int rc = 0;
        for (size_t off = 0; off < len && rc == 0; off += chunk)
            rc = sc_multipart_feed(m, body + off, len - off < chunk ? len - off : chunk);
        double dt = mono() - t0;
        if (rc != 0 || sc_multipart_finish(m) != 0 || got != content) {
            fprintf(stderr, "multipart_bench: bad parse (%s)\n", label);
            exit(1);
        }
        sc_multipart_free(m);
        if (r >= 0)
            t[r] = dt;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    double best = t[0], med = t[reps / 2];
    printf("content=%s bytes=%zu chunk=%zu reps=%d best_ns_per_byte=%.3f best_mb_s=%.0f "
           "median_ns_per_byte=%.3f median_mb_s=%.0f\n",
           label, len, chunk, reps, best * 1e9 / (double)len, (double)len / best / 1e6,
           med * 1e9 / (double)len, (double)len / med / 1e6);
    free(t);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 30;
    size_t chunk = argc > 2 ? (size_t)atol(argv[2]) : 64 * 1024;
    if (reps < 1 || chunk < 1) {
        fprintf(stderr, "usage: multipart_bench [REPS] [CHUNK]\n");
        return 2;
    }
    size_t len = 6u << 20;
    char *body = malloc(len);
    if (!body)
        return 1;
    size_t content = make_body(body, len, false);
    run("random", body, len, content, reps, chunk);
    content = make_body(body, len, true);
    run("crlf", body, len, content, reps, chunk);
    free(body);
    return 0;
}
