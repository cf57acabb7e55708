/* Unit tests for common/backoff.c: schedule parsing, jittered delays, Retry-After. */
#include "backoff.h"
#include "unit.h"

static void test_parse(void)
{
    struct backoff b;
    char err[256];
    CHECK_EQ_INT(backoff_parse(BACKOFF_DEFAULT, &b, err, sizeof err), 0);
    CHECK_EQ_INT(b.n, 7);
    CHECK_EQ_INT(b.delay_ms[0], 5000);
    CHECK_EQ_INT(b.delay_ms[1], 300000);
    CHECK_EQ_INT(b.delay_ms[6], 36000000);

    CHECK_EQ_INT(backoff_parse("1,2.5, 3", &b, err, sizeof err), 0);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(b.delay_ms[0], 1000);
    CHECK_EQ_INT(b.delay_ms[1], 2500);
    CHECK_EQ_INT(b.delay_ms[2], 3000);

    CHECK_EQ_INT(backoff_parse(" 0.5 ,\t0.001 , 604800 ", &b, err, sizeof err), 0);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(b.delay_ms[0], 500);
    CHECK_EQ_INT(b.delay_ms[1], 1);
    CHECK_EQ_INT(b.delay_ms[2], 604800000);
    CHECK_EQ_INT(backoff_parse("1.2345,0.0015", &b, err, sizeof err), 0);
    CHECK_EQ_INT(b.delay_ms[0], 1235);
    CHECK_EQ_INT(b.delay_ms[1], 2);

    /* 32 entries are fine, 33 are not. */
    char many[256];
    size_t len = 0;
    for (int i = 0; i < 33; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "%s%d", i ? "," : "", i + 1);
    CHECK_EQ_INT(backoff_parse(many, &b, err, sizeof err), -1);
    *strrchr(many, ',') = '\0';
    CHECK_EQ_INT(backoff_parse(many, &b, err, sizeof err), 0);
    CHECK_EQ_INT(b.n, 32);
    CHECK_EQ_INT(b.delay_ms[31], 32000);

    static const char *const bad[] = {
        "",       " ",
        "a",      "1,,2",
        "0",      "-1",
        "691200", "604800.001",
        "1,",     ",1",
        "1e3",    "1.",
        ".5",     "0.0004",
        "0.0",    "+1",
        "1 2",    "1;2",
        "inf",    "nan",
        "0x10",   "99999999999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = backoff_parse(bad[i], &b, err, sizeof err);
        if (!unit_check(rc == -1 && err[0] != '\0', __FILE__, __LINE__, "bad schedule refused"))
            fprintf(stderr, "    \"%s\" was accepted\n", bad[i]);
    }
}

static void test_next(void)
{
    struct backoff b;
    char err[128];
    CHECK_EQ_INT(backoff_parse(BACKOFF_DEFAULT, &b, err, sizeof err), 0);
    CHECK_EQ_INT(backoff_next_ms(&b, 1, 0), 4000);
    CHECK_EQ_INT(backoff_next_ms(&b, 1, UINT32_MAX), 6000);
    long mid = backoff_next_ms(&b, 1, UINT32_MAX / 2);
    CHECK(mid >= 4999 && mid <= 5001);
    int outside = 0;
    long prev = 0;
    for (uint32_t r = 0; r < 1000; r++) {
        long d = backoff_next_ms(&b, 1, r * 4294967u);
        outside += d < 4000 || d > 6000 || d < prev; /* within ±20%, monotonic in rnd */
        prev = d;
    }
    CHECK_EQ_INT(outside, 0);
    CHECK_EQ_INT(backoff_next_ms(&b, 2, 0), 240000);
    CHECK_EQ_INT(backoff_next_ms(&b, 7, UINT32_MAX), 43200000);
    /* 8 attempts in all: after the 8th there is nothing left. */
    for (int a = 1; a <= 7; a++)
        CHECK(backoff_next_ms(&b, a, 12345) > 0);
    CHECK_EQ_INT(backoff_next_ms(&b, 8, 0), -1);
    CHECK_EQ_INT(backoff_next_ms(&b, 9, 0), -1);
    CHECK_EQ_INT(backoff_next_ms(&b, 0, 0), -1);
    CHECK_EQ_INT(backoff_next_ms(&b, -1, 0), -1);

    /* A 1 ms step never becomes 0. */
    CHECK_EQ_INT(backoff_parse("0.001", &b, err, sizeof err), 0);
    CHECK_EQ_INT(backoff_next_ms(&b, 1, 0), 1);
    CHECK_EQ_INT(backoff_next_ms(&b, 2, 0), -1);
}

