/* Model inputs: the JSON shape of both models, data URIs that decode back to an
 * image of the expected (downscaled) size and format, and base64 round trips
 * including the decoder's error paths. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "replicate/base64.h"
#include "replicate/inputs.h"
#include "test.h"

static void fill(sc_image_t *img, int w, int h, int ch)
{
    sc_image_alloc(img, w, h, ch);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->pixels + ((size_t)y * w + x) * ch;
            p[0] = (uint8_t)x;
            p[1] = (uint8_t)y;
            p[2] = (uint8_t)(x ^ y);
            if (ch == 4)
                p[3] = (uint8_t)(x < w / 2 ? 0 : 255);
        }
}

/* Decodes a data URI with the given mime prefix and probes the image inside. */
static int probe_uri(const char *uri, const char *prefix, sc_image_info_t *info)
{
    if (!uri || strncmp(uri, prefix, strlen(prefix)) != 0)
        return -1;
    const char *b = uri + strlen(prefix);
    uint8_t *raw;
    size_t len;
    if (sc_base64_decode(b, strlen(b), &raw, &len) != 0)
        return -1;
    int rc = sc_codec_probe(raw, len, 0, info) == SC_CODEC_OK ? 0 : -1;
    free(raw);
    return rc;
}

static const char *str(const cJSON *o, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static void test_kontext_shape_and_downscale(void)
{
    sc_image_t scene, product;
    fill(&scene, 2000, 1000, 3); /* long side over 1024: downscaled to 1024x512 */
    fill(&product, 300, 600, 4); /* small: kept as is */
    char *json = NULL;
    CHECK_EQ_INT(sc_inputs_kontext(&scene, &product, "put the lamp on the desk", &json), 0);
    cJSON *o = cJSON_Parse(json);
    CHECK(cJSON_IsObject(o));
    CHECK_STR(str(o, "prompt"), "put the lamp on the desk");
    CHECK_STR(str(o, "aspect_ratio"), "match_input_image");
    CHECK_STR(str(o, "output_format"), "png");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "safety_tolerance");
    CHECK(cJSON_IsNumber(st) && st->valueint == 2);
    CHECK_EQ_INT(cJSON_GetArraySize(o), 6);

    sc_image_info_t info;
    CHECK_EQ_INT(probe_uri(str(o, "input_image_1"), "data:image/jpeg;base64,", &info), 0);
    CHECK_EQ_INT(info.format, SC_FMT_JPEG);
    CHECK_EQ_INT(info.width, 1024);
    CHECK_EQ_INT(info.height, 512);
    CHECK_EQ_INT(probe_uri(str(o, "input_image_2"), "data:image/png;base64,", &info), 0);
    CHECK_EQ_INT(info.format, SC_FMT_PNG);
    CHECK_EQ_INT(info.width, 300);
    CHECK_EQ_INT(info.height, 600);
    CHECK_EQ_INT(info.channels, 4); /* the product keeps its alpha */
    cJSON_Delete(o);
    free(json);

    /* portrait over the limit, default prompt for NULL and "" */
    sc_image_t tall;
    fill(&tall, 700, 3001, 4);
    CHECK_EQ_INT(sc_inputs_kontext(&scene, &tall, NULL, &json), 0);
    o = cJSON_Parse(json);
    CHECK(str(o, "prompt") && strstr(str(o, "prompt"), "second image") != NULL);
    CHECK_EQ_INT(probe_uri(str(o, "input_image_2"), "data:image/png;base64,", &info), 0);
    CHECK_EQ_INT(info.height, 1024);
    CHECK_EQ_INT(info.width, 239); /* round(700 * 1024 / 3001) */
    cJSON_Delete(o);
    free(json);
    CHECK_EQ_INT(sc_inputs_kontext(&scene, &tall, "", &json), 0);
    o = cJSON_Parse(json);
    CHECK(str(o, "prompt") && strlen(str(o, "prompt")) > 20);
    cJSON_Delete(o);
    free(json);

    /* an empty image is refused, *json stays NULL */
    sc_image_t empty = SC_IMAGE_INIT;
    json = (char *)"sentinel";
    CHECK_EQ_INT(sc_inputs_kontext(&scene, &empty, "x", &json), -1);
    CHECK(json == NULL);

    sc_image_free(&scene);
    sc_image_free(&product);
    sc_image_free(&tall);
}

