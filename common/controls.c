/* Per-subscription delivery settings (rateLimit, retryPolicy): checking, canonical JSON, and
 * the limit and schedule the workers apply. */
#include "controls.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jsonv.h"

/* Every member of o is one of the names (NULL-terminated); else -1 naming the first other. */
static int only_fields(const cJSON *o, const char *what, const char *const *names, char *err,
                       size_t errlen)
{
    if (jsonv_has_dup_keys(o)) {
        snprintf(err, errlen, "%s has a duplicate field", what);
        return -1;
    }
    for (const cJSON *it = o->child; it; it = it->next) {
        bool known = false;
        for (const char *const *n = names; *n && !known; n++)
            known = strcmp(it->string, *n) == 0;
        if (!known) {
            snprintf(err, errlen, "%s has an unknown field \"%.64s\"", what, it->string);
            return -1;
        }
    }
    return 0;
}

/* An integer member in [lo, hi]; -1 with a message when missing or out of range. */
static int int_field(const cJSON *o, const char *what, const char *name, long lo, long hi,
                     long *out, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        snprintf(err, errlen, "%s.%s must be an integer from %ld to %ld", what, name, lo, hi);
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

/* A number of seconds above 0 and at most RETRY_SECONDS_MAX, in milliseconds (rounded, at
 * least 1). */
static int seconds_value(const cJSON *v, long *ms)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || v->valuedouble > RETRY_SECONDS_MAX)
        return -1;
    long r = lround(v->valuedouble * 1000.0);
    *ms = r < 1 ? 1 : r;
    return 0;
}

static int seconds_field(const cJSON *o, const char *name, long *ms, char *err, size_t errlen)
{
    if (seconds_value(cJSON_GetObjectItemCaseSensitive(o, name), ms) < 0) {
        snprintf(err, errlen,
                 "retryPolicy.%s must be a number of seconds above 0 and at most %d", name,
                 RETRY_SECONDS_MAX);
        return -1;
    }
    return 0;
}

/* Seconds as JSON: integral values without a fraction, others to the millisecond without
 * trailing zeros (2.5, not 2.500: the canonical form is the shortest). */
static void seconds_json(struct buf *b, long ms)
{
    if (ms % 1000 == 0) {
        buf_printf(b, "%ld", ms / 1000);
        return;
    }
    long frac = ms % 1000;
    int digits = 3;
    for (; frac % 10 == 0; frac /= 10)
        digits--;
    buf_printf(b, "%ld.%0*ld", ms / 1000, digits, frac);
}

int controls_rate_parse(const cJSON *v, struct rate_limit *out, struct buf *canon, char *err,
                        size_t errlen)
{
    static const char *const names[] = {"perSecond", "max", "periodSeconds", NULL};
    if (!cJSON_IsObject(v)) {
        snprintf(err, errlen, "rateLimit must be an object: {\"perSecond\": N} or "
                              "{\"max\": N, \"periodSeconds\": S}");
        return -1;
    }
    if (only_fields(v, "rateLimit", names, err, errlen) < 0)
        return -1;
    bool per = cJSON_GetObjectItemCaseSensitive(v, "perSecond") != NULL;
    bool max = cJSON_GetObjectItemCaseSensitive(v, "max") != NULL;
    bool period = cJSON_GetObjectItemCaseSensitive(v, "periodSeconds") != NULL;
    struct rate_limit r;
    if (per && !max && !period) {
        long n;
        if (int_field(v, "rateLimit", "perSecond", 1, RATE_PER_SECOND_MAX, &n, err, errlen) < 0)
            return -1;
        r.max = 1;
        r.period_ms = 1000.0 / (double)n;
        if (canon)
            buf_printf(canon, "{\"perSecond\":%ld}", n);
    } else if (!per && max && period) {
        long n, s;
        if (int_field(v, "rateLimit", "max", 1, RATE_MAX_MAX, &n, err, errlen) < 0 ||
            int_field(v, "rateLimit", "periodSeconds", 1, RATE_PERIOD_MAX_S, &s, err, errlen) < 0)
            return -1;
        r.max = n;
        r.period_ms = (double)s * 1000.0;
        if (canon)
            buf_printf(canon, "{\"max\":%ld,\"periodSeconds\":%ld}", n, s);
    } else {
        snprintf(err, errlen, "rateLimit must be either {\"perSecond\": N} or "
                              "{\"max\": N, \"periodSeconds\": S}");
        return -1;
    }
    if (out)
        *out = r;
    return 0;
}

static int retry_schedule(const cJSON *v, struct backoff *b, struct buf *canon, char *err,
                          size_t errlen)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(v, "schedule");
    int n = cJSON_GetArraySize(s);
    if (!cJSON_IsArray(s) || n < 1 || n > RETRY_SCHEDULE_MAX) {
        snprintf(err, errlen, "retryPolicy.schedule must be an array of 1 to %d delays in seconds",
                 RETRY_SCHEDULE_MAX);
        return -1;
    }
    int i = 0;
    if (canon)
        buf_adds(canon, "{\"schedule\":[");
    for (const cJSON *it = s->child; it; it = it->next, i++) {
        if (seconds_value(it, &b->delay_ms[i]) < 0) {
            snprintf(err, errlen,
                     "retryPolicy.schedule[%d] must be a number of seconds above 0 and at most %d",
                     i, RETRY_SECONDS_MAX);
            return -1;
        }
        if (canon) {
            if (i)
                buf_addc(canon, ',');
            seconds_json(canon, b->delay_ms[i]);
        }
    }
    b->n = (size_t)n;
    if (canon)
        buf_adds(canon, "]}");
    return 0;
}