static void retry_after_is(const char *v, time_t now, long want, int line)
{
    long ms = -12345;
    int rc = backoff_parse_retry_after(v, now, &ms);
    if (!unit_check(rc == 0 && ms == want, __FILE__, line, "Retry-After"))
        fprintf(stderr, "    \"%s\": rc %d, %ld ms, want %ld\n", v, rc, ms, want);
}

static void retry_after_bad(const char *v, int line)
{
    long ms = 0;
    unit_check(backoff_parse_retry_after(v, 1445412480, &ms) == -1, __FILE__, line, v);
}

static void test_retry_after(void)
{
    const time_t date = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */
    retry_after_is("120", 0, 120000, __LINE__);
    retry_after_is("0", 0, 0, __LINE__);
    retry_after_is(" 7 ", 0, 7000, __LINE__);
    retry_after_is("99999999999999999999999", 0, 2000000000, __LINE__); /* capped */
    retry_after_is("Wed, 21 Oct 2015 07:28:00 GMT", date - 120, 120000, __LINE__);
    retry_after_is("Wed, 21 Oct 2015 07:28:00 GMT", date, 0, __LINE__);
    retry_after_is("Wed, 21 Oct 2015 07:28:00 GMT", date + 3600, 0, __LINE__); /* past */
    retry_after_is("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 1, 1000, __LINE__);
    retry_after_is("Tue, 29 Feb 2000 23:59:59 GMT", 951868799 - 59, 59000, __LINE__);
    retry_after_is("Thu, 01 Jan 2015 00:00:00 GMT", 0, 2000000000, __LINE__); /* capped */

    retry_after_bad("", __LINE__);
    retry_after_bad("soon", __LINE__);
    retry_after_bad("-1", __LINE__);
    retry_after_bad("-120", __LINE__);
    retry_after_bad("+120", __LINE__);
    retry_after_bad("1.5", __LINE__);
    retry_after_bad("12abc", __LINE__);
    retry_after_bad("Wed, 21 Oct 2015 07:28:00 UTC", __LINE__);
    retry_after_bad("Wed, 21 Oct 2015 07:28:00", __LINE__);
    retry_after_bad("Wed, 32 Oct 2015 07:28:00 GMT", __LINE__);
    retry_after_bad("Wed, 29 Feb 2015 07:28:00 GMT", __LINE__);
    retry_after_bad("Wed, 21 Foo 2015 07:28:00 GMT", __LINE__);
    retry_after_bad("Xyz, 21 Oct 2015 07:28:00 GMT", __LINE__);
    retry_after_bad("Wed, 21 Oct 2015 24:00:00 GMT", __LINE__);
    retry_after_bad("Wed, 21 Oct 2015 07:60:00 GMT", __LINE__);
    retry_after_bad("Wednesday, 21-Oct-15 07:28:00 GMT", __LINE__);
    retry_after_bad("Wed Oct 21 07:28:00 2015", __LINE__);
    CHECK_EQ_INT(backoff_parse_retry_after(NULL, 0, &(long){0}), -1);
}

static void test_apply(void)
{
    CHECK_EQ_INT(backoff_apply_retry_after(5000, 0), 5000);
    CHECK_EQ_INT(backoff_apply_retry_after(5000, 7000), 7000);
    CHECK_EQ_INT(backoff_apply_retry_after(5000, 60000), 10000);
    CHECK_EQ_INT(backoff_apply_retry_after(5000, 10000), 10000);
    CHECK_EQ_INT(backoff_apply_retry_after(5000, 4999), 5000);
    CHECK_EQ_INT(backoff_apply_retry_after(5000, -1), 5000);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_parse();
    test_next();
    test_retry_after();
    test_apply();
    return unit_done(argv[0]);
}