static void test_scene_shape(void)
{
    char *json = NULL;
    CHECK_EQ_INT(sc_inputs_scene("a \"quoted\" lighthouse", "16:9", 1, 9007199254740993LL, &json),
                 0);
    cJSON *o = cJSON_Parse(json);
    CHECK_STR(str(o, "prompt"), "a \"quoted\" lighthouse");
    CHECK_STR(str(o, "aspect_ratio"), "16:9");
    CHECK_STR(str(o, "output_format"), "png");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "go_fast")));
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "num_outputs");
    CHECK(cJSON_IsNumber(n) && n->valueint == 1);
    /* the seed is written exactly, even above 2^53 */
    CHECK(strstr(json, "\"seed\":9007199254740993") != NULL);
    cJSON_Delete(o);
    free(json);

    CHECK_EQ_INT(sc_inputs_scene("p", NULL, 0, 0, &json), 0);
    o = cJSON_Parse(json);
    CHECK(cJSON_GetObjectItemCaseSensitive(o, "seed") == NULL);
    CHECK_STR(str(o, "aspect_ratio"), "1:1");
    cJSON_Delete(o);
    free(json);
    CHECK_EQ_INT(sc_inputs_scene(NULL, "1:1", 0, 0, &json), -1);
}

static void test_base64(void)
{
    /* RFC 4648 §10 vectors */
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char out[16];
        size_t n = sc_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        CHECK_EQ_INT(n, sc_base64_encoded_len(strlen(plain[i])));
        CHECK_STR(out, enc[i]);
        uint8_t *d;
        size_t dl;
        CHECK_EQ_INT(sc_base64_decode(enc[i], strlen(enc[i]), &d, &dl), 0);
        CHECK(dl == strlen(plain[i]) && memcmp(d, plain[i], dl) == 0);
        free(d);
    }
    uint8_t *d = (uint8_t *)"x";
    size_t dl;
    CHECK_EQ_INT(sc_base64_decode("Zm9v\r\nYmFy", 10, &d, &dl), 0); /* whitespace skipped */
    CHECK(dl == 6 && memcmp(d, "foobar", 6) == 0);
    free(d);
    CHECK_EQ_INT(sc_base64_decode("Zm9vYg", 6, &d, &dl), 0); /* padding optional */
    CHECK(dl == 4);
    free(d);
    CHECK_EQ_INT(sc_base64_decode("Zm9v!", 5, &d, &dl), -1);
    CHECK(d == NULL);
    CHECK_EQ_INT(sc_base64_decode("Z", 1, &d, &dl), -1);
    CHECK_EQ_INT(sc_base64_decode("Zg==Zg==", 8, &d, &dl), -1);
    CHECK_EQ_INT(sc_base64_decode("=Zg=", 4, &d, &dl), -1);
    /* every byte value survives a round trip */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char buf[400];
    sc_base64_encode(all, 256, buf);
    CHECK_EQ_INT(sc_base64_decode(buf, strlen(buf), &d, &dl), 0);
    CHECK(dl == 256 && memcmp(d, all, 256) == 0);
    free(d);
}

/* issue 11: sc_inputs_kontext_files sends an upload as it came when the rule
 * lets it (inputs.h), and decodes + downscales + re-encodes otherwise. */
