/* The instance label added to every /metrics sample, and the reason name of
 * a limits-store failure. */
#include <stdlib.h>
#include <string.h>

#include "http/fleet.h"
#include "limits/store.h"
#include "metrics/metrics.h"
#include "test.h"

static void label(const char *in, const char *inst, const char *want)
{
    sc_buf_t out = SC_BUF_INIT;
    CHECK_EQ_INT(sc_http_fleet_label(in, strlen(in), inst, &out), 0);
    CHECK_STR(out.data ? out.data : "", want);
    sc_buf_free(&out);
}

int main(void)
{
    label("# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n", "h:8001",
          "# HELP x_total X.\n# TYPE x_total counter\nx_total{instance=\"h:8001\"} 3\n");
    label("y{outcome=\"ok\"} 1\ny{} 2\n", "a",
          "y{instance=\"a\",outcome=\"ok\"} 1\ny{instance=\"a\"} 2\n");
    label("z 1", "q\"\\", "z{instance=\"q\\\"\\\\\"} 1");
    label("", "a", "");
    label("\n\nw 1\n", "a", "\n\nw{instance=\"a\"} 1\n");
    CHECK_STR(sc_limit_result_name(SC_LIMIT_UNAVAILABLE), "limiter_unavailable");
    CHECK_STR(sc_fallback_reason_name(sc_fallback_reason_for_limit(SC_LIMIT_UNAVAILABLE)),
              "limiter_unavailable");
    CHECK_EQ_INT(sc_fallback_reason_parse("limiter_unavailable"), SC_FB_LIMITER_UNAVAILABLE);
    return test_report("http_fleet_test");
}
