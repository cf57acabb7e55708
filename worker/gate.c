/* The gate: what every worker must agree on in Redis just before an attempt starts. The circuit
 * breaker's probe lock (one attempt at a time to a subscription whose circuit is half-open) and
 * the per-subscription rate limiter (a slot per attempt, reserved in one script call per
 * subscription per batch, Redis TIME as the clock); jobs whose slot is near wait here in memory,
 * later ones are parked until shortly before it with the slot in their message. The probe lock
 * is also an ordered subscription's "one attempt at a time". Also the Lua of the held protocol
 * (a paused subscription's jobs) and of ordered delivery (the jobs waiting for their turn),
 * which finalize runs in its MULTI. docs/decisions.md 25 and 33. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define SLOT_NEAR_MS 250     /* a slot this close is waited for in memory; later ones are parked */
#define PROBE_BUSY_MS 1000   /* jobs of a half-open subscription wait this long for the probe */
#define PROBE_MARGIN_MS 2000 /* the probe lock outlives the probe's timeout by this */

/* The limiter and the probe lock, one call per subscription per batch. KEYS: ctl, rate. ARGV:
 * probe token ("": no probe wanted), probe lock ms (after the probe's slot), max attempts per
 * window (0: no limit), window us, slots wanted, the probe's own reservation us (0: none).
 * Returns {now us, probe granted (1 when none was asked), slot us...}.
 *
 * The limiter keeps the last max slots handed out (a list, ascending) and gives each new one the
 * earliest time >= now and >= the last slot at which fewer than max slots lie in the window
 * before it: max slots after the one max back. So at most max attempts start in any window of
 * that length, whichever worker asks, and a burst gets its slots in one call. The list expires
 * one window after its last slot. The probe lock is the field "probe" of ctl, "<expiry ms>:<token>"
 * (lock_token): held by another token and not expired, the probe is refused and nothing is
 * reserved. */
static const char gate_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
    "local out = {now, 1} "
    "local last = now "
    "if ARGV[1] ~= '' then "
    "  local v = redis.call('HGET', KEYS[1], 'probe') "
    "  if v then "
    "    local exp, who = string.match(v, '^(%d+):(.+)$') "
    "    if exp and tonumber(exp) * 1000 > now and who ~= ARGV[1] then "
    "      out[2] = 0 "
    "      return out "
    "    end "
    "  end "
    "  local own = tonumber(ARGV[6]) "
    "  if own > last then last = own end "
    "end "
    "local max = tonumber(ARGV[3]) "
    "local n = tonumber(ARGV[5]) "
    "if max > 0 and n > 0 then "
    "  local period = tonumber(ARGV[4]) "
    "  local len = redis.call('LLEN', KEYS[2]) "
    "  local tail = 0 "
    "  if len > 0 then tail = tonumber(redis.call('LINDEX', KEYS[2], -1)) end "
    "  for i = 1, n do "
    "    local s = now "
    "    if tail > s then s = tail end "
    "    if len >= max then "
    "      local first = tonumber(redis.call('LINDEX', KEYS[2], len - max)) + period "
    "      if first > s then s = first end "
    "    end "
    "    redis.call('RPUSH', KEYS[2], string.format('%d', s)) "
    "    len = len + 1 "
    "    tail = s "
    "    out[#out + 1] = s "
    "  end "
    "  if len > max then redis.call('LTRIM', KEYS[2], len - max, -1) end "
    "  redis.call('PEXPIRE', KEYS[2], math.floor((tail - now + period) / 1000) + 1000) "
    "  if tail > last then last = tail end "
    "end "
    "if ARGV[1] ~= '' then "
    "  redis.call('HSET', KEYS[1], 'probe', "
    "    string.format('%d', math.floor(last / 1000) + tonumber(ARGV[2])) .. ':' .. ARGV[1]) "
    "end "
    "return out";

