/* Unit tests for common/controls.c: rateLimit and retryPolicy, valid and invalid, the limit
 * and schedule they give, and their canonical JSON. */
#include <stdlib.h>

#include "controls.h"
#include "unit.h"

static char err[256];

/* Parses text as JSON and runs controls_rate_parse; the canonical JSON in canon_out. */
static int rate(const char *text, struct rate_limit *out, char *canon_out, size_t n)
{
    cJSON *v = cJSON_Parse(text);
    struct buf c = {0};
    err[0] = '\0';
    int rc = controls_rate_parse(v, out, &c, err, sizeof err);
    if (canon_out)
        snprintf(canon_out, n, "%s", c.data ? c.data : "");
    buf_free(&c);
    cJSON_Delete(v);
    return rc;
}

static int retry(const char *text, struct backoff *out, char *canon_out, size_t n)
{
    cJSON *v = cJSON_Parse(text);
    struct buf c = {0};
    err[0] = '\0';
    int rc = controls_retry_parse(v, out, &c, err, sizeof err);
    if (canon_out)
        snprintf(canon_out, n, "%s", c.data ? c.data : "");
    buf_free(&c);
    cJSON_Delete(v);
    return rc;
}

/* The refusal names what: its message contains it, and nothing canonical was written. */
#define REFUSED(call, what)                                                                        \
    do {                                                                                           \
        char c_[512] = "x";                                                                        \
        CHECK_EQ_INT(call(text_, NULL, c_, sizeof c_), -1);                                        \
        if (!CHECK(strstr(err, what) != NULL))                                                     \
            fprintf(stderr, "    %s: message \"%s\" does not name %s\n", text_, err, what);        \
        CHECK_STR(c_, "");                                                                         \
    } while (0)

static void test_rate_valid(void)
{
    struct rate_limit r;
    char c[512];
    CHECK_EQ_INT(rate("{\"perSecond\": 5}", &r, c, sizeof c), 0);
    CHECK_EQ_INT(r.max, 1);
    CHECK(r.period_ms > 199.99 && r.period_ms < 200.01);
    CHECK_STR(c, "{\"perSecond\":5}");

    CHECK_EQ_INT(rate("{\"perSecond\": 10000}", &r, c, sizeof c), 0);
    CHECK(r.period_ms > 0.0999 && r.period_ms < 0.1001);
    CHECK_EQ_INT(rate("{\"perSecond\": 1.0}", &r, c, sizeof c), 0);
    CHECK_STR(c, "{\"perSecond\":1}");

    /* Member order does not matter; the canonical form has one. */
    CHECK_EQ_INT(rate("{\"periodSeconds\": 60, \"max\": 100}", &r, c, sizeof c), 0);
    CHECK_EQ_INT(r.max, 100);
    CHECK(r.period_ms == 60000.0);
    CHECK_STR(c, "{\"max\":100,\"periodSeconds\":60}");
    CHECK_EQ_INT(rate("{\"max\": 10000, \"periodSeconds\": 86400}", &r, c, sizeof c), 0);
    CHECK_STR(c, "{\"max\":10000,\"periodSeconds\":86400}");

    /* NULL out and canon are allowed. */
    cJSON *v = cJSON_Parse("{\"perSecond\": 3}");
    CHECK_EQ_INT(controls_rate_parse(v, NULL, NULL, err, sizeof err), 0);
    cJSON_Delete(v);
}

