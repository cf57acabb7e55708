/* Wall-clock helpers: milliseconds since the epoch and RFC 3339 formatting. */
#ifndef WH_CLOCK_H
#define WH_CLOCK_H

#include <stdint.h>

#define RFC3339_LEN 32

int64_t clock_now_ms(void); /* CLOCK_REALTIME, ms */
int64_t clock_mono_ms(void); /* CLOCK_MONOTONIC, ms */
/* "2026-11-23T15:06:00.123Z" into out (RFC3339_LEN bytes). */
void clock_rfc3339(int64_t ms, char *out);

#endif