/* Releases the probe lock if the job still holds it. KEYS: ctl. ARGV: its token. */
static const char release_lua[] = "local v = redis.call('HGET', KEYS[1], 'probe') "
                                  "if v and string.match(v, ':(.+)$') == ARGV[1] then "
                                  "  redis.call('HDEL', KEYS[1], 'probe') "
                                  "  return 1 "
                                  "end "
                                  "return 0";

/* Ordered delivery (docs/decisions.md 33): the jobs of an ordered subscription that are not its
 * head wait in the same held zset as a paused subscription's (score 0: sorted by message = by
 * job id), so a resume, a DELETE, turning ordered off and the reconciler's pass over held-subs
 * all release them; released, each is compared with the head again. ctl's field "ofin" is the
 * largest job id of the subscription that reached a final state (written by next_lua).
 *
 * wait_lua parks a job that was not the head. KEYS: ctl, held, held-subs, jobs, retry. ARGV: the
 * job message, subscription id, the head it was compared with, the stream field, a due time
 * (ms). ofin below that head: the head has not finished, the job waits in held (the head's
 * next_lua will release it). ofin equal to it: the head finished since the batch's read (its
 * next_lua ran before this, finding nothing to release): the job goes back on the stream to be
 * compared again. ofin above it: either the head and later ones finished since the read (rare),
 * or the head is an older job sent again (recover, replay) and unfinished again; the job goes
 * to the retry set due at the time given (a second later), compared again then: never stranded,
 * and while such a head retries, no job loops between the stream and a worker. */
static const char wait_lua[] = "local f = redis.call('HGET', KEYS[1], 'ofin') "
                               "if f and f == ARGV[3] then "
                               "  redis.call('XADD', KEYS[4], '*', ARGV[4], ARGV[1]) "
                               "  return 0 "
                               "elseif f and f > ARGV[3] then "
                               "  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1]) "
                               "  return 2 "
                               "end "
                               "redis.call('ZADD', KEYS[2], 0, ARGV[1]) "
                               "redis.call('SADD', KEYS[3], ARGV[2]) "
                               "return 1";

/* next_lua, for a job of an ordered subscription that reached a final state (recorded in
 * PostgreSQL): ofin = max(ofin, job id), then the smallest waiting message (the next head, or a
 * job that will wait again) goes to the stream. KEYS: ctl, held, held-subs, jobs. ARGV: job id,
 * subscription id, the stream field. */
static const char next_lua[] =
    "local f = redis.call('HGET', KEYS[1], 'ofin') "
    "if not f or f < ARGV[1] then redis.call('HSET', KEYS[1], 'ofin', ARGV[1]) end "
    "local m = redis.call('ZRANGE', KEYS[2], 0, 0) "
    "if #m == 0 then return 0 end "
    "redis.call('XADD', KEYS[4], '*', ARGV[3], m[1]) "
    "redis.call('ZREM', KEYS[2], m[1]) "
    "if redis.call('ZCARD', KEYS[2]) == 0 then "
    "  redis.call('DEL', KEYS[2]) redis.call('SREM', KEYS[3], ARGV[2]) "
    "end "
    "return 1";

/* The held protocol (docs/decisions.md 24), for a job whose subscription PostgreSQL called
 * paused. KEYS: ctl, held, held-subs, retry. ARGV: the job message, subscription id, now ms.
 * A resume that raced (st "active": the broker released the held zset already) puts the message
 * in the retry set due now; otherwise (paused, or st missing after Redis lost it) it joins the
 * held zset with score 0 (sorted by message = by job id = creation order). Either way the job
 * stays in the live set. */
static const char hold_lua[] = "if redis.call('HGET', KEYS[1], 'st') == 'active' then "
                               "  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) "
                               "  return 0 "
                               "end "
                               "redis.call('ZADD', KEYS[2], 0, ARGV[1]) "
                               "redis.call('SADD', KEYS[3], ARGV[2]) "
                               "return 1";

/* The jobs of one subscription in the batch being dispatched. */
struct group {
    struct group *next;
    struct job *jobs, **tail;
    bool half_open;
    long nslots; /* jobs asking the limiter for a slot */
};

