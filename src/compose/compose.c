/* The compose layer (compose.h). */
#include "compose/compose.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/ids.h"
#include "image/check.h"

int sc_compose_parse_number(const char *s, double *out)
{
    /* strtod alone accepts " 1", "0x1p-1", "inf" and "nan"; a client sending
     * any of those made a mistake, so only plain decimals pass. */
    if (!s || !*s)
        return -1;
    for (const char *c = s; *c; c++) {
        if (!strchr("0123456789+-.eE", *c))
            return -1;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int sc_compose_check_params(const sc_place_params_t *p, char *err, size_t errlen)
{
    if (!(p->x >= 0.0 && p->x <= 1.0)) {
        snprintf(err, errlen, "field 'x' must be a number between 0 and 1");
        return -1;
    }
    if (!(p->y >= 0.0 && p->y <= 1.0)) {
        snprintf(err, errlen, "field 'y' must be a number between 0 and 1");
        return -1;
    }
    if (!(p->scale > 0.0 && p->scale <= 4.0)) {
        snprintf(err, errlen, "field 'scale' must be a number greater than 0 and at most 4");
        return -1;
    }
    return 0;
}

static int refuse(sc_compose_refusal_t *why, const char *field, sc_codec_status_t st,
                  long long max_pixels)
{
    why->field = field;
    why->status = st;
    if (st == SC_CODEC_TOO_LARGE)
        snprintf(why->message, sizeof why->message, "field '%s' has more than %lld pixels", field,
                 max_pixels);
    else if (st == SC_CODEC_NOMEM)
        snprintf(why->message, sizeof why->message, "out of memory decoding field '%s'", field);
    else
        snprintf(why->message, sizeof why->message, "field '%s' is not a valid PNG or JPEG image",
                 field);
    return -1;
}

int sc_compose_probe(const uint8_t *scene, size_t scene_len, const uint8_t *product,
                     size_t product_len, long long max_pixels, const sc_place_params_t *p,
                     sc_compose_probe_t *out, sc_compose_refusal_t *why)
{
    const char *err = NULL;
    memset(out, 0, sizeof *out);
    sc_codec_status_t st = sc_codec_probe(scene, scene_len, max_pixels, &out->scene);
    if (st != SC_CODEC_OK)
        return refuse(why, "scene", st, max_pixels);
    st = sc_codec_probe(product, product_len, max_pixels, &out->product);
    if (st != SC_CODEC_OK)
        return refuse(why, "product", st, max_pixels);
    const sc_image_info_t *si = &out->scene, *pi = &out->product;
    if (sc_place_check(si->width, si->height, pi->width, pi->height, p, &err) != 0) {
        why->field = "product";
        why->status = SC_CODEC_TOO_LARGE;
        snprintf(why->message, sizeof why->message, "field 'product' (%dx%d on a %dx%d scene): %s",
                 pi->width, pi->height, si->width, si->height, err ? err : "cannot be placed");
        return -1;
    }
    sc_check_info_t ck;
    if (sc_check_image(scene, scene_len, &ck) != SC_CODEC_OK)
        return refuse(why, "scene", SC_CODEC_INVALID, max_pixels);
    out->scene_alpha = ck.alpha;
    if (sc_check_image(product, product_len, &ck) != SC_CODEC_OK)
        return refuse(why, "product", SC_CODEC_INVALID, max_pixels);
    out->product_alpha = ck.alpha;
    return 0;
}

int sc_compose_decode(const uint8_t *scene, size_t scene_len, const uint8_t *product,
                      size_t product_len, long long max_pixels, const sc_place_params_t *p,
                      sc_image_t *scene_out, sc_image_t *product_out, sc_compose_refusal_t *why)
{
    const char *err = NULL;
    sc_image_t empty = SC_IMAGE_INIT;
    *scene_out = *product_out = empty;
    sc_compose_probe_t pr;
    if (sc_compose_probe(scene, scene_len, product, product_len, max_pixels, p, &pr, why) != 0)
        return -1;
    sc_codec_status_t st = sc_codec_decode(scene, scene_len, max_pixels, scene_out, &err);
    if (st != SC_CODEC_OK)
        return refuse(why, "scene", st, max_pixels);
    st = sc_codec_decode(product, product_len, max_pixels, product_out, &err);
    if (st != SC_CODEC_OK) {
        sc_image_free(scene_out);
        return refuse(why, "product", st, max_pixels);
    }
    return 0;
}

int sc_compose_parse_quality(const char *s, int *out)
{
    if (!s || !*s || strlen(s) > 3)
        return -1;
    int v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        v = v * 10 + (*c - '0');
    }
    if (v < 1 || v > 100)
        return -1;
    *out = v;
    return 0;
}

int sc_compose_pil(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                   sc_image_format_t fmt, uint8_t **out, size_t *out_len, const char **err)
{
    return sc_compose_pil_opts(scene, product, p, fmt, NULL, out, out_len, NULL, err);
}

int sc_compose_pil_opts(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                        sc_image_format_t fmt, const sc_compose_opts_t *opts, uint8_t **out,
                        size_t *out_len, sc_keying_t *keying, const char **err)
{
    *out = NULL;
    *out_len = 0;
    if (!sc_format_get(fmt)) {
        *err = "unknown output format";
        return -1;
    }
    int quality = opts ? opts->quality : 0;
    if (quality < 0 || quality > 100) {
        *err = "quality must be between 1 and 100";
        return -1;
    }
    if (sc_place_composite_opts(scene, product, p, opts ? &opts->place : NULL, keying, err) != 0)
        return -1;
    if (sc_format_encode_icc(fmt, scene, quality, opts ? opts->icc : NULL, opts ? opts->icc_len : 0,
                             out, out_len) != 0) {
        *err = "cannot encode the composite (out of memory)";
        return -1;
    }
    return 0;
}

/* OUTPUT_DIR/<id>.<ext>. No mkdir: the directory exists from start-up, and
 * a save that finds it gone creates it (sc_compose_save, the committer).
 * 0 or -1 with errno. */
static int output_path(const char *dir, const char *id, sc_image_format_t fmt, char *path,
                       size_t cap)
{
    const char *ext = sc_format_ext(fmt);
    if (!ext || !sc_id_valid(id, strlen(id))) {
        errno = EINVAL;
        return -1;
    }
    int n = snprintf(path, cap, "%s/%s.%s", dir, id, ext);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

int sc_compose_save(const char *dir, const char *id, sc_image_format_t fmt, const void *data,
                    size_t len)
{
    char path[2048];
    if (output_path(dir, id, fmt, path, sizeof path) != 0)
        return -1;
    if (sc_fs_write_atomic(path, data, len) == 0)
        return 0;
    if (errno != ENOENT || sc_fs_mkdirs(dir) != 0)
        return -1;
    return sc_fs_write_atomic(path, data, len); /* the directory was removed */
}

int sc_compose_save_queued(sc_durable_t *d, const char *dir, const char *id, sc_image_format_t fmt,
                           const void *data, size_t len, sc_durable_done_fn done, void *ud)
{
    char path[2048];
    if (output_path(dir, id, fmt, path, sizeof path) != 0)
        return -1;
    if (sc_durable_write(d, path, data, len, done, ud) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}
