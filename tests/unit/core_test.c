/* Unit tests for src/core: buffer, JSON escaping, ids, config parsing, atomic writes. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/ids.h"
#include "test.h"

static void test_buf(void)
{
    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_buf_json_str(&b, "a\"b\\c\n\x01") == 0);
    CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    /* the sized pair behind it: runs copied whole, escapes between, no NUL written */
    const char *s = "0123456789\"abcdefgh\b\xc3\xa9";
    char out[64];
    memset(out, '#', sizeof out);
    size_t n = sc_buf_json_str_len(s, strlen(s));
    CHECK_EQ_INT(n, 30);
    CHECK(sc_buf_json_str_write(out, s, strlen(s), n) == out + n);
    CHECK(memcmp(out, "\"0123456789\\\"abcdefgh\\u0008\xc3\xa9\"#", n + 1) == 0);
    /* nothing to escape (len n + 2): copied whole */
    s = "data:image/png;base64,iVBORw0KGgo+/=";
    memset(out, '#', sizeof out);
    n = sc_buf_json_str_len(s, strlen(s));
    CHECK_EQ_INT(n, strlen(s) + 2);
    CHECK(sc_buf_json_str_write(out, s, strlen(s), n) == out + n);
    CHECK(memcmp(out, "\"data:image/png;base64,iVBORw0KGgo+/=\"#", n + 1) == 0);
    sc_buf_reset(&b);
    sc_buf_json_num(&b, 0.0 / 0.0);
    CHECK_STR(b.data, "null");
    sc_buf_reset(&b);
    sc_buf_json_num(&b, 42);
    CHECK_STR(b.data, "42");
    sc_buf_free(&b);
}

static void test_ids(void)
{
    char a[SC_ID_LEN + 1], c[SC_ID_LEN + 1];
    sc_id_new(a);
    sc_id_new(c);
    CHECK(sc_id_valid(a, strlen(a)));
    CHECK(strcmp(a, c) != 0);
    CHECK(!sc_id_valid("../../etc/passwd", 16));
    CHECK(!sc_id_valid("0123456789abcdef0123456789ABCDEF", 32));
}

static void test_config(void)
{
    sc_config_t c;
    char err[256];
    const char *path = "build/test-dotenv.env";
    sc_fs_mkdirs("build");
    const char *text = "# comment\nexport PORT=9001\nUSE_KONTEXT_COMPOSITE=true\n"
                       "KONTEXT_MODEL_ID=\"a/b\"\nMAX_CONCURRENT_KONTEXT=7 # inline\n";
    CHECK(sc_fs_write_atomic(path, text, strlen(text)) == 0);
    unsetenv("PORT");
    setenv("MAX_CONCURRENT_KONTEXT", "3", 1); /* real env wins over .env */
    CHECK(sc_config_load(&c, path, err, sizeof err) == 0);
    CHECK_EQ_INT(c.port, 9001);
    CHECK(c.use_kontext);
    CHECK_STR(c.kontext_model_id, "a/b");
    CHECK_EQ_INT(c.max_concurrent_kontext, 3);
    CHECK_EQ_INT(c.kontext_daily_limit, 500);

    setenv("MAX_CONCURRENT_KONTEXT", "abc", 1);
    CHECK(sc_config_load(&c, path, err, sizeof err) == -1);
    CHECK(strstr(err, "MAX_CONCURRENT_KONTEXT") != NULL);
    setenv("MAX_CONCURRENT_KONTEXT", "5", 1);
    setenv("USE_KONTEXT_COMPOSITE", "maybe", 1);
    CHECK(sc_config_load(&c, path, err, sizeof err) == -1);
    CHECK(strstr(err, "USE_KONTEXT_COMPOSITE") != NULL);
    unsetenv("USE_KONTEXT_COMPOSITE");
    setenv("KONTEXT_TIMEOUT_SECONDS", "1e400", 1);
    CHECK(sc_config_load(&c, path, err, sizeof err) == -1);
    unsetenv("KONTEXT_TIMEOUT_SECONDS");
    unsetenv("MAX_CONCURRENT_KONTEXT");
    unlink(path);
}

static void test_fs(void)
{
    char *data;
    size_t len;
    const char *path = "build/test-atomic.txt";
    CHECK(sc_fs_write_atomic(path, "hello", 5) == 0);
    CHECK(sc_fs_read_file(path, 100, &data, &len) == 0);
    CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    CHECK(sc_fs_read_file(path, 2, &data, &len) == -2);
    unlink(path);
}

static void test_clock(void)
{
    char d[11];
    sc_clock_utc_date(0, d);
    CHECK_STR(d, "1970-01-01");
    CHECK_EQ_INT(sc_clock_utc_day(86400 * 3 + 5), 3);
}

int main(void)
{
    test_buf();
    test_ids();
    test_config();
    test_fs();
    test_clock();
    return test_report("core_test");
}
