/* Image benchmark: the same stages, geometry and timing method as the Pillow
 * anchor (../shared/bench/anchor_pillow.py): inputs read into memory once,
 * 2 warm-ups, then N reps (N so a stage takes about --target-s seconds, at
 * least --min-reps, at most 101), median reported as
 *   tool=scenecomp stage=NAME ms=MEDIAN mpix_s=X min_ms=.. max_ms=.. n=.. cpu_ms=..
 * Usage: sc_bench INDIR [--target-s S] [--min-reps N] [--extra]
 * The end_to_end stages run exactly the server's PIL path (compose/compose.h):
 * sc_compose_decode (headers, placement limits, both decodes) then
 * sc_compose_pil (composite, encode with the format table's quality).
 * --extra adds x_* stages: the alternatives (libdeflate levels, stb_image_write,
 * stb JPEG/PNG decode, everything on one thread, the save) behind the design
 * choices. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compose/compose.h"
#include "image/codec.h"
#include "image/composite.h"
#include "image/format.h"
#include "image/pcache.h"
#include "image/place.h"
#include "image/png.h"
#include "image/resize.h"
#include "image/simd.h"
#include "image/stb_glue.h"

#define PROD_W 768

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    const char *dir;
    double target_s;
    int min_reps;
} opts_t;

typedef void (*stage_fn)(void *ctx);

static void die(const char *what)
{
    fprintf(stderr, "sc_bench: %s\n", what);
    exit(1);
}

/* setup (untimed) runs before every rep when given. */
static void bench(const opts_t *o, const char *name, stage_fn fn, stage_fn setup, void *ctx,
                  double mpix)
{
    double warm = 1e9, times[101], cpus[101];
    for (int i = 0; i < 2; i++) {
        if (setup)
            setup(ctx);
        double t0 = mono();
        fn(ctx);
        double t = mono() - t0;
        if (t < warm)
            warm = t;
    }
    int n = (int)(o->target_s / (warm > 1e-6 ? warm : 1e-6));
    if (n > 101)
        n = 101;
    if (n < o->min_reps)
        n = o->min_reps;
    for (int i = 0; i < n; i++) {
        if (setup)
            setup(ctx);
        double c0 = cpu(), t0 = mono();
        fn(ctx);
        double t1 = mono(), c1 = cpu();
        times[i] = t1 - t0;
        cpus[i] = c1 - c0;
    }
    double mn = 1e9, mx = 0;
    for (int i = 0; i < n; i++) {
        if (times[i] < mn)
            mn = times[i];
        if (times[i] > mx)
            mx = times[i];
    }
    double med = median(times, n), cmed = median(cpus, n);
    printf("tool=scenecomp stage=%s ms=%.3f mpix_s=%.2f min_ms=%.3f max_ms=%.3f n=%d cpu_ms=%.3f\n",
           name, med * 1e3, mpix / med, mn * 1e3, mx * 1e3, n, cmed * 1e3);
    fflush(stdout);
}

typedef struct {
    uint8_t *data;
    size_t len;
} file_t;

static file_t slurp(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    file_t r = {malloc((size_t)n), (size_t)n};
    if (!r.data || fread(r.data, 1, (size_t)n, f) != (size_t)n)
        die("read");
    fclose(f);
    return r;
}

static sc_image_t decode_or_die(file_t f)
{
    sc_image_t img;
    const char *err = NULL;
    if (sc_codec_decode(f.data, f.len, 0, &img, &err) != SC_CODEC_OK)
        die(err ? err : "decode");
    return img;
}

/* ==== stage contexts ==== */

typedef struct {
    file_t f;
} dec_ctx;

static void st_decode(void *c)
{
    sc_image_t img = decode_or_die(((dec_ctx *)c)->f);
    sc_image_free(&img);
}

typedef struct {
    const sc_image_t *src;
    int w, h;
} rs_ctx;

static void st_resize(void *c)
{
    rs_ctx *r = c;
    sc_image_t out;
    if (sc_resize_lanczos(r->src, r->w, r->h, &out) != 0)
        die("resize");
    sc_image_free(&out);
}

typedef struct {
    const sc_image_t *scene, *small;
    sc_image_t work;
    int left, top;
} paste_ctx;

static void st_paste_setup(void *c)
{
    paste_ctx *p = c;
    memcpy(p->work.pixels, p->scene->pixels,
           (size_t)p->scene->width * (size_t)p->scene->height * 3);
}