static struct group *groups;    /* of the batch being dispatched (gate_add .. gate_flush) */
static struct job *waiting;     /* jobs waiting in memory for their slot */
static int64_t redis_offset_ms; /* Redis TIME - our clock, as of the last script reply */

/* The probe lock's token for j (out: LOCK_TOKEN_MAX bytes). A half-open circuit's probe: the job
 * id, so the same job back from the retry set (parked for its rate-limit slot) holds it again.
 * An ordered subscription's head (decision 33): the job id, this worker and the stream entry,
 * so that a second copy of the same job (a requeue after Redis lost data, a claim) never
 * attempts it while the first one does; a head parked for its slot releases the lock instead
 * and asks again when it is back. */
#define LOCK_TOKEN_MAX (ID_LEN + sizeof W.consumer + 64)
static size_t lock_token(const struct job *j, char *out)
{
    int n = j->ctl && j->ctl->ordered
                ? snprintf(out, LOCK_TOKEN_MAX, "%s/%s/%s", j->m.job, W.consumer, j->entry)
                : snprintf(out, LOCK_TOKEN_MAX, "%s", j->m.job);
    return n < 0 ? 0 : (size_t)n >= LOCK_TOKEN_MAX ? LOCK_TOKEN_MAX - 1 : (size_t)n;
}

/* Redis's clock now, as far as we know it. */
static int64_t redis_now_ms(void)
{
    return clock_now_ms() + redis_offset_ms;
}

/* Not attempted now: back to the retry set due at due_ms (our clock), the same attempt,
 * nothing recorded. */
static void park(struct job *j, int64_t due_ms)
{
    j->next = NULL;
    j->out = OUT_HOLD;
    j->next_ms = due_ms;
    outcome_submit(j);
}

static void start_now(struct job *j)
{
    j->next = NULL;
    if (W.offline) {
        j->m.rslot = 0;
        metrics_inc(M_JOBS_HELD, MH_OFFLINE);
        park(j, clock_now_ms());
        return;
    }
    deliver_start(j);
}

static void wait_unlink(struct job *j)
{
    if (j->wait_prev)
        j->wait_prev->wait_next = j->wait_next;
    else
        waiting = j->wait_next;
    if (j->wait_next)
        j->wait_next->wait_prev = j->wait_prev;
    j->wait_prev = j->wait_next = NULL;
    event_free(j->wait_ev);
    j->wait_ev = NULL;
}

static void on_slot(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct job *j = arg;
    wait_unlink(j);
    start_now(j);
}

/* Starts j at its slot (ms, Redis clock): at once when due, by a timer when near, else parks it
 * until SLOT_NEAR_MS before the slot, carrying the reservation so it is not limited twice. */
