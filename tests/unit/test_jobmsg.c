/* Unit tests for common/jobmsg.c: the message round-trips, the optional rate-limit reservation
 * "r" is written only when set, and messages without it (all those written before it existed)
 * still decode. */
#include "jobmsg.h"
#include "unit.h"

#define JOB "0190d5a0-0000-7000-8000-000000000001"
#define EVT "0190d5a0-0000-7000-8000-000000000002"
#define SUB "0190d5a0-0000-7000-8000-000000000003"

static int decode(const char *s, struct job_msg *m)
{
    return jobmsg_decode(s, strlen(s), m);
}

int main(int argc, char **argv)
{
    (void)argc;
    struct job_msg m = {.job = JOB, .event = EVT, .sub = SUB, .name = "a.b", .attempt = 3};
    m.url = (char *)"http://x.example/h";
    struct buf b = {0};
    jobmsg_encode(&m, &b);
    buf_addc(&b, '\0');
    CHECK(strstr(b.data, "\"r\"") == NULL);
    CHECK_STR(b.data, "{\"j\":\"" JOB "\",\"e\":\"" EVT "\",\"s\":\"" SUB
                      "\",\"n\":\"a.b\",\"u\":\"http://x.example/h\",\"a\":3}");
    struct job_msg d;
    CHECK(decode(b.data, &d) == 0);
    CHECK_EQ_INT(d.rslot, 0);
    CHECK_EQ_INT(d.attempt, 3);
    CHECK_STR(d.url, "http://x.example/h");
    jobmsg_clear(&d);

    m.rslot = 1764650000123LL;
    buf_reset(&b);
    jobmsg_encode(&m, &b);
    buf_addc(&b, '\0');
    CHECK(strstr(b.data, ",\"a\":3,\"r\":1764650000123}") != NULL);
    CHECK(decode(b.data, &d) == 0);
    CHECK_EQ_INT(d.rslot, 1764650000123LL);
    jobmsg_clear(&d);

    /* malformed reservations are refused like any malformed field */
    const char *bad[] = {
        "{\"j\":\"" JOB "\",\"e\":\"" EVT "\",\"s\":\"" SUB "\",\"n\":\"a\",\"u\":\"u\",\"a\":1,"
        "\"r\":\"5\"}",
        "{\"j\":\"" JOB "\",\"e\":\"" EVT "\",\"s\":\"" SUB "\",\"n\":\"a\",\"u\":\"u\",\"a\":1,"
        "\"r\":0}",
        "{\"j\":\"" JOB "\",\"e\":\"" EVT "\",\"s\":\"" SUB "\",\"n\":\"a\",\"u\":\"u\",\"a\":1,"
        "\"r\":-7}",
        "{\"j\":\"" JOB "\",\"e\":\"" EVT "\",\"s\":\"" SUB "\",\"n\":\"a\",\"u\":\"u\",\"a\":1,"
        "\"r\":1e300}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(decode(bad[i], &d) < 0);
        jobmsg_clear(&d);
    }
    buf_free(&b);
    return unit_done(argv[0]);
}
