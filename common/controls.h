/* Per-subscription delivery settings: the rateLimit and retryPolicy objects of the API, checked,
 * made canonical (what PostgreSQL stores and the API shows) and turned into what the workers
 * apply. Pure functions. */
#ifndef WH_CONTROLS_H
#define WH_CONTROLS_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "backoff.h"
#include "mem.h"

#define RATE_PER_SECOND_MAX 10000
#define RATE_MAX_MAX 10000
#define RATE_PERIOD_MAX_S 86400
#define RETRY_SCHEDULE_MAX 20
#define RETRY_ATTEMPTS_MAX (BACKOFF_MAX_STEPS + 1)
#define RETRY_SECONDS_MAX 604800
#define TIMEOUT_SECONDS_MIN 1
#define TIMEOUT_SECONDS_MAX 30
#define DESCRIPTION_MAX 1024

/* At most max attempts start in any window of period_ms (sliding). {"perSecond": N} is
 * {1, 1000 / N}: evenly spaced. max 0: no limit. */
struct rate_limit {
    long max;
    double period_ms;
};

/* rateLimit: {"perSecond": N} (1..RATE_PER_SECOND_MAX) or {"max": N, "periodSeconds": S}
 * (N 1..RATE_MAX_MAX, S 1..RATE_PERIOD_MAX_S), integers. 0 with the limit in *out and the
 * canonical JSON appended to canon (either may be NULL); -1 with a message naming the field
 * ("rateLimit.perSecond must be an integer from 1 to 10000") in err. */
int controls_rate_parse(const cJSON *v, struct rate_limit *out, struct buf *canon, char *err,
                        size_t errlen) __attribute__((warn_unused_result));

/* retryPolicy: {"schedule": [seconds, ...]} (1..RETRY_SCHEDULE_MAX entries), or
 * {"strategy": "exponential", "baseSeconds": B, "maxSeconds": M, "maxAttempts": N} (delays
 * B, 2B, 4B, ... capped at M), or {"strategy": "fixed", "intervalSeconds": I, "maxAttempts": N}.
 * Seconds are numbers above 0 and at most RETRY_SECONDS_MAX (milliseconds kept); M >= B;
 * maxAttempts 1..RETRY_ATTEMPTS_MAX counts every attempt (1: no retry). 0 with the delays as a
 * schedule in *out (jitter is applied when used, as for RETRY_SCHEDULE) and the canonical JSON
 * appended to canon (either may be NULL); -1 with a message naming the field in err. */
int controls_retry_parse(const cJSON *v, struct backoff *out, struct buf *canon, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* batching (issue 11 part 4, docs/decisions.md 40): a subscription's jobs are sent together,
 * up to max per request, as soon as max are waiting or the oldest has waited interval_ms. */
#define BATCH_SIZE_MAX 1000
#define BATCH_INTERVAL_MAX_S 300
struct batching {
    long max;         /* 1..BATCH_SIZE_MAX; 0: no batching */
    long interval_ms; /* 1000..BATCH_INTERVAL_MAX_S * 1000 */
};

/* batching: {"maxSize": N, "maxIntervalSeconds": S}, both required, integers, N 1..1000 and
 * S 1..300. 0 with the setting in *out and the canonical JSON appended to canon (either may be
 * NULL); -1 with a message naming the field in err. */
int controls_batching_parse(const cJSON *v, struct batching *out, struct buf *canon, char *err,
                            size_t errlen) __attribute__((warn_unused_result));

#endif
