/* Budget pacing at fixed clocks: today_generations < limit * (sod / 86400) + burst,
 * burst = max(1, ceil(limit / 20)). */
#include <math.h>

#include "limits/pacing.h"
#include "test.h"

#define DAY0 1796083200.0 /* 2026-12-01T00:00:00Z */

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

int main(void)
{
    const double midnight = DAY0, noon = DAY0 + 43200, late = DAY0 + 86340; /* 23:59 */

    CHECK_EQ_INT(sc_pacing_burst(0), 1);
    CHECK_EQ_INT(sc_pacing_burst(1), 1);
    CHECK_EQ_INT(sc_pacing_burst(20), 1);
    CHECK_EQ_INT(sc_pacing_burst(21), 2);
    CHECK_EQ_INT(sc_pacing_burst(500), 25);
    CHECK_EQ_INT(sc_pacing_burst(-5), 1);

    /* limit 500: burst 25 */
    CHECK(near(sc_pacing_allowance(500, midnight), 25));
    CHECK(sc_pacing_admit(24, 500, midnight));
    CHECK(!sc_pacing_admit(25, 500, midnight));
    CHECK(near(sc_pacing_allowance(500, noon), 275));
    CHECK(sc_pacing_admit(274, 500, noon));
    CHECK(!sc_pacing_admit(275, 500, noon));
    CHECK(near(sc_pacing_allowance(500, late), 500.0 * 86340 / 86400 + 25));
    CHECK(sc_pacing_admit(499, 500, late)); /* 524.65: the limiter caps at 500 anyway */
    CHECK(!sc_pacing_admit(525, 500, late));

    /* limit 20: burst 1 */
    CHECK(sc_pacing_admit(0, 20, midnight));
    CHECK(!sc_pacing_admit(1, 20, midnight));
    CHECK(sc_pacing_admit(10, 20, noon)); /* 10 + 1 = 11 */
    CHECK(!sc_pacing_admit(11, 20, noon));
    CHECK(sc_pacing_admit(20, 20, late)); /* 19.986 + 1 */
    CHECK(!sc_pacing_admit(21, 20, late));

    /* limit 1: burst 1: the single start is allowed from midnight */
    CHECK(sc_pacing_admit(0, 1, midnight));
    CHECK(!sc_pacing_admit(1, 1, midnight));
    CHECK(sc_pacing_admit(1, 1, noon)); /* 1.5: pacing lets it, the daily limit refuses */
    CHECK(!sc_pacing_admit(2, 1, late));

    /* limit 0: pacing allows one (burst), the limiter refuses everything */
    CHECK(near(sc_pacing_allowance(0, noon), 1));
    CHECK(sc_pacing_admit(0, 0, noon));
    CHECK(!sc_pacing_admit(1, 0, late));

    /* the next midnight starts over */
    CHECK(near(sc_pacing_allowance(500, DAY0 + 86400), 25));
    CHECK(near(sc_pacing_allowance(500, DAY0 + 86400 + 0.5), 500 * 0.5 / 86400 + 25));
    return test_report("limits_pacing_test");
}
