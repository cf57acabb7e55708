/* Retry schedule: parsing RETRY_SCHEDULE, delays with jitter, and the Retry-After header. */
#ifndef WH_BACKOFF_H
#define WH_BACKOFF_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BACKOFF_MAX_STEPS 32
#define BACKOFF_DEFAULT "5,300,1800,7200,18000,36000,36000"
#define BACKOFF_JITTER 0.20

struct backoff {
    long delay_ms[BACKOFF_MAX_STEPS]; /* delay before attempt i+2 */
    size_t n;                         /* number of retries; attempts in all = n + 1 */
};

/* "5,300,1800" seconds (decimals allowed, e.g. "0.5"), each > 0 and <= 7 days, 1..32 entries,
 * spaces around commas tolerated. 0 or -1 with a reason in err. */
int backoff_parse(const char *s, struct backoff *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Delay before the next try after attempt `attempt` (1-based) failed: delay_ms[attempt-1]
 * scaled by a factor in [1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER] chosen by rnd (uniform over
 * uint32). Returns -1 when attempt >= n + 1 (no attempts left: the job is dead). */
long backoff_next_ms(const struct backoff *b, int attempt, uint32_t rnd);

/* Retry-After: delta-seconds ("120") or an IMF-fixdate ("Wed, 21 Oct 2015 07:28:00 GMT"),
 * relative to now. Returns 0 and the delay in *ms (0 for dates in the past), -1 if unparsable. */
int backoff_parse_retry_after(const char *value, time_t now, long *ms)
    __attribute__((warn_unused_result));

/* Honours Retry-After within bounds: max(scheduled, min(retry_after, 2 * scheduled)). */
long backoff_apply_retry_after(long scheduled_ms, long retry_after_ms);

#endif