static void st_paste(void *c)
{
    paste_ctx *p = c;
    sc_simd_level_t lvl = sc_simd_level();
    for (int y = 0; y < p->small->height; y++)
        sc_over_rgba_on_rgb(
            p->work.pixels + ((size_t)(p->top + y) * (size_t)p->work.width + (size_t)p->left) * 3,
            p->small->pixels + (size_t)y * (size_t)p->small->width * 4, (size_t)p->small->width,
            lvl);
}

typedef struct {
    const sc_image_t *img;
    int jpeg;
    size_t last_len;
} enc_ctx;

static void st_encode(void *c)
{
    enc_ctx *e = c;
    uint8_t *out;
    size_t len;
    if (sc_format_encode(e->jpeg ? SC_FMT_JPEG : SC_FMT_PNG, e->img, 0, &out, &len) != 0)
        die("encode");
    e->last_len = len;
    free(out);
}

typedef struct {
    file_t scene, prod;
    int jpeg;
    sc_place_params_t params;
    int png_level;
    const char *save_dir; /* x_end_to_end_saved: also the server's save */
} e2e_ctx;

/* The server's PIL path (http/composite.c run_pil): decode with the checks,
 * composite, encode; the save only when save_dir is set. */
static void st_e2e(void *c)
{
    e2e_ctx *e = c;
    sc_image_t sc, pr;
    sc_compose_refusal_t why;
    if (sc_compose_decode(e->scene.data, e->scene.len, e->prod.data, e->prod.len, 40000000,
                          &e->params, &sc, &pr, &why) != 0)
        die(why.message);
    sc_image_format_t fmt = e->jpeg ? SC_FMT_JPEG : SC_FMT_PNG;
    uint8_t *out;
    size_t len;
    const char *err = NULL;
    if (sc_compose_pil(&sc, &pr, &e->params, fmt, &out, &len, &err) != 0)
        die(err);
    if (e->save_dir &&
        sc_compose_save(e->save_dir, "0123456789abcdef0123456789abcdef", fmt, out, len) != 0)
        die("save");
    free(out);
    sc_image_free(&sc);
    sc_image_free(&pr);
}

/* everything on one thread (the PNG encoder in one band) */
static void st_e2e_serial(void *c)
{
    e2e_ctx *e = c;
    sc_image_t sc = decode_or_die(e->scene), pr = decode_or_die(e->prod);
    const char *err = NULL;
    if (sc_place_composite(&sc, &pr, &e->params, &err) != 0)
        die(err);
    uint8_t *out;
    size_t len;
    int rc = e->jpeg ? sc_codec_encode_jpeg(&sc, sc_format_get(SC_FMT_JPEG)->quality, &out, &len)
                     : sc_png_encode_threads(&sc, e->png_level, 1, &out, &len);
    if (rc != 0)
        die("encode");
    free(out);
    sc_image_free(&sc);
    sc_image_free(&pr);
}

/* ==== comparison stages (the alternatives, for docs/performance.md) ==== */

typedef struct {
    const sc_image_t *img;
    int level;
    size_t last_len;
} alt_ctx;

static void st_png_level(void *c)
{
    alt_ctx *a = c;
    uint8_t *out;
    if (sc_png_encode(a->img, a->level, &out, &a->last_len) != 0)
        die("encode");
    free(out);
}

static void st_png_1thread(void *c)
{
    alt_ctx *a = c;
    uint8_t *out;
    if (sc_png_encode_threads(a->img, 0, 1, &out, &a->last_len) != 0)
        die("encode");
    free(out);
}

/* libdeflate on parallel independent blocks (issue 12's alternative): the
 * frame cut into 4 bands, each filtered and compressed by libdeflate at
 * a->level as its own PNG, two bands per thread on two threads. Joining the
 * bands into one zlib stream would need a bit-level rewrite of each band's
 * final block that libdeflate does not offer, so this is a lower bound on that
 * approach's time; last_len sums the band sizes. */
typedef struct {
    sc_image_t band[2];
    int level;
    size_t len;
} lbands_t;

static void *lbands_worker(void *arg)
{
    lbands_t *b = arg;
    b->len = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t *out;
        size_t n = 0;
        if (sc_png_encode(&b->band[i], b->level, &out, &n) != 0)
            die("encode band");
        free(out);
        b->len += n;
    }
    return NULL;
}