static void start_at(struct job *j, int64_t slot_ms)
{
    int64_t delay = slot_ms - redis_now_ms();
    j->m.rslot = 0;
    if (delay <= 0) {
        start_now(j);
    } else if (delay <= SLOT_NEAR_MS) {
        j->next = NULL;
        j->wait_ev = xnonnull(evtimer_new(W.base, on_slot, j), "evtimer_new");
        j->wait_prev = NULL;
        j->wait_next = waiting;
        if (waiting)
            waiting->wait_prev = j;
        waiting = j;
        struct timeval tv = {(time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000};
        evtimer_add(j->wait_ev, &tv);
    } else {
        j->m.rslot = slot_ms;
        log_debug(j->m.job, "rate limit: slot in %lld ms; parked until shortly before",
                  (long long)delay);
        metrics_inc(M_JOBS_HELD, MH_RATE_LIMIT);
        park(j, clock_now_ms() + delay - SLOT_NEAR_MS);
    }
}

static void abandon_group(struct group *g, const char *why)
{
    for (struct job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        j->next = NULL;
        job_abandon(j, why);
    }
}

static void group_free(struct group *g)
{
    free(g);
}

/* The script's answer for one subscription's jobs of a batch. */
static void decided(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct group *g = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER || (long)reply->elements - 2 > g->nslots) {
        log_warn("gate", "the rate limit / probe script failed: %s",
                 reply && reply->str ? reply->str : "connection lost");
        abandon_group(g, "the rate limiter could not be asked");
        group_free(g);
        return;
    }
    int64_t redis_now = reply->element[0]->integer / 1000;
    redis_offset_ms = redis_now - clock_now_ms();
    bool granted = reply->element[1]->integer == 1;
    size_t slot = 2;
    bool first = true;
    for (struct job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        if (g->half_open && (!granted || !first)) {
            /* the probe is someone else's (or this one's first job's): wait for its outcome */
            j->m.rslot = 0;
            /* the lock of a circuit's probe, or of an ordered subscription's head */
            metrics_inc(M_JOBS_HELD,
                        j->ctl && j->ctl->ordered ? MH_ORDERED : MH_CIRCUIT_OPEN);
            park(j, clock_now_ms() + PROBE_BUSY_MS);
            continue;
        }
        if (g->half_open) {
            j->probe = true;
            if (j->ctl->ordered)
                log_debug(j->m.job, "subscription %s: ordered, this job is the head", j->m.sub);
            else
                log_info(j->m.job, "subscription %s: circuit half-open, this job is the probe",
                         j->m.sub);
        }
        first = false;
        int64_t at;
        if (j->m.rslot) {
            at = j->m.rslot;
        } else if (slot < reply->elements && reply->element[slot]->type == REDIS_REPLY_INTEGER) {
            at = (reply->element[slot++]->integer + 999) / 1000;
        } else {
            at = redis_now; /* no limit asked for (probe only) */
        }
        start_at(j, at);
    }
    group_free(g);
}

void gate_add(struct job *j, bool half_open)
{
    struct group *g = groups;
    while (g && memcmp(g->jobs->m.sub, j->m.sub, ID_LEN) != 0)
        g = g->next;
    if (!g) {
        g = xcalloc(1, sizeof *g);
        g->tail = &g->jobs;
        g->half_open = half_open;
        g->next = groups;
        groups = g;
    }
    j->next = NULL;
    *g->tail = j;
    g->tail = &j->next;
}

/* One script call for group g (the first job is the probe candidate when half-open). */
static void ask(struct group *g)
{
    struct job *head = g->jobs;
    const struct subctl *c = head->ctl;
    long want = 0;
    for (struct job *j = head; j; j = j->next)
        if (!j->m.rslot && c->has_rate && (!g->half_open || j == head))
            want++;
    g->nslots = want;
    char ctl[KEY_MAX], rate[KEY_MAX], token[LOCK_TOKEN_MAX];
    long timeout = c->timeout_ms ? c->timeout_ms : W.cfg.timeout_ms;
    struct rargs a = {0};
    rargs_adds(&a, "EVAL");
    rargs_adds(&a, gate_lua);
    rargs_adds(&a, "2");
    rargs_add(&a, ctl, key_ctl(ctl, head->part, head->m.sub));
    rargs_add(&a, rate, key_rate(rate, head->part, head->m.sub));
    rargs_add(&a, token, g->half_open ? lock_token(head, token) : 0);
    rargs_addll(&a, timeout + PROBE_MARGIN_MS);
    rargs_addll(&a, c->has_rate ? c->rate.max : 0);
    rargs_addll(&a, c->has_rate ? (long long)ceil(c->rate.period_ms * 1000.0) : 0);
    rargs_addll(&a, want);
    rargs_addll(&a, g->half_open && head->m.rslot ? head->m.rslot * 1000 : 0);
    if (rargs_send(&a, W.rd_cmd, decided, g) < 0) {
        abandon_group(g, "Redis is unavailable for the rate limiter");
        group_free(g);
    }
    rargs_free(&a);
}

