/* Idempotency keys: header validation and request fingerprints (order of
 * fields irrelevant, any other value or file relevant, an independent SHA-256
 * for the empty request). */
#include <stdio.h>
#include <string.h>

#include "records/idempotency.h"
#include "test.h"

static void fp_of(const char *route, const char *const *parts, size_t n, char out[65])
{
    sc_idempotency_fp_t *fp = sc_idempotency_fp_new(route);
    for (size_t i = 0; i + 1 < n; i += 2)
        CHECK(sc_idempotency_fp_add(fp, parts[i], parts[i + 1], strlen(parts[i + 1])) == 0);
    CHECK(sc_idempotency_fp_final(fp, out) == 0);
    sc_idempotency_fp_free(fp);
}

int main(void)
{
    CHECK(sc_idempotency_key_valid("a", 1));
    CHECK(sc_idempotency_key_valid("3f1c0a9e-5b7d-4c2a-8e6f-1b0d9c8a7e6f", 36));
    CHECK(sc_idempotency_key_valid("with inner space", 16));
    char k[300];
    memset(k, 'k', sizeof k);
    CHECK(sc_idempotency_key_valid(k, 255));
    CHECK(!sc_idempotency_key_valid(k, 256));
    CHECK(!sc_idempotency_key_valid("", 0));
    CHECK(!sc_idempotency_key_valid("a\nb", 3));
    CHECK(!sc_idempotency_key_valid("a\tb", 3));
    CHECK(!sc_idempotency_key_valid("caf\xc3\xa9", 5));
    CHECK(!sc_idempotency_key_valid(" lead", 5));
    CHECK(!sc_idempotency_key_valid("trail ", 6));
    CHECK(!sc_idempotency_key_valid("nul\0x", 5));

    char a[65], b[65], c[65], d[65], e[65];
    const char *p1[] = {"scene", "SCENEBYTES", "product", "PRODUCTBYTES", "x", "0.5"};
    const char *p2[] = {"x", "0.5", "product", "PRODUCTBYTES", "scene", "SCENEBYTES"};
    const char *p3[] = {"scene", "SCENEBYTES", "product", "PRODUCTBYTES", "x", "0.6"};
    const char *p4[] = {"scene", "PRODUCTBYTES", "product", "SCENEBYTES", "x", "0.5"};
    fp_of("POST /api/composite", p1, 6, a);
    fp_of("POST /api/composite", p2, 6, b);
    fp_of("POST /api/composite", p3, 6, c);
    fp_of("POST /api/composite", p4, 6, d);
    fp_of("POST /api/scenes", p1, 6, e);
    CHECK_EQ_INT(strlen(a), 64);
    CHECK_STR(a, b);          /* field order does not matter */
    CHECK(strcmp(a, c) != 0); /* another value does */
    CHECK(strcmp(a, d) != 0); /* swapped files do */
    CHECK(strcmp(a, e) != 0); /* another route does */

    /* No parts, empty route: SHA-256 of the single byte 0x00, a known value. */
    sc_idempotency_fp_t *fp = sc_idempotency_fp_new("");
    CHECK(sc_idempotency_fp_final(fp, a) == 0);
    CHECK_STR(a, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    for (int i = 0; i < 64; i++)
        CHECK(sc_idempotency_fp_add(fp, "f", "v", 1) == 0);
    CHECK(sc_idempotency_fp_add(fp, "f", "v", 1) == -1); /* bounded */
    sc_idempotency_fp_free(fp);

    /* JSON bodies: key order and spacing do not matter, values do. */
    const char *j1 = "{\"prompt\":\"a kitchen\",\"aspect_ratio\":\"16:9\",\"seed\":1}";
    const char *j2 = "{ \"seed\": 1, \"aspect_ratio\": \"16:9\", \"prompt\": \"a kitchen\" }";
    const char *j3 = "{\"prompt\":\"a kitchen\",\"aspect_ratio\":\"16:9\",\"seed\":2}";
    CHECK(sc_idempotency_fp_json("POST /api/scenes", j1, strlen(j1), a) == 0);
    CHECK(sc_idempotency_fp_json("POST /api/scenes", j2, strlen(j2), b) == 0);
    CHECK(sc_idempotency_fp_json("POST /api/scenes", j3, strlen(j3), c) == 0);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0);
    CHECK(sc_idempotency_fp_json("POST /api/scenes", "not json", 8, d) == 0);
    CHECK(sc_idempotency_fp_json("POST /api/scenes", "not json!", 9, e) == 0);
    CHECK(strcmp(d, e) != 0);
    return test_report("records_idempotency_test");
}
