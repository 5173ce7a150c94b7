/* Idempotency-Key checks and request fingerprints (see idempotency.h). */
#include "records/idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

typedef struct part {
    char *name;
    unsigned char digest[32];
} part_t;

struct sc_idempotency_fp {
    char *route;
    part_t parts[SC_IDEMPOTENCY_PARTS_MAX];
    size_t n;
};

bool sc_idempotency_key_valid(const char *key, size_t len)
{
    if (!key || len == 0 || len > SC_IDEMPOTENCY_KEY_MAX || key[0] == ' ' || key[len - 1] == ' ')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e)
            return false;
    return true;
}

sc_idempotency_fp_t *sc_idempotency_fp_new(const char *route)
{
    sc_idempotency_fp_t *fp = calloc(1, sizeof *fp);
    if (!fp || !(fp->route = strdup(route ? route : ""))) {
        free(fp);
        return NULL;
    }
    return fp;
}

int sc_idempotency_fp_add(sc_idempotency_fp_t *fp, const char *name, const void *data, size_t len)
{
    if (fp->n >= SC_IDEMPOTENCY_PARTS_MAX)
        return -1;
    part_t *p = &fp->parts[fp->n];
    unsigned int dlen = 0;
    if (!(p->name = strdup(name ? name : "")))
        return -1;
    if (!EVP_Digest(data ? data : "", len, p->digest, &dlen, EVP_sha256(), NULL) || dlen != 32) {
        free(p->name);
        p->name = NULL;
        return -1;
    }
    fp->n++;
    return 0;
}

static int cmp_part(const void *a, const void *b)
{
    const part_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : memcmp(x->digest, y->digest, sizeof x->digest);
}

int sc_idempotency_fp_final(sc_idempotency_fp_t *fp, char out[SC_IDEMPOTENCY_FP_LEN + 1])
{
    int rc = -1;
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    qsort(fp->parts, fp->n, sizeof *fp->parts, cmp_part);
    /* route NUL (name NUL digest)*: names cannot contain NUL, so parts cannot
     * run into each other. */
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, fp->route, strlen(fp->route) + 1))
        goto out;
    for (size_t i = 0; i < fp->n; i++)
        if (!EVP_DigestUpdate(ctx, fp->parts[i].name, strlen(fp->parts[i].name) + 1) ||
            !EVP_DigestUpdate(ctx, fp->parts[i].digest, sizeof fp->parts[i].digest))
            goto out;
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32)
        goto out;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

void sc_idempotency_fp_free(sc_idempotency_fp_t *fp)
{
    if (!fp)
        return;
    for (size_t i = 0; i < fp->n; i++)
        free(fp->parts[i].name);
    free(fp->route);
    free(fp);
}

int sc_idempotency_fp_json(const char *route, const char *body, size_t len,
                           char out[SC_IDEMPOTENCY_FP_LEN + 1])
{
    int rc = -1;
    sc_idempotency_fp_t *fp = sc_idempotency_fp_new(route);
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!fp)
        goto out;
    if (!cJSON_IsObject(o) || cJSON_GetArraySize(o) > SC_IDEMPOTENCY_PARTS_MAX) {
        if (sc_idempotency_fp_add(fp, "", body, len) != 0)
            goto out;
    } else {
        const cJSON *m;
        cJSON_ArrayForEach(m, o)
        {
            char *v = cJSON_PrintUnformatted(m);
            int r = v ? sc_idempotency_fp_add(fp, m->string, v, strlen(v)) : -1;
            cJSON_free(v);
            if (r != 0)
                goto out;
        }
    }
    rc = sc_idempotency_fp_final(fp, out);
out:
    cJSON_Delete(o);
    sc_idempotency_fp_free(fp);
    return rc;
}