static void test_kontext_files(void)
{
    sc_image_t scene, product, big;
    fill(&scene, 320, 200, 3);
    fill(&product, 100, 80, 4);
    fill(&big, SC_INPUTS_PASS_MAX_SIDE + 100, 60, 3);
    uint8_t *sj = NULL, *pp = NULL, *bj = NULL;
    size_t sl = 0, pl = 0, bl = 0;
    CHECK_EQ_INT(sc_codec_encode_jpeg(&scene, 80, &sj, &sl), 0);
    CHECK_EQ_INT(sc_codec_encode_png(&product, &pp, &pl), 0);
    CHECK_EQ_INT(sc_codec_encode_jpeg(&big, 80, &bj, &bl), 0);
    sc_inputs_file_t fs = {sj, sl, SC_FMT_JPEG, 320, 200, 1, -1};
    sc_inputs_file_t fp = {pp, pl, SC_FMT_PNG, 100, 80, 1, -1};
    sc_inputs_file_t fb = {bj, bl, SC_FMT_JPEG, SC_INPUTS_PASS_MAX_SIDE + 100, 60, 1, -1};
    CHECK(sc_inputs_passes(&fs));
    CHECK(!sc_inputs_passes(&fb));
    sc_inputs_file_t rot = fs;
    rot.orientation = 6;
    CHECK(!sc_inputs_passes(&rot));
    char *json = NULL;
    CHECK_EQ_INT(sc_inputs_kontext_files(&fs, &fp, NULL, "jpg", 0, 5.0, &json), 0);
    cJSON *o = cJSON_Parse(json);
    CHECK_STR(str(o, "output_format"), "jpg");
    /* the bytes themselves, not a re-encode */
    const char *u1 = str(o, "input_image_1"), *u2 = str(o, "input_image_2");
    const char *p1 = "data:image/jpeg;base64,", *p2 = "data:image/png;base64,";
    uint8_t *raw = NULL;
    size_t rl = 0;
    CHECK(u1 && strncmp(u1, p1, strlen(p1)) == 0);
    if (u1 && sc_base64_decode(u1 + strlen(p1), strlen(u1 + strlen(p1)), &raw, &rl) == 0) {
        CHECK(rl == sl && memcmp(raw, sj, sl) == 0);
        free(raw);
    }
    CHECK(u2 && strncmp(u2, p2, strlen(p2)) == 0);
    if (u2 && sc_base64_decode(u2 + strlen(p2), strlen(u2 + strlen(p2)), &raw, &rl) == 0) {
        CHECK(rl == pl && memcmp(raw, pp, pl) == 0);
        free(raw);
    }
    cJSON_Delete(o);
    free(json);
    /* over SC_INPUTS_PASS_MAX_SIDE: decoded, downscaled to SC_INPUTS_MAX_SIDE, re-encoded */
    CHECK_EQ_INT(sc_inputs_kontext_files(&fb, &fp, NULL, "png", 0, 5.0, &json), 0);
    o = cJSON_Parse(json);
    CHECK_STR(str(o, "output_format"), "png");
    sc_image_info_t info;
    CHECK_EQ_INT(probe_uri(str(o, "input_image_1"), p1, &info), 0);
    CHECK_EQ_INT(info.width, SC_INPUTS_MAX_SIDE);
    cJSON_Delete(o);
    free(json);
    /* bytes that do not decode cannot be re-encoded */
    sc_inputs_file_t junk = {(const uint8_t *)"junk", 4, SC_FMT_JPEG, 3000, 10, 1, -1};
    CHECK_EQ_INT(sc_inputs_kontext_files(&junk, &fp, NULL, "png", 0, 5.0, &json), -1);
    free(sj);
    free(pp);
    free(bj);
    sc_image_free(&scene);
    sc_image_free(&product);
    sc_image_free(&big);
}

/* What kontext_json produced before the direct writer: the same object
 * through cJSON_PrintUnformatted (the reference the writer must match). */
static char *cjson_kontext(const char *scene, const char *product, const char *prompt,
                           const char *output_format)
{
    static const char k_default[] =
        "Place the product from the second image naturally into the scene of the first image, "
        "keeping the scene unchanged";
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", prompt && *prompt ? prompt : k_default);
    cJSON_AddStringToObject(o, "input_image_1", scene);
    cJSON_AddStringToObject(o, "input_image_2", product);
    cJSON_AddStringToObject(o, "aspect_ratio", "match_input_image");
    cJSON_AddStringToObject(o, "output_format", output_format ? output_format : "png");
    cJSON_AddNumberToObject(o, "safety_tolerance", 2);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

/* The writer's output parses to the expected object, keys in order. */
static void check_kontext_object(const char *json, const char *scene, const char *product,
                                 const char *prompt, const char *output_format)
{
    static const char *const keys[] = {"prompt",       "input_image_1", "input_image_2",
                                       "aspect_ratio", "output_format", "safety_tolerance"};
    cJSON *o = cJSON_Parse(json);
    CHECK(cJSON_IsObject(o));
    CHECK_EQ_INT(cJSON_GetArraySize(o), 6);
    int k = 0;
    for (const cJSON *c = o ? o->child : NULL; c && k < 6; c = c->next, k++)
        CHECK_STR(c->string, keys[k]);
    if (prompt && *prompt)
        CHECK_STR(str(o, "prompt"), prompt);
    else
        CHECK(str(o, "prompt") && strstr(str(o, "prompt"), "second image") != NULL);
    CHECK_STR(str(o, "input_image_1"), scene);
    CHECK_STR(str(o, "input_image_2"), product);
    CHECK_STR(str(o, "aspect_ratio"), "match_input_image");
    CHECK_STR(str(o, "output_format"), output_format ? output_format : "png");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "safety_tolerance");
    CHECK(cJSON_IsNumber(st) && st->valuedouble == 2);
    cJSON_Delete(o);
}

