/* The reconnect policy the Redis and PostgreSQL connections share: backoff between attempts,
 * the connect deadline, and the reply watchdog with its late-tick rule. */
#include "reconn.h"

#include "libmem.h"

static struct timeval ms_tv(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

void reconn_init(struct reconn *rc)
{
    rc->delay_ms = RECONN_BACKOFF_MIN_MS;
}

long reconn_delay(const struct reconn *rc)
{
    return rc->delay_ms;
}

long reconn_next(struct reconn *rc)
{
    long d = rc->delay_ms;
    rc->delay_ms = d > RECONN_BACKOFF_MAX_MS / 2 ? RECONN_BACKOFF_MAX_MS : d * 2;
    return d;
}

void reconn_reset(struct reconn *rc)
{
    rc->delay_ms = RECONN_BACKOFF_MIN_MS;
}

long reconn_schedule(struct reconn *rc, struct event *timer)
{
    long d = reconn_next(rc);
    struct timeval tv = ms_tv(d);
    evtimer_add(timer, &tv);
    return d;
}

void reconn_arm_deadline(struct event *timer)
{
    struct timeval tv = ms_tv(RECONN_CONNECT_TIMEOUT_MS);
    evtimer_add(timer, &tv);
}

void reconn_watch_restart(struct reconn_watch *w, int64_t now)
{
    w->since_ms = now;
}

bool reconn_watch_tick(struct reconn_watch *w, int64_t now, long timeout_ms)
{
    if (w->last_tick_ms && now - w->last_tick_ms > RECONN_LATE_TICK_MS)
        w->since_ms = now;
    w->last_tick_ms = now;
    return now - w->since_ms > timeout_ms;
}

struct event *reconn_watch_event(struct event_base *base, event_callback_fn cb, void *arg)
{
    struct event *ev = xnonnull(event_new(base, -1, EV_PERSIST, cb, arg), "event_new");
    struct timeval tv = ms_tv(RECONN_WATCH_PERIOD_MS);
    event_add(ev, &tv);
    return ev;
}