static void st_png_level_bands(void *c)
{
    alt_ctx *a = c;
    const sc_image_t *img = a->img;
    lbands_t t[2];
    size_t row = (size_t)img->width * (size_t)img->channels;
    for (int k = 0; k < 4; k++) {
        int y0 = img->height * k / 4, y1 = img->height * (k + 1) / 4;
        t[k / 2].band[k % 2] =
            (sc_image_t){img->width, y1 - y0, img->channels, img->pixels + (size_t)y0 * row};
        t[k / 2].level = a->level;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, lbands_worker, &t[1]) != 0)
        die("pthread_create");
    lbands_worker(&t[0]);
    pthread_join(th, NULL);
    a->last_len = t[0].len + t[1].len;
}

static void st_png_stbiw(void *c)
{
    alt_ctx *a = c;
    uint8_t *out = sc_stb_write_png(a->img->pixels, a->img->width, a->img->height, a->img->channels,
                                    &a->last_len);
    if (!out)
        die("stbiw");
    free(out);
}

static void st_decode_stb(void *c)
{
    dec_ctx *d = c;
    int w, h, comp;
    const char *err;
    uint8_t *p = sc_stb_load(d->f.data, d->f.len, &w, &h, &comp, &err);
    if (!p)
        die(err);
    sc_stb_free(p);
}

/* The anchor's bottom_center_box, expressed as the contract's centre/scale
 * parameters (checked to give the same box). */
static void bottom_center(int sw, int sh, int pw, int ph, int *left, int *top)
{
    *left = (sw - pw) / 2;
    *top = sh - ph - (int)(sh * 0.04);
}

static sc_place_params_t params_for(const sc_image_t *scene, const sc_image_t *prod)
{
    int ph = (int)((double)prod->height * PROD_W / prod->width + 0.5), left, top;
    bottom_center(scene->width, scene->height, PROD_W, ph, &left, &top);
    sc_place_params_t p = {(left + PROD_W / 2.0) / scene->width, (top + ph / 2.0) / scene->height,
                           (double)PROD_W / scene->width};
    sc_place_geometry_t g;
    sc_place_geometry(scene->width, scene->height, prod->width, prod->height, &p, &g);
    if (g.left != left || g.top != top || g.width != PROD_W || g.height != ph)
        die("geometry differs from the anchor's box");
    return p;
}

/* One product, 100 different scenes (a video pipeline): the server's PIL path
 * per request (the scene's decode, the product's SHA-256 as the HTTP handler
 * takes it, the product decoded only when its layer is not cached, composite,
 * JPEG q90), with the product cache off, then on. Prints
 *   tool=scenecomp stage=product_cache_100_scenes_{off,on} rps=.. ms_per_req=..
 * and the hits/misses of the "on" pass. */
