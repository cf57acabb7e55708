/* Clocks in milliseconds (and one in microseconds): the wall clock (since the epoch) and the monotonic clock. */
#ifndef WH_CLOCK_H
#define WH_CLOCK_H

#include <stdint.h>

int64_t clock_now_ms(void); /* CLOCK_REALTIME, ms */
int64_t clock_mono_ms(void); /* CLOCK_MONOTONIC, ms */
int64_t clock_mono_us(void); /* CLOCK_MONOTONIC, µs (durations finer than a ms) */

#endif