static void test_kontext_json_writer(void)
{
    const char *scene = "data:image/jpeg;base64,/9j/4AAQSkZJRg+/==";
    const char *product = "https://api.replicate.com/v1/files/abc/download?expiry=1&sig=x%2By";
    /* prompts cJSON printed byte for byte the same way */
    static const char *const same[] = {
        "put the \"lamp\" on the desk",
        "a back\\slash, a \\\" pair and a trailing \\",
        "two\nlines\r\nand\ta tab",
        "controls \x01\x02\x1f and DEL \x7f",
        "caf\xc3\xa9 \xe2\x82\xac \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
        "invalid UTF-8 goes as it is: \xff\xfe \xc3 \xed\xa0\x80",
        "x",
        "",
        NULL,
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char *json = NULL, *ref = cjson_kontext(scene, product, same[i], "jpg");
        CHECK_EQ_INT(sc_inputs_kontext_json(scene, product, same[i], "jpg", &json), 0);
        CHECK_STR(json, ref);
        check_kontext_object(json, scene, product, same[i], "jpg");
        free(json);
        free(ref);
    }
    /* \b and \f: \u0008 / \u000c here, \b / \f from cJSON, the same string */
    char *json = NULL;
    CHECK_EQ_INT(sc_inputs_kontext_json(scene, product, "bs\b ff\f", NULL, &json), 0);
    CHECK(json && strstr(json, "\"bs\\u0008 ff\\u000c\"") != NULL);
    check_kontext_object(json, scene, product, "bs\b ff\f", NULL);
    free(json);
    /* image strings are escaped too, should one ever need it */
    const char *odd = "data:x;\"q\"\\\n\x01";
    CHECK_EQ_INT(sc_inputs_kontext_json(odd, odd, "p", "png", &json), 0);
    check_kontext_object(json, odd, odd, "p", "png");
    free(json);
    /* a missing image string is refused */
    json = (char *)"sentinel";
    CHECK_EQ_INT(sc_inputs_kontext_json(NULL, product, "p", "png", &json), -1);
    CHECK(json == NULL);

    /* data URIs of ~340 KB and ~300 KB: byte for byte cJSON's */
    size_t sizes[2] = {255000, 225000};
    char *uri[2];
    for (int k = 0; k < 2; k++) {
        uint8_t *raw = malloc(sizes[k]);
        uint32_t x = 2463534242u + (uint32_t)k;
        for (size_t i = 0; i < sizes[k]; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            raw[i] = (uint8_t)x;
        }
        const char *prefix = k ? "data:image/png;base64," : "data:image/jpeg;base64,";
        uri[k] = malloc(strlen(prefix) + sc_base64_encoded_len(sizes[k]) + 1);
        strcpy(uri[k], prefix);
        sc_base64_encode(raw, sizes[k], uri[k] + strlen(prefix));
        free(raw);
    }
    char *ref = cjson_kontext(uri[0], uri[1], "a \"big\" one", "png");
    CHECK_EQ_INT(sc_inputs_kontext_json(uri[0], uri[1], "a \"big\" one", "png", &json), 0);
    CHECK(json && ref && strlen(json) == strlen(ref) && strcmp(json, ref) == 0);
    free(json);
    free(ref);
    free(uri[0]);
    free(uri[1]);

    /* random strings over the bytes near the escape rules, at every offset of
     * the 8-byte scan: byte for byte cJSON's (\b and \f left out) */
    static const unsigned char alphabet[] = {0x01, 0x09, 0x0a, 0x0d, 0x1f, ' ',  '!',  '"',  '#',
                                             '[',  '\\', ']',  'a',  0x7f, 0x80, 0xa2, 0xdc, 0xff};
    uint32_t x = 12345;
    int mismatches = 0;
    for (int n = 0; n < 3000; n++) {
        char s[48];
        size_t len = (size_t)(n % 40);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            /* mostly plain bytes, so runs of 8+ happen */
            s[i] = (x >> 16) % 4 ? 'A' + (char)((x >> 20) % 26)
                                 : (char)alphabet[(x >> 8) % sizeof alphabet];
        }
        s[len] = '\0';
        char *a = NULL, *r = cjson_kontext(s, "p", s, NULL);
        if (sc_inputs_kontext_json(s, "p", s, NULL, &a) != 0 || !r || strcmp(a, r) != 0)
            mismatches++;
        free(a);
        free(r);
    }
    CHECK_EQ_INT(mismatches, 0);
}

int main(void)
{
    test_kontext_json_writer();
    test_kontext_files();
    test_kontext_shape_and_downscale();
    test_scene_shape();
    test_base64();
    return test_report("replicate_inputs_test");
}