static void product_cache_stage(const char *dir, const sc_image_t *scene)
{
    enum { N = 100 };
    file_t prod = slurp(dir, "product_opaque.jpg");
    file_t scenes[N];
    sc_image_t v;
    if (sc_image_alloc(&v, scene->width, scene->height, 3) != 0)
        die("alloc");
    size_t row = (size_t)scene->width * 3;
    for (int k = 0; k < N; k++) { /* each scene shifted by 17 k pixels: different JPEGs */
        size_t sh = ((size_t)k * 17 % (size_t)scene->width) * 3;
        for (int y = 0; y < scene->height; y++) {
            const uint8_t *src = scene->pixels + (size_t)y * row;
            memcpy(v.pixels + (size_t)y * row, src + sh, row - sh);
            memcpy(v.pixels + (size_t)y * row + row - sh, src, sh);
        }
        uint8_t *out;
        size_t len;
        if (sc_codec_encode_jpeg(&v, 90, &out, &len) != 0)
            die("encode");
        scenes[k].data = out;
        scenes[k].len = len;
    }
    sc_image_free(&v);
    sc_place_params_t params = {0.5, 0.6, 0.4};
    for (int on = 0; on < 2; on++) {
        sc_pcache_configure(on ? SC_PCACHE_DEFAULT_BYTES : 0);
        double t0 = 0;
        for (int i = -5; i < N; i++) { /* 5 warm-up requests */
            if (i == 0)
                t0 = mono();
            const file_t *sf = &scenes[i < 0 ? N + i : i];
            /* As run_pil (src/http/composite.c): the scene decoded, the product
             * by its header only; decoded when its layer is not cached. */
            sc_image_t sc = SC_IMAGE_INIT, pr = SC_IMAGE_INIT;
            sc_image_info_t pi;
            if (sc_codec_decode(sf->data, sf->len, 40000000, &sc, NULL) != SC_CODEC_OK ||
                sc_codec_probe(prod.data, prod.len, 40000000, &pi) != SC_CODEC_OK)
                die("decode");
            pr.width = pi.width;
            pr.height = pi.height;
            pr.channels = pi.channels == 2 || pi.channels == 4 ? 4 : 3;
            uint8_t sha[32];
            sc_compose_opts_t co = {0, {NULL, SC_KEY_SHADOW_KEEP, NULL}, NULL, 0};
            if (sc_pcache_enabled() && sc_pcache_hash(prod.data, prod.len, sha) == 0)
                co.place.product_sha = sha;
            uint8_t *out;
            size_t len;
            const char *err = NULL;
            int rc =
                sc_compose_pil_opts(&sc, &pr, &params, SC_FMT_JPEG, &co, &out, &len, NULL, &err);
            if (rc != 0 && err && strcmp(err, SC_PLACE_NEED_PIXELS) == 0) {
                if (sc_codec_decode(prod.data, prod.len, 40000000, &pr, NULL) != SC_CODEC_OK)
                    die("decode product");
                rc = sc_compose_pil_opts(&sc, &pr, &params, SC_FMT_JPEG, &co, &out, &len, NULL,
                                         &err);
            }
            if (rc != 0)
                die(err);
            free(out);
            sc_image_free(&sc);
            sc_image_free(&pr);
        }
        double secs = mono() - t0;
        printf("tool=scenecomp stage=product_cache_100_scenes_%s rps=%.1f ms_per_req=%.3f\n",
               on ? "on" : "off", N / secs, secs * 1000.0 / N);
    }
    sc_pcache_stats_t st;
    sc_pcache_stats(&st);
    printf("# product cache (on pass): hits=%lld misses=%lld bytes=%zu\n", st.hits, st.misses,
           st.bytes);
    for (int k = 0; k < N; k++)
        free(scenes[k].data);
    free(prod.data);
}