int controls_retry_parse(const cJSON *v, struct backoff *out, struct buf *canon, char *err,
                         size_t errlen)
{
    static const char *const sched[] = {"schedule", NULL};
    static const char *const expo[] = {"strategy", "baseSeconds", "maxSeconds", "maxAttempts",
                                       NULL};
    static const char *const fixed[] = {"strategy", "intervalSeconds", "maxAttempts", NULL};
    if (!cJSON_IsObject(v)) {
        snprintf(err, errlen, "retryPolicy must be an object: {\"schedule\": [...]} or a "
                              "\"strategy\" of \"exponential\" or \"fixed\"");
        return -1;
    }
    struct backoff b;
    memset(&b, 0, sizeof b);
    struct buf c = {0};
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "strategy");
    int rc = -1;
    if (!st) {
        if (only_fields(v, "retryPolicy", sched, err, errlen) < 0 ||
            retry_schedule(v, &b, &c, err, errlen) < 0)
            goto out;
    } else if (cJSON_IsString(st) && strcmp(st->valuestring, "exponential") == 0) {
        long base, max, att;
        if (only_fields(v, "retryPolicy", expo, err, errlen) < 0 ||
            seconds_field(v, "baseSeconds", &base, err, errlen) < 0 ||
            seconds_field(v, "maxSeconds", &max, err, errlen) < 0 ||
            int_field(v, "retryPolicy", "maxAttempts", 1, RETRY_ATTEMPTS_MAX, &att, err,
                      errlen) < 0)
            goto out;
        if (max < base) {
            snprintf(err, errlen, "retryPolicy.maxSeconds must not be below baseSeconds");
            goto out;
        }
        double d = (double)base;
        for (long i = 0; i + 1 < att; i++, d *= 2)
            b.delay_ms[i] = d < (double)max ? (long)d : max;
        b.n = (size_t)(att - 1);
        buf_adds(&c, "{\"strategy\":\"exponential\",\"baseSeconds\":");
        seconds_json(&c, base);
        buf_adds(&c, ",\"maxSeconds\":");
        seconds_json(&c, max);
        buf_printf(&c, ",\"maxAttempts\":%ld}", att);
    } else if (cJSON_IsString(st) && strcmp(st->valuestring, "fixed") == 0) {
        long iv, att;
        if (only_fields(v, "retryPolicy", fixed, err, errlen) < 0 ||
            seconds_field(v, "intervalSeconds", &iv, err, errlen) < 0 ||
            int_field(v, "retryPolicy", "maxAttempts", 1, RETRY_ATTEMPTS_MAX, &att, err,
                      errlen) < 0)
            goto out;
        for (long i = 0; i + 1 < att; i++)
            b.delay_ms[i] = iv;
        b.n = (size_t)(att - 1);
        buf_adds(&c, "{\"strategy\":\"fixed\",\"intervalSeconds\":");
        seconds_json(&c, iv);
        buf_printf(&c, ",\"maxAttempts\":%ld}", att);
    } else {
        snprintf(err, errlen, "retryPolicy.strategy must be \"exponential\" or \"fixed\" (or "
                              "give a \"schedule\" instead)");
        goto out;
    }
    if (out)
        *out = b;
    if (canon)
        buf_add(canon, c.data, c.len);
    rc = 0;
out:
    buf_free(&c);
    return rc;
}

int controls_batching_parse(const cJSON *v, struct batching *out, struct buf *canon, char *err,
                            size_t errlen)
{
    static const char *const names[] = {"maxSize", "maxIntervalSeconds", NULL};
    long max, secs;
    if (!cJSON_IsObject(v)) {
        snprintf(err, errlen,
                 "batching must be an object {\"maxSize\": 1..%d, \"maxIntervalSeconds\": 1..%d}, "
                 "or null for none",
                 BATCH_SIZE_MAX, BATCH_INTERVAL_MAX_S);
        return -1;
    }
    if (only_fields(v, "batching", names, err, errlen) < 0 ||
        int_field(v, "batching", "maxSize", 1, BATCH_SIZE_MAX, &max, err, errlen) < 0 ||
        int_field(v, "batching", "maxIntervalSeconds", 1, BATCH_INTERVAL_MAX_S, &secs, err,
                  errlen) < 0)
        return -1;
    if (out) {
        out->max = max;
        out->interval_ms = secs * 1000;
    }
    if (canon)
        buf_printf(canon, "{\"maxSize\":%ld,\"maxIntervalSeconds\":%ld}", max, secs);
    return 0;
}