static void test_rate_invalid(void)
{
    static const struct {
        const char *text, *what;
    } cases[] = {
        {"5", "rateLimit must be an object"},
        {"null", "rateLimit must be an object"},
        {"[1]", "rateLimit must be an object"},
        {"{}", "rateLimit must be either"},
        {"{\"perSecond\": 0}", "rateLimit.perSecond"},
        {"{\"perSecond\": -1}", "rateLimit.perSecond"},
        {"{\"perSecond\": 1.5}", "rateLimit.perSecond"},
        {"{\"perSecond\": 10001}", "rateLimit.perSecond"},
        {"{\"perSecond\": \"5\"}", "rateLimit.perSecond"},
        {"{\"perSecond\": true}", "rateLimit.perSecond"},
        {"{\"perSecond\": 1e400}", "rateLimit.perSecond"},
        {"{\"max\": 5}", "rateLimit must be either"},
        {"{\"periodSeconds\": 5}", "rateLimit must be either"},
        {"{\"perSecond\": 1, \"max\": 5, \"periodSeconds\": 1}", "rateLimit must be either"},
        {"{\"perSecond\": 1, \"max\": 5}", "rateLimit must be either"},
        {"{\"max\": 0, \"periodSeconds\": 1}", "rateLimit.max"},
        {"{\"max\": 10001, \"periodSeconds\": 1}", "rateLimit.max"},
        {"{\"max\": 1, \"periodSeconds\": 0}", "rateLimit.periodSeconds"},
        {"{\"max\": 1, \"periodSeconds\": 86401}", "rateLimit.periodSeconds"},
        {"{\"max\": 1, \"periodSeconds\": 0.5}", "rateLimit.periodSeconds"},
        {"{\"perSecond\": 1, \"burst\": 2}", "unknown field \"burst\""},
        {"{\"perSecond\": 1, \"perSecond\": 2}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *text_ = cases[i].text;
        REFUSED(rate, cases[i].what);
    }
}

static void test_retry_schedule(void)
{
    struct backoff b;
    char c[512];
    CHECK_EQ_INT(retry("{\"schedule\": [1, 2.5, 30.0, 0.0004]}", &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.n, 4);
    CHECK_EQ_INT(b.delay_ms[0], 1000);
    CHECK_EQ_INT(b.delay_ms[1], 2500);
    CHECK_EQ_INT(b.delay_ms[2], 30000);
    CHECK_EQ_INT(b.delay_ms[3], 1); /* at least a millisecond */
    CHECK_STR(c, "{\"schedule\":[1,2.5,30,0.001]}");

    CHECK_EQ_INT(retry("{\"schedule\": [604800]}", &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.delay_ms[0], 604800000L);
    CHECK_STR(c, "{\"schedule\":[604800]}");
    CHECK_EQ_INT(retry("{\"schedule\": [0.05, 1.234, 0.1, 7.02]}", &b, c, sizeof c), 0);
    CHECK_STR(c, "{\"schedule\":[0.05,1.234,0.1,7.02]}");

    /* RETRY_SCHEDULE_MAX entries are fine, one more is not. */
    char many[256] = "{\"schedule\":[";
    for (int i = 0; i < RETRY_SCHEDULE_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s%d", i ? "," : "", i + 1);
    snprintf(many + strlen(many), sizeof many - strlen(many), "]}");
    CHECK_EQ_INT(retry(many, &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.n, RETRY_SCHEDULE_MAX);
    CHECK_STR(c, many);
    snprintf(many + strlen(many) - 2, sizeof many - strlen(many) + 2, ",1]}");
    const char *text_ = many;
    REFUSED(retry, "retryPolicy.schedule must be an array of 1 to 20");
}

static void test_retry_exponential(void)
{
    struct backoff b;
    char c[512];
    CHECK_EQ_INT(retry("{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 10, "
                       "\"maxAttempts\": 6}",
                       &b, c, sizeof c),
                 0);
    /* 6 attempts: 5 delays, 1 2 4 8 then capped at 10. */
    CHECK_EQ_INT(b.n, 5);
    CHECK_EQ_INT(b.delay_ms[0], 1000);
    CHECK_EQ_INT(b.delay_ms[1], 2000);
    CHECK_EQ_INT(b.delay_ms[2], 4000);
    CHECK_EQ_INT(b.delay_ms[3], 8000);
    CHECK_EQ_INT(b.delay_ms[4], 10000);
    CHECK_STR(c, "{\"strategy\":\"exponential\",\"baseSeconds\":1,\"maxSeconds\":10,"
                 "\"maxAttempts\":6}");

    /* Fractions kept to the millisecond; member order free. */
    CHECK_EQ_INT(retry("{\"maxAttempts\": 4, \"maxSeconds\": 1, \"baseSeconds\": 0.25, "
                       "\"strategy\": \"exponential\"}",
                       &b, c, sizeof c),
                 0);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(b.delay_ms[0], 250);
    CHECK_EQ_INT(b.delay_ms[1], 500);
    CHECK_EQ_INT(b.delay_ms[2], 1000);
    CHECK_STR(c, "{\"strategy\":\"exponential\",\"baseSeconds\":0.25,\"maxSeconds\":1,"
                 "\"maxAttempts\":4}");

    /* One attempt: no retry. The most attempts: every delay capped, none overflows. */
    CHECK_EQ_INT(retry("{\"strategy\": \"exponential\", \"baseSeconds\": 5, \"maxSeconds\": 5, "
                       "\"maxAttempts\": 1}",
                       &b, c, sizeof c),
                 0);
    CHECK_EQ_INT(b.n, 0);
    char text[256];
    snprintf(text, sizeof text,
             "{\"strategy\": \"exponential\", \"baseSeconds\": 3600, \"maxSeconds\": 604800, "
             "\"maxAttempts\": %d}",
             RETRY_ATTEMPTS_MAX);
    CHECK_EQ_INT(retry(text, &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.n, BACKOFF_MAX_STEPS);
    CHECK_EQ_INT(b.delay_ms[0], 3600000L);
    CHECK_EQ_INT(b.delay_ms[7], 460800000L);
    CHECK_EQ_INT(b.delay_ms[8], 604800000L);
    CHECK_EQ_INT(b.delay_ms[BACKOFF_MAX_STEPS - 1], 604800000L);
}

static void test_retry_fixed(void)
{
    struct backoff b;
    char c[512];
    CHECK_EQ_INT(retry("{\"strategy\": \"fixed\", \"intervalSeconds\": 0.5, \"maxAttempts\": 3}",
                       &b, c, sizeof c),
                 0);
    CHECK_EQ_INT(b.n, 2);
    CHECK_EQ_INT(b.delay_ms[0], 500);
    CHECK_EQ_INT(b.delay_ms[1], 500);
    CHECK_STR(c, "{\"strategy\":\"fixed\",\"intervalSeconds\":0.5,\"maxAttempts\":3}");
    CHECK_EQ_INT(retry("{\"strategy\": \"fixed\", \"intervalSeconds\": 60, \"maxAttempts\": 1}", &b,
                       c, sizeof c),
                 0);
    CHECK_EQ_INT(b.n, 0);
    CHECK_STR(c, "{\"strategy\":\"fixed\",\"intervalSeconds\":60,\"maxAttempts\":1}");
}

static void test_retry_invalid(void)
{
    static const struct {
        const char *text, *what;
    } cases[] = {
        {"\"fast\"", "retryPolicy must be an object"},
        {"{}", "retryPolicy.schedule"},
        {"{\"schedule\": []}", "retryPolicy.schedule must be an array"},
        {"{\"schedule\": 5}", "retryPolicy.schedule must be an array"},
        {"{\"schedule\": [1, 0]}", "retryPolicy.schedule[1]"},
        {"{\"schedule\": [1, -2]}", "retryPolicy.schedule[1]"},
        {"{\"schedule\": [\"1\"]}", "retryPolicy.schedule[0]"},
        {"{\"schedule\": [604800.5]}", "retryPolicy.schedule[0]"},
        {"{\"schedule\": [1], \"maxAttempts\": 3}", "unknown field \"maxAttempts\""},
        {"{\"strategy\": \"linear\"}", "retryPolicy.strategy"},
        {"{\"strategy\": 1}", "retryPolicy.strategy"},
        {"{\"strategy\": \"exponential\", \"maxSeconds\": 10, \"maxAttempts\": 3}",
         "retryPolicy.baseSeconds"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 0, \"maxSeconds\": 10, "
         "\"maxAttempts\": 3}",
         "retryPolicy.baseSeconds"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxAttempts\": 3}",
         "retryPolicy.maxSeconds"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 10, \"maxSeconds\": 5, "
         "\"maxAttempts\": 3}",
         "retryPolicy.maxSeconds must not be below baseSeconds"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 5}",
         "retryPolicy.maxAttempts"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 5, "
         "\"maxAttempts\": 0}",
         "retryPolicy.maxAttempts"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 5, "
         "\"maxAttempts\": 34}",
         "retryPolicy.maxAttempts"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 5, "
         "\"maxAttempts\": 2.5}",
         "retryPolicy.maxAttempts"},
        {"{\"strategy\": \"exponential\", \"baseSeconds\": 1, \"maxSeconds\": 5, "
         "\"maxAttempts\": 3, \"intervalSeconds\": 1}",
         "unknown field \"intervalSeconds\""},
        {"{\"strategy\": \"fixed\", \"maxAttempts\": 3}", "retryPolicy.intervalSeconds"},
        {"{\"strategy\": \"fixed\", \"intervalSeconds\": 1}", "retryPolicy.maxAttempts"},
        {"{\"strategy\": \"fixed\", \"intervalSeconds\": 1, \"maxAttempts\": 3, "
         "\"baseSeconds\": 1}",
         "unknown field \"baseSeconds\""},
        {"{\"strategy\": \"fixed\", \"strategy\": \"fixed\", \"intervalSeconds\": 1, "
         "\"maxAttempts\": 3}",
         "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *text_ = cases[i].text;
        REFUSED(retry, cases[i].what);
    }
}

static int batch(const char *text, struct batching *out, char *canon_out, size_t n)
{
    cJSON *v = cJSON_Parse(text);
    struct buf c = {0};
    err[0] = '\0';
    int rc = controls_batching_parse(v, out, &c, err, sizeof err);
    if (canon_out)
        snprintf(canon_out, n, "%s", c.data ? c.data : "");
    buf_free(&c);
    cJSON_Delete(v);
    return rc;
}

static void test_batching(void)
{
    struct batching b;
    char c[512];
    CHECK_EQ_INT(batch("{\"maxIntervalSeconds\": 300, \"maxSize\": 1}", &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.max, 1);
    CHECK_EQ_INT(b.interval_ms, 300000);
    CHECK_STR(c, "{\"maxSize\":1,\"maxIntervalSeconds\":300}");
    CHECK_EQ_INT(batch("{\"maxSize\": 1000.0, \"maxIntervalSeconds\": 1}", &b, c, sizeof c), 0);
    CHECK_EQ_INT(b.max, 1000);
    CHECK_EQ_INT(b.interval_ms, 1000);
    static const struct {
        const char *text, *what;
    } cases[] = {
        {"5", "batching must be an object"},
        {"null", "batching must be an object"},
        {"[]", "batching must be an object"},
        {"{}", "batching.maxSize"},
        {"{\"maxSize\": 5}", "batching.maxIntervalSeconds"},
        {"{\"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": 0, \"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": 1001, \"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": 1.5, \"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": true, \"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": 1e400, \"maxIntervalSeconds\": 5}", "batching.maxSize"},
        {"{\"maxSize\": 5, \"maxIntervalSeconds\": 0}", "batching.maxIntervalSeconds"},
        {"{\"maxSize\": 5, \"maxIntervalSeconds\": 301}", "batching.maxIntervalSeconds"},
        {"{\"maxSize\": 5, \"maxIntervalSeconds\": \"5\"}", "batching.maxIntervalSeconds"},
        {"{\"maxSize\": 5, \"maxIntervalSeconds\": 5, \"x\": 1}", "unknown field \"x\""},
        {"{\"maxSize\": 5, \"maxSize\": 6, \"maxIntervalSeconds\": 5}", "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *text_ = cases[i].text;
        REFUSED(batch, cases[i].what);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    test_rate_valid();
    test_rate_invalid();
    test_retry_schedule();
    test_retry_exponential();
    test_retry_fixed();
    test_retry_invalid();
    test_batching();
    return unit_done(argv[0]);
}