void gate_flush(void)
{
    struct group *g = groups;
    groups = NULL;
    for (struct group *next; g; g = next) {
        next = g->next;
        bool needs_redis = g->half_open;
        for (struct job *j = g->jobs; j && !needs_redis; j = j->next)
            needs_redis = !j->m.rslot && j->ctl->has_rate;
        if (needs_redis) {
            ask(g);
            continue;
        }
        /* Only reservations made earlier (parked jobs back shortly before their slot): no
         * call, they are not limited twice. */
        for (struct job *j = g->jobs, *nj; j; j = nj) {
            nj = j->next;
            start_at(j, j->m.rslot);
        }
        group_free(g);
    }
}

bool gate_send_hold(const struct job *j, const char *msg, size_t len)
{
    char ctl[KEY_MAX], held[KEY_MAX], subs[KEY_MAX], retry[KEY_MAX];
    struct rargs a = {0};
    rargs_adds(&a, "EVAL");
    rargs_adds(&a, hold_lua);
    rargs_adds(&a, "4");
    rargs_add(&a, ctl, key_ctl(ctl, j->part, j->m.sub));
    rargs_add(&a, held, key_held(held, j->part, j->m.sub));
    rargs_add(&a, subs, key_held_subs(subs, j->part));
    rargs_add(&a, retry, key_retry(retry, j->part));
    rargs_add(&a, msg, len);
    rargs_add(&a, j->m.sub, ID_LEN);
    rargs_addll(&a, clock_now_ms());
    bool ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
    rargs_free(&a);
    return ok;
}

/* The keys of the ordered scripts (wait_lua also the retry set), then their arguments. */
static bool send_order(const char *lua, const struct job *j, const char *msg, size_t len,
                       const char *head)
{
    char ctl[KEY_MAX], held[KEY_MAX], subs[KEY_MAX], jobs[KEY_MAX], retry[KEY_MAX];
    struct rargs a = {0};
    rargs_adds(&a, "EVAL");
    rargs_adds(&a, lua);
    rargs_adds(&a, msg ? "5" : "4");
    rargs_add(&a, ctl, key_ctl(ctl, j->part, j->m.sub));
    rargs_add(&a, held, key_held(held, j->part, j->m.sub));
    rargs_add(&a, subs, key_held_subs(subs, j->part));
    rargs_add(&a, jobs, key_jobs(jobs, j->part));
    if (msg)
        rargs_add(&a, retry, key_retry(retry, j->part));
    if (msg) {
        rargs_add(&a, msg, len);
        rargs_add(&a, j->m.sub, ID_LEN);
        rargs_adds(&a, head);
    } else {
        rargs_add(&a, j->m.job, ID_LEN);
        rargs_add(&a, j->m.sub, ID_LEN);
    }
    rargs_adds(&a, KEYS_STREAM_FIELD);
    if (msg)
        rargs_addll(&a, clock_now_ms() + PROBE_BUSY_MS);
    bool ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
    rargs_free(&a);
    return ok;
}

bool gate_send_wait(const struct job *j, const char *msg, size_t len)
{
    return send_order(wait_lua, j, msg, len, j->ctl->head);
}

bool gate_send_next(const struct job *j)
{
    return send_order(next_lua, j, NULL, 0, NULL);
}

bool gate_send_probe_release(const struct job *j)
{
    char ctl[KEY_MAX], token[LOCK_TOKEN_MAX];
    struct rargs a = {0};
    rargs_adds(&a, "EVAL");
    rargs_adds(&a, release_lua);
    rargs_adds(&a, "1");
    rargs_add(&a, ctl, key_ctl(ctl, j->part, j->m.sub));
    rargs_add(&a, token, lock_token(j, token));
    bool ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
    rargs_free(&a);
    return ok;
}

void gate_shutdown(void)
{
    long n = 0;
    while (waiting) {
        struct job *j = waiting;
        wait_unlink(j);
        W.inflight--;
        job_free(j);
        n++;
    }
    if (n)
        log_info(NULL, "%ld job%s waiting for a rate-limit slot stay pending in Redis", n,
                 n == 1 ? "" : "s");
}
