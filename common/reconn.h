/* The reconnect policy the Redis and PostgreSQL connections share: backoff between attempts
 * (100 ms doubling to 5 s, back to 100 ms once connected), the connect deadline, and the
 * reply watchdog ticking every second whose late ticks mean this process was stopped, not that
 * the server was silent. */
#ifndef WH_RECONN_H
#define WH_RECONN_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#define RECONN_BACKOFF_MIN_MS 100
#define RECONN_BACKOFF_MAX_MS 5000
#define RECONN_CONNECT_TIMEOUT_MS 5000
#define RECONN_WATCH_PERIOD_MS 1000
/* A tick this much later than the previous one: the process was stopped or starved. */
#define RECONN_LATE_TICK_MS (3 * RECONN_WATCH_PERIOD_MS)

/* Backoff between connection attempts. */
struct reconn {
    long delay_ms; /* the wait before the next attempt */
};

void reconn_init(struct reconn *rc);
/* The wait the next attempt will have (for the log line announcing it). */
long reconn_delay(const struct reconn *rc);
/* Returns the wait for this attempt and doubles the next one, up to RECONN_BACKOFF_MAX_MS. */
long reconn_next(struct reconn *rc);
/* Connected: the next loss retries after RECONN_BACKOFF_MIN_MS again. */
void reconn_reset(struct reconn *rc);
/* evtimer_add(timer) after reconn_next(rc); returns the wait. */
long reconn_schedule(struct reconn *rc, struct event *timer);
/* Arms a one-shot timer for the connect deadline. */
void reconn_arm_deadline(struct event *timer);

/* Reply watchdog: the silence window starts when a request is sent or a reply comes. */
struct reconn_watch {
    int64_t since_ms;     /* monotonic start of the current silence window */
    int64_t last_tick_ms; /* previous tick (0: none yet) */
};

/* A request went out or a reply came at now: the server's silence starts again. */
void reconn_watch_restart(struct reconn_watch *w, int64_t now);
/* One tick at now (every RECONN_WATCH_PERIOD_MS). A tick late by more than
 * RECONN_LATE_TICK_MS restarts the window (replies may already wait in the socket). True when
 * the server has been silent for more than timeout_ms; the caller decides whether anything
 * was awaited. */
bool reconn_watch_tick(struct reconn_watch *w, int64_t now, long timeout_ms);
/* A persistent RECONN_WATCH_PERIOD_MS event running cb(arg), added; event_free it. */
struct event *reconn_watch_event(struct event_base *base, event_callback_fn cb, void *arg);

#endif