int main(int argc, char **argv)
{
    opts_t o = {"/tmp/scenecomp-bench", 2.0, 9};
    int extra = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--extra") == 0)
            extra = 1;
        else if (strcmp(argv[i], "--target-s") == 0 && i + 1 < argc)
            o.target_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--min-reps") == 0 && i + 1 < argc)
            o.min_reps = atoi(argv[++i]);
        else
            o.dir = argv[i];
    }
    file_t scene_png = slurp(o.dir, "scene_1080p.png"), scene_jpg = slurp(o.dir, "scene_1080p.jpg");
    file_t scene4k_png = slurp(o.dir, "scene_4k.png"), prod_png = slurp(o.dir, "product_rgba.png");
    sc_image_t scene = decode_or_die(scene_png), scene4k = decode_or_die(scene4k_png);
    sc_image_t prod = decode_or_die(prod_png);
    printf("# sc_bench simd=%s\n", sc_simd_name(sc_simd_level()));
    double sp = scene.width * scene.height / 1e6;
    int ph = (int)((double)prod.height * PROD_W / prod.width + 0.5);
    double rp = PROD_W * ph / 1e6;

    dec_ctx d1 = {scene_png}, d2 = {scene_jpg}, d3 = {prod_png};
    bench(&o, "decode_scene_png", st_decode, NULL, &d1, sp);
    bench(&o, "decode_scene_jpg", st_decode, NULL, &d2, sp);
    bench(&o, "decode_product_png", st_decode, NULL, &d3, prod.width * prod.height / 1e6);

    rs_ctx rs = {&prod, PROD_W, ph};
    bench(&o, "resize_product_lanczos", st_resize, NULL, &rs, rp);
    sc_image_t small;
    if (sc_resize_lanczos(&prod, PROD_W, ph, &small) != 0)
        die("resize");

    const sc_image_t *scenes[2] = {&scene, &scene4k};
    const char *names[2] = {"composite_paste", "composite_paste_4k"};
    for (int k = 0; k < 2; k++) {
        paste_ctx pc = {scenes[k], &small, SC_IMAGE_INIT, 0, 0};
        if (sc_image_alloc(&pc.work, scenes[k]->width, scenes[k]->height, 3) != 0)
            die("alloc");
        bottom_center(scenes[k]->width, scenes[k]->height, small.width, small.height, &pc.left,
                      &pc.top);
        bench(&o, names[k], st_paste, st_paste_setup, &pc, rp);
        sc_image_free(&pc.work);
    }

    /* the composited frame to encode, made by the server's composite */
    sc_image_t out;
    if (sc_image_alloc(&out, scene.width, scene.height, 3) != 0)
        die("alloc");
    memcpy(out.pixels, scene.pixels, (size_t)scene.width * scene.height * 3);
    sc_place_params_t params = params_for(&scene, &prod);
    const char *err = NULL;
    if (sc_place_composite(&out, &prod, &params, &err) != 0)
        die(err);
    enc_ctx ep = {&out, 0, 0}, ej = {&out, 1, 0};
    bench(&o, "encode_png_l6", st_encode, NULL, &ep, sp);
    bench(&o, "encode_jpeg_q90", st_encode, NULL, &ej, sp);

    e2e_ctx e1 = {scene_png, prod_png, 0, params, 0, NULL},
            e2 = {scene_jpg, prod_png, 1, params, 0, NULL};
    bench(&o, "end_to_end", st_e2e, NULL, &e1, sp);
    bench(&o, "end_to_end_jpeg", st_e2e, NULL, &e2, sp);
    printf("# scenecomp output sizes bytes: png_l6=%zu jpeg_q90=%zu\n", ep.last_len, ej.last_len);
    {
        sc_image_t sj = decode_or_die(scene_jpg);
        product_cache_stage(o.dir, &sj);
        sc_image_free(&sj);
    }

    if (extra) { /* the alternatives behind the design choices */
        e2e_ctx s1 = {scene_png, prod_png, 0, params, 0, NULL},
                s2 = {scene_jpg, prod_png, 1, params, 0, NULL};
        char tmpl[] = "/tmp/sc_bench.XXXXXX";
        e2e_ctx sv = {scene_png, prod_png, 0, params, 0, mkdtemp(tmpl)};
        if (!sv.save_dir)
            die("mkdtemp");
        bench(&o, "x_end_to_end_saved", st_e2e, NULL, &sv, sp);
        char saved[64];
        snprintf(saved, sizeof saved, "%s/0123456789abcdef0123456789abcdef.png", sv.save_dir);
        unlink(saved);
        rmdir(sv.save_dir);
        bench(&o, "x_end_to_end_serial", st_e2e_serial, NULL, &s1, sp);
        bench(&o, "x_end_to_end_jpeg_serial", st_e2e_serial, NULL, &s2, sp);
        s1.png_level = 6;
        bench(&o, "x_end_to_end_serial_libdeflate6", st_e2e_serial, NULL, &s1, sp);
        alt_ctx a6 = {&out, 6, 0}, a1 = {&out, 1, 0}, st = {&out, 0, 0}, a0 = {&out, 0, 0};
        bench(&o, "x_encode_png_1thread", st_png_1thread, NULL, &a0, sp);
        bench(&o, "x_encode_png_libdeflate_l6", st_png_level, NULL, &a6, sp);
        bench(&o, "x_encode_png_libdeflate_l1", st_png_level, NULL, &a1, sp);
        alt_ctx b6 = {&out, 6, 0};
        bench(&o, "x_encode_png_libdeflate_l6_4bands_2threads", st_png_level_bands, NULL, &b6, sp);
        bench(&o, "x_encode_png_stbiw_libdeflate6", st_png_stbiw, NULL, &st, sp);
        bench(&o, "x_decode_scene_jpg_stb", st_decode_stb, NULL, &d2, sp);
        bench(&o, "x_decode_scene_png_stb", st_decode_stb, NULL, &d1, sp);
        printf("# alternative sizes bytes: libdeflate_l6=%zu libdeflate_l1=%zu "
               "stbiw_libdeflate6=%zu libdeflate_l6_4bands=%zu\n",
               a6.last_len, a1.last_len, st.last_len, b6.last_len);
    }

    sc_image_free(&out);
    sc_image_free(&small);
    sc_image_free(&prod);
    sc_image_free(&scene);
    sc_image_free(&scene4k);
    free(scene_png.data);
    free(scene_jpg.data);
    free(scene4k_png.data);
    free(prod_png.data);
    return 0;
}
