/* Unit tests for common/rfc3339.c: strict parsing of API times and their PostgreSQL form. */
#include <stdint.h>

#include "rfc3339.h"
#include "unit.h"

static int64_t parsed(const char *s)
{
    int64_t us = -42;
    return rfc3339_parse(s, &us) == 0 ? us : -42;
}

int main(int argc, char **argv)
{
    (void)argc;
    CHECK_EQ_INT(parsed("1970-01-01T00:00:00Z"), 0);
    CHECK_EQ_INT(parsed("1970-01-01t00:00:01z"), 1000000);
    CHECK_EQ_INT(parsed("2026-12-02T05:00:00.5Z"), 1796187600500000LL);
    CHECK_EQ_INT(parsed("2026-12-02T06:00:00.000001+01:00"), 1796187600000001LL);
    CHECK_EQ_INT(parsed("2026-12-02T04:30:00-00:30"), 1796187600000000LL);
    CHECK_EQ_INT(parsed("2024-02-29T00:00:00Z"), 1709164800000000LL); /* leap day */
    CHECK_EQ_INT(parsed("9999-12-31T23:59:59.999999Z"), RFC3339_MAX_US);
    const char *bad[] = {
        "",                               /* empty */
        "2026-12-02",                     /* date only */
        "2026-12-02 05:00:00Z",           /* space instead of T */
        "2026-12-02T05:00:00",            /* no zone */
        "2026-12-02T05:00:00.Z",          /* empty fraction */
        "2026-12-02T05:00:00.1234567Z",   /* finer than microseconds */
        "2026-02-29T00:00:00Z",           /* not a leap year */
        "2026-04-31T00:00:00Z",           /* no such day */
        "2026-13-01T00:00:00Z",           /* no such month */
        "2026-01-01T24:00:00Z",           /* hour 24 */
        "2026-01-01T23:59:60Z",           /* leap second */
        "1969-12-31T23:59:59Z",           /* before 1970 */
        "2026-01-01T00:00:00+24:00",      /* offset out of range */
        "2026-01-01T00:00:00+0100",       /* offset without colon */
        "2026-01-01T00:00:00Zjunk",       /* trailing bytes */
        "+026-01-01T00:00:00Z",           /* sign in the year */
        "2026-1-01T00:00:00Z",            /* one-digit month */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us;
        if (!CHECK(rfc3339_parse(bad[i], &us) < 0))
            fprintf(stderr, "    accepted \"%s\"\n", bad[i]);
    }
    char pg[RFC3339_PG_MAX];
    rfc3339_pg(0, pg);
    CHECK_STR(pg, "1970-01-01 00:00:00.000000+00");
    rfc3339_pg(1796187600500000LL, pg);
    CHECK_STR(pg, "2026-12-02 05:00:00.500000+00");
    rfc3339_pg(1709164800000001LL, pg);
    CHECK_STR(pg, "2024-02-29 00:00:00.000001+00");
    return unit_done(argv[0]);
}
