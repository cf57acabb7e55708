/* Preparing a batch of jobs for delivery: their payloads (Redis, else PostgreSQL), their
 * subscriptions' secrets and headers (a short-lived cache, else PostgreSQL), and their state in
 * PostgreSQL together with their subscription's current delivery state and settings, so a job
 * PostgreSQL records as finished is never sent again (a claim after a crash, a requeue, an old
 * Redis snapshot) and a pause, a disable or a new setting applies to every job read after it.
 * Then each job is decided: finished, cancelled, parked, or handed to the gate and delivery. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"
#include "ids.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "mail.h"
#include "metrics.h"
#include "schema.h"
#include "ttlcache.h"
#include "worker.h"

#include <cJSON.h>
#include <openssl/crypto.h>

/* ---- subscription cache ------------------------------------------------------------------ */

/* Bounded (common/ttlcache.h): SUBSCRIPTION_CACHE_TTL after it was read an entry is stale, the
 * tick sweeps stale entries every CACHE_SWEEP_MS, and beyond SUBSCRIPTION_CACHE_MAX entries the
 * one read longest ago goes. */
#define CACHE_SWEEP_MS 1000

static struct ttlcache *cache;
static int64_t cache_swept_ms;
static uint64_t cache_evictions_logged;

static void cache_drop(void *v)
{
    sub_unref(v);
}

static struct ttlcache *cache_get_or_make(void)
{
    if (!cache)
        cache = ttlcache_new((size_t)W.cfg.sub_cache_max, W.cfg.sub_cache_ttl_ms, cache_drop);
    return cache;
}

/* A new reference to the cached subscription, or NULL. */
static struct sub *cache_get(const char *id, int64_t now)
{
    struct sub *s = ttlcache_get(cache_get_or_make(), id, now);
    if (s)
        s->refs++;
    return s;
}

static void cache_put(const char *id, struct sub *s, int64_t now)
{
    s->refs++; /* the cache's */
    ttlcache_put(cache_get_or_make(), id, s, now);
}

void prep_tick(void)
{
    int64_t now = clock_mono_ms();
    if (!cache || now - cache_swept_ms < CACHE_SWEEP_MS)
        return;
    cache_swept_ms = now;
    size_t swept = ttlcache_sweep(cache, now);
    uint64_t evicted = ttlcache_evictions(cache) - cache_evictions_logged;
    cache_evictions_logged += evicted;
    if (swept || evicted)
        log_debug("prep",
                  "subscription cache: %zu stale entries swept, %llu evicted over the limit, "
                  "%zu cached",
                  swept, (unsigned long long)evicted, ttlcache_count(cache));
}

void prep_shutdown(void)
{
    ttlcache_free(cache);
    cache = NULL;
}

void sub_unref(struct sub *s)
{
    if (!s || --s->refs > 0)
        return;
    curl_slist_free_all(s->headers);
    free(s);
}

void subctl_unref(struct subctl *c)
{
    if (!c || --c->refs > 0)
        return;
    free(c->url);
    free(c->disabled_reason);
    free(c->fields);
    free(c);
}

void payload_unref(struct payload *p)
{
    if (p && --p->refs == 0)
        free(p);
}

/* ---- the batch --------------------------------------------------------------------------- */

struct batch {
    struct job *jobs;
    int waits;
    int mgets; /* payload MGETs outstanding; PostgreSQL is asked once they all answered */
    bool failed;
    bool offline; /* the job-state lookup found delivery offline: park instead of sending */
};

/* Not attempted now: back to the retry set due at due_ms, the same attempt (nothing recorded in
 * PostgreSQL); the promoter moves it to the stream then. Delivery offline (due now: the
 * promoter waits for online), the subscription slowed down or its circuit open. */
static void hold(struct job *j, int64_t due_ms)
{
    j->out = OUT_HOLD;
    j->next_ms = due_ms;
    outcome_submit(j);
}

static void cancel_disabled(struct job *j)
{
    j->out = OUT_CANCELLED;
    snprintf(j->error, sizeof j->error, "subscription disabled: %.200s",
             j->ctl->disabled_reason ? j->ctl->disabled_reason : "no reason given");
    outcome_submit(j);
}

/* The controls decided from what PostgreSQL said with the batch, after the existing checks
 * (docs/decisions.md 25): disabled, paused, held back (slowed down, circuit open), then the
 * gate (half-open probe, rate limit) or delivery. Counts what it parked in *held. */
static void dispatch_ctl(struct job *j, int64_t now, long *held)
{
    const struct subctl *c = j->ctl;
    int64_t hold_until =
        c->slow_until_ms > c->circuit_open_until_ms ? c->slow_until_ms : c->circuit_open_until_ms;
    bool half_open = c->circuit_open_until_ms && c->circuit_open_until_ms <= now;
    if (!c->has_rate)
        j->m.rslot = 0; /* the limit was removed since the slot was reserved: no wait */
    if (c->disabled) {
        j->m.rslot = 0;
        cancel_disabled(j);
    } else if (c->paused) {
        j->m.rslot = 0; /* a reservation is stale by the time a pause ends */
        j->out = OUT_PAUSED;
        metrics_inc(M_JOBS_HELD, MH_PAUSED);
        outcome_submit(j);
        (*held)++;
    } else if (c->ordered && strcmp(c->head, j->m.job) != 0) {
        /* not its turn (decision 33): waits for the head's final outcome, before any check
         * that could record an attempt */
        j->m.rslot = 0;
        j->out = OUT_WAIT;
        metrics_inc(M_JOBS_HELD, MH_ORDERED);
        outcome_submit(j);
    } else if (hold_until > now) {
        log_debug(j->m.job, "subscription %s %s until %lld: parked", j->m.sub,
                  hold_until == c->circuit_open_until_ms ? "has its circuit open"
                                                         : "is slowed down",
                  (long long)hold_until);
        j->m.rslot = 0;
        metrics_inc(M_JOBS_HELD,
                    hold_until == c->circuit_open_until_ms ? MH_CIRCUIT_OPEN : MH_SLOWDOWN);
        hold(j, hold_until);
    } else if (j->sub->keylen < 0) {
        /* Most likely a SECRETS_KEY mismatch: a failed attempt, retried on schedule, so
         * that fixing the configuration lets the job through. */
        j->m.rslot = 0;
        j->started_ms = clock_now_ms();
        j->duration_ms = 0;
        j->status_code = 0;
        j->retry_after_ms = -1;
        snprintf(j->error, sizeof j->error,
                 "the subscription's secret cannot be decrypted or is malformed (check "
                 "SECRETS_KEY and SECRETS_KEY_PREVIOUS on the workers)");
        outcome_failed(j);
    } else if (!j->payload) {
        j->m.rslot = 0;
        j->out = OUT_DEAD;
        snprintf(j->error, sizeof j->error, "the event no longer exists");
        outcome_submit(j);
    } else if (c->batch.max && !c->ordered && !mail_is(j)) {
        /* batching (decision 40): waits in the subscription's batch-pend zset, sent with others
         * as one request by whichever worker sees the batch full or due (worker/batch.c) */
        j->m.rslot = 0;
        j->out = OUT_BATCH;
        outcome_submit(j);
    } else if (half_open || c->ordered || c->has_rate || j->m.rslot) {
        gate_add(j, half_open || c->ordered); /* an ordered head takes the probe lock */
    } else {
        deliver_start(j);
    }
}

static void dispatch(struct batch *bt)
{
    struct job *j = bt->jobs, *next;
    long held = 0, paused = 0;
    int64_t now = clock_now_ms();
    for (; j; j = next) {
        next = j->next;
        j->next = NULL;
        if (bt->failed) {
            job_abandon(j, "a lookup failed");
        } else if (j->out != OUT_NONE) {
            outcome_submit(j);
        } else if (bt->offline) {
            j->m.rslot = 0;
            metrics_inc(M_JOBS_HELD, MH_OFFLINE);
            hold(j, now);
            held++;
        } else if (!j->sub || !j->sub->active || !j->ctl || j->ctl->gone) {
            j->out = OUT_CANCELLED;
            snprintf(j->error, sizeof j->error, "subscription deleted");
            outcome_submit(j);
        } else {
            dispatch_ctl(j, now, &paused);
        }
    }
    gate_flush();
    if (held)
        log_info("prep", "delivery is offline: %ld job%s parked until it is online", held,
                 held == 1 ? "" : "s");
    if (paused)
        log_debug("prep", "%ld job%s of paused subscriptions held", paused, paused == 1 ? "" : "s");
    free(bt);
}

static void wait_done(struct batch *bt)
{
    if (--bt->waits == 0)
        dispatch(bt);
}

static struct payload *payload_new(const char *p, size_t n)
{
    struct payload *pl = xmalloc(sizeof *pl + n + 1);
    pl->refs = 0;
    pl->len = n;
    memcpy(pl->data, p, n);
    pl->data[n] = '\0';
    return pl;
}

static void set_payload(struct batch *bt, const char *event, struct payload *pl)
{
    for (struct job *j = bt->jobs; j; j = j->next) {
        if (!j->payload && memcmp(j->m.event, event, ID_LEN) == 0) {
            j->payload = pl;
            pl->refs++;
        }
    }
    if (pl->refs == 0)
        free(pl);
}

/* ids of jobs matching pred, as a uuid[] literal; returns the count. */
static size_t collect(struct batch *bt, struct buf *arr, int what)
{
    size_t n = 0;
    pgarr_begin(arr);
    for (struct job *j = bt->jobs; j; j = j->next) {
        const char *id = what == 0 ? j->m.event : what == 1 ? j->m.sub : j->m.job;
        bool want = what == 0 ? !j->payload : what == 1 ? !j->sub : true;
        if (!want)
            continue;
        /* de-duplicate (batches are small) */
        bool seen = false;
        for (struct job *k = bt->jobs; k != j && !seen; k = k->next) {
            const char *kid = what == 0 ? k->m.event : what == 1 ? k->m.sub : k->m.job;
            bool kwant = what == 0 ? !k->payload : what == 1 ? !k->sub : true;
            seen = kwant && memcmp(kid, id, ID_LEN) == 0;
        }
        if (!seen) {
            pgarr_add(arr, id, ID_LEN);
            n++;
        }
    }
    pgarr_end(arr);
    return n;
}

static void payloads_from_db(void *priv, PGresult *res, const char *err)
{
    struct batch *bt = priv;
    if (err) {
        log_warn("prep", "cannot read payloads from PostgreSQL: %s", err);
        bt->failed = true;
    } else {
        for (int i = 0; i < PQntuples(res); i++) {
            if (PQgetlength(res, i, 0) != ID_LEN)
                continue;
            set_payload(bt, PQgetvalue(res, i, 0),
                        payload_new(PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1)));
        }
    }
    wait_done(bt);
}

static void fetch_payloads_db(struct batch *bt)
{
    struct buf arr = {0};
    if (collect(bt, &arr, 0) > 0) {
        static const char sql[] = "SELECT id::text, payload FROM events WHERE id = ANY($1::uuid[])";
        const char *params[] = {arr.data};
        bt->waits++;
        if (pg_query_prepared(W.pg_read, "wh_payloads", sql, 1, params, NULL, NULL, 1, payloads_from_db, bt) < 0) {
            bt->failed = true;
            bt->waits--;
        }
    }
    buf_free(&arr);
}

struct mget {
    struct batch *bt;
    unsigned part;
    int nkeys;
    char (*events)[ID_LEN + 1];
};

static void payloads_from_redis(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct mget *m = priv;
    struct batch *bt = m->bt;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || (int)reply->elements != m->nkeys) {
        log_warn("prep", "cannot read payloads from Redis: %s",
                 reply && reply->str ? reply->str : "connection lost");
        bt->failed = true;
    } else {
        for (int i = 0; i < m->nkeys; i++) {
            redisReply *v = reply->element[i];
            if (v->type == REDIS_REPLY_STRING)
                set_payload(bt, m->events[i], payload_new(v->str, v->len));
        }
    }
    if (--bt->mgets == 0 && !bt->failed)
        fetch_payloads_db(bt); /* whatever Redis did not have (expired, lost) */
    free(m->events);
    free(m);
    wait_done(bt);
}

static void fetch_payloads(struct batch *bt)
{
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        struct mget *m = xcalloc(1, sizeof *m);
        m->bt = bt;
        m->part = p;
        size_t cap = 0;
        for (struct job *j = bt->jobs; j; j = j->next)
            cap += j->part == p;
        if (cap == 0) {
            free(m);
            continue;
        }
        m->events = xcalloc(cap, sizeof *m->events);
        struct rargs a = {0};
        char(*keys)[KEY_MAX] = xmalloc(cap * KEY_MAX);
        rargs_adds(&a, "MGET");
        for (struct job *j = bt->jobs; j; j = j->next) {
            if (j->part != p)
                continue;
            bool seen = false;
            for (int k = 0; k < m->nkeys && !seen; k++)
                seen = memcmp(m->events[k], j->m.event, ID_LEN) == 0;
            if (seen)
                continue;
            memcpy(m->events[m->nkeys], j->m.event, ID_LEN + 1);
            rargs_add(&a, keys[m->nkeys], key_payload(keys[m->nkeys], p, j->m.event));
            m->nkeys++;
        }
        bt->waits++;
        bt->mgets++;
        if (rargs_send(&a, W.rd_cmd, payloads_from_redis, m) < 0) {
            bt->waits--;
            bt->mgets--;
            bt->failed = true;
            free(m->events);
            free(m);
        }
        rargs_free(&a);
        free(keys);
    }
}

/* The HMAC key of a stored secret column of subscription id: decrypted (or taken as it is when
 * written before encryption), then decoded from "whsec_...". The key length, or -1 (logged,
 * naming which secret). */
static int secret_key(const char *id, const char *stored, const char *which, unsigned char *key)
{
    char plain[SECRETBOX_PLAIN_MAX + 1], err[256];
    if (secretbox_open(&W.secrets, stored, id, plain, sizeof plain, err, sizeof err) < 0) {
        log_sub(LOG_ERROR, id, "the subscription's %s cannot be decrypted: %s", which, err);
        return -1;
    }
    int n = sign_secret_decode(plain, key);
    OPENSSL_cleanse(plain, sizeof plain);
    if (n < 0)
        log_sub(LOG_ERROR, id, "the subscription's %s is malformed", which);
    return n;
}

static struct sub *sub_from_row(PGresult *res, int i)
{
    return prep_sub_from_row(res, i, 0);
}

struct sub *prep_sub_from_row(PGresult *res, int i, int c)
{
    struct sub *s = xcalloc(1, sizeof *s);
    const char *id = PQgetvalue(res, i, c + 0);
    s->active = strcmp(PQgetvalue(res, i, c + 1), "active") == 0;
    /* A deleted subscription has no secret left: nothing to decode, nothing is sent. keylen
     * -1: unusable (the jobs fail and are retried). */
    s->keylen = s->active ? secret_key(id, PQgetvalue(res, i, c + 2), "secret", s->key) : 0;
    if (s->active && s->keylen >= 0 && !PQgetisnull(res, i, c + 4) &&
        !PQgetisnull(res, i, c + 5)) {
        s->prev_keylen =
            secret_key(id, PQgetvalue(res, i, c + 4), "previous secret", s->prev_key);
        s->prev_expires_ms = strtoll(PQgetvalue(res, i, c + 5), NULL, 10);
        if (s->prev_keylen < 0) {
            log_sub(LOG_ERROR, id, "signing with the current secret only");
            s->prev_keylen = 0;
        }
    }
    /* headers is jsonb NOT NULL: it always parses (allocations abort, see libmem.h). Sending
     * without the headers the subscriber asked for would be wrong, so never do. */
    cJSON *h = cJSON_Parse(PQgetvalue(res, i, c + 3));
    if (!cJSON_IsObject(h)) {
        log_sub(LOG_ERROR, id, "the subscription's headers are malformed; not sending");
        s->active = false;
    }
    for (const cJSON *it = h ? h->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it))
            continue;
        /* libcurl reads "Name:" with nothing but blanks after it as "do not send Name"; its
         * "Name;" form sends the header with an empty value (HTTP trims blanks anyway). */
        bool empty = it->valuestring[strspn(it->valuestring, " \t")] == '\0';
        char *line = empty ? xasprintf("%s;", it->string)
                           : xasprintf("%s: %s", it->string, it->valuestring);
        s->headers = xslist_append(s->headers, line);
        free(line);
    }
    cJSON_Delete(h);
    return s;
}

static void subs_from_db(void *priv, PGresult *res, const char *err)
{
    struct batch *bt = priv;
    if (err) {
        log_warn("prep", "cannot read subscriptions: %s", err);
        bt->failed = true;
    } else {
        int64_t now = clock_mono_ms();
        for (int i = 0; i < PQntuples(res); i++) {
            const char *id = PQgetvalue(res, i, 0);
            struct sub *s = sub_from_row(res, i);
            cache_put(id, s, now);
            for (struct job *j = bt->jobs; j; j = j->next) {
                if (!j->sub && memcmp(j->m.sub, id, ID_LEN) == 0) {
                    j->sub = s;
                    s->refs++;
                }
            }
        }
    }
    wait_done(bt);
}

static void fetch_subs(struct batch *bt)
{
    int64_t now = clock_mono_ms();
    for (struct job *j = bt->jobs; j; j = j->next)
        j->sub = cache_get(j->m.sub, now);
    struct buf arr = {0};
    if (collect(bt, &arr, 1) > 0) {
        static const char sql[] =
            "SELECT id::text, status, secret, headers::text, "
            "CASE WHEN previous_secret_expires_at > now() THEN previous_secret END, "
            "(extract(epoch FROM previous_secret_expires_at) * 1000)::bigint "
            "FROM subscriptions WHERE id = ANY($1::uuid[])";
        const char *params[] = {arr.data};
        bt->waits++;
        if (pg_query_prepared(W.pg_read, "wh_subs", sql, 1, params, NULL, NULL, 0, subs_from_db, bt) < 0) {
            bt->waits--;
            bt->failed = true;
        }
    }
    buf_free(&arr);
}

/* Columns of the job-state statement (fetch_states). */
enum {
    S_ID,
    S_STATUS,
    S_ATTEMPTS,
    S_NEXT,
    S_OFFLINE,
    S_SUB_STATUS,
    S_URL,
    S_PAUSED,
    S_DISABLED,
    S_REASON,
    S_RATE,
    S_RETRY,
    S_TIMEOUT,
    S_CIRCUIT,
    S_SLOW,
    S_SHAPE,
    S_FIELDS,
    S_ORDERED,
    S_HEAD,
    S_BATCHING
};

static int64_t ms_col(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* A jsonb column of controls (canonical, as the broker stored it) parsed with common/controls.h;
 * false (logged) when it does not parse: the global default applies then. */
static bool parse_ctl_json(const char *sub, const char *what, const char *text, bool rate,
                           struct subctl *c)
{
    char err[256];
    cJSON *v = cJSON_Parse(text);
    int rc = rate ? controls_rate_parse(v, &c->rate, NULL, err, sizeof err)
                  : controls_retry_parse(v, &c->retry, NULL, err, sizeof err);
    cJSON_Delete(v);
    if (rc < 0)
        log_sub(LOG_ERROR, sub, "the subscription's %s is not valid (%s); using the default", what,
                err);
    return rc == 0;
}

/* The subscription part of row i (S_SUB_STATUS onwards); sub is the job message's. */
static struct subctl *subctl_from_row(PGresult *res, int i, const char *sub)
{
    struct subctl *c = xcalloc(1, sizeof *c);
    c->gone = PQgetisnull(res, i, S_SUB_STATUS) ||
              strcmp(PQgetvalue(res, i, S_SUB_STATUS), "active") != 0;
    if (c->gone)
        return c;
    c->url = xstrdup(PQgetvalue(res, i, S_URL));
    c->paused = strcmp(PQgetvalue(res, i, S_PAUSED), "t") == 0;
    c->disabled = strcmp(PQgetvalue(res, i, S_DISABLED), "t") == 0;
    if (!PQgetisnull(res, i, S_REASON))
        c->disabled_reason = xstrdup(PQgetvalue(res, i, S_REASON));
    /* Most subscriptions have no controls: NULL columns, nothing parsed. */
    if (!PQgetisnull(res, i, S_RATE))
        c->has_rate = parse_ctl_json(sub, "rateLimit", PQgetvalue(res, i, S_RATE), true, c);
    if (!PQgetisnull(res, i, S_RETRY))
        c->has_retry = parse_ctl_json(sub, "retryPolicy", PQgetvalue(res, i, S_RETRY), false, c);
    if (!PQgetisnull(res, i, S_TIMEOUT)) {
        c->timeout_ms = strtol(PQgetvalue(res, i, S_TIMEOUT), NULL, 10) * 1000;
        /* A delivery longer than CLAIM_IDLE would be claimed and sent twice. */
        if (c->timeout_ms > W.cfg.claim_idle_ms - 1000)
            c->timeout_ms = W.cfg.claim_idle_ms - 1000;
    }
    c->circuit_open_until_ms = ms_col(res, i, S_CIRCUIT);
    c->slow_until_ms = ms_col(res, i, S_SLOW);
    /* The payload shape (decision 31): NULL columns for the default, nothing copied. A value
     * the CHECK constraint would not allow cannot be read; "{}" merges nothing. */
    if (!PQgetisnull(res, i, S_SHAPE) && shape_parse(PQgetvalue(res, i, S_SHAPE), &c->shape) < 0)
        c->shape = SHAPE_RAW;
    if (!PQgetisnull(res, i, S_FIELDS) && strcmp(PQgetvalue(res, i, S_FIELDS), "{}") != 0) {
        c->fields_len = (size_t)PQgetlength(res, i, S_FIELDS);
        c->fields = xstrdup(PQgetvalue(res, i, S_FIELDS));
    }
    /* ordered (decision 33): the head as of this read; NULL when not ordered. An ordered
     * subscription whose job is unfinished always has one (that job or an older one). */
    c->ordered = strcmp(PQgetvalue(res, i, S_ORDERED), "t") == 0;
    if (c->ordered && PQgetlength(res, i, S_HEAD) == ID_LEN)
        memcpy(c->head, PQgetvalue(res, i, S_HEAD), ID_LEN + 1);
    /* batching (decision 40): NULL when off, nothing parsed */
    if (!PQgetisnull(res, i, S_BATCHING)) {
        char err[256];
        cJSON *v = cJSON_Parse(PQgetvalue(res, i, S_BATCHING));
        if (controls_batching_parse(v, &c->batch, NULL, err, sizeof err) < 0) {
            log_sub(LOG_ERROR, sub, "the subscription's batching is not valid (%s); sending "
                    "its jobs one by one", err);
            c->batch.max = 0;
        }
        cJSON_Delete(v);
    }
    return c;
}

/* Gives j the batch's settings of its subscription: shared with an earlier job of the same
 * subscription, else read from row. */
static void attach_ctl(struct batch *bt, struct job *j, PGresult *res, int row)
{
    for (struct job *k = bt->jobs; k != j; k = k->next) {
        if (k->ctl && memcmp(k->m.sub, j->m.sub, ID_LEN) == 0) {
            j->ctl = k->ctl;
            j->ctl->refs++;
            return;
        }
    }
    j->ctl = subctl_from_row(res, row, j->m.sub);
    j->ctl->refs = 1;
    if (j->ctl->url && strcmp(j->ctl->url, j->m.url) != 0)
        log_debug(j->m.job, "the subscription's URL is now %s (the job was queued for %s)",
                  j->ctl->url, j->m.url);
}

static void states_from_db(void *priv, PGresult *res, const char *err)
{
    struct batch *bt = priv;
    if (err) {
        log_warn("prep", "cannot read job states: %s", err);
        bt->failed = true;
        wait_done(bt);
        return;
    }
    if (PQntuples(res) > 0) {
        /* The switch, read in the same statement (NULL: its row is missing; see offline.c). */
        bt->offline =
            PQgetisnull(res, 0, S_OFFLINE) || strcmp(PQgetvalue(res, 0, S_OFFLINE), "t") == 0;
        offline_seen(bt->offline);
    }
    for (struct job *j = bt->jobs; j; j = j->next) {
        int row = -1;
        for (int i = 0; i < PQntuples(res) && row < 0; i++)
            if (memcmp(PQgetvalue(res, i, S_ID), j->m.job, ID_LEN) == 0)
                row = i;
        if (row < 0) {
            log_warn(j->m.job, "job unknown to PostgreSQL; dropping it from Redis");
            j->out = OUT_SKIP;
            continue;
        }
        attach_ctl(bt, j, res, row);
        const char *st = PQgetvalue(res, row, S_STATUS);
        int attempts = (int)strtol(PQgetvalue(res, row, S_ATTEMPTS), NULL, 10);
        if (strcmp(st, "queued") != 0 && strcmp(st, "retrying") != 0) {
            log_info(j->m.job, "job is already %s; not sending it again", st);
            j->out = OUT_SKIP;
        } else if (strcmp(st, "retrying") == 0 && attempts >= j->m.attempt) {
            /* This attempt was recorded as failed already: a worker died before parking it,
             * or Redis returned an old entry. Re-parking is idempotent (same member). */
            j->out = OUT_RESCHED;
            j->m.rslot = 0;
            j->next_ms = PQgetisnull(res, row, S_NEXT)
                             ? clock_now_ms()
                             : strtoll(PQgetvalue(res, row, S_NEXT), NULL, 10);
            j->m.attempt = attempts; /* outcome parks attempt + 1 */
        }
    }
    wait_done(bt);
}

static void fetch_states(struct batch *bt)
{
    struct buf arr = {0};
    if (collect(bt, &arr, 2) > 0) {
        /* Column 5 is the delivery switch (an InitPlan run once per statement), so a batch
         * taken from Redis after it went offline is parked, not sent, even before this
         * worker's next poll of it (offline.c). The rest is the subscription's delivery state
         * and settings now (joined by primary key), so a PATCH applies to every job read after
         * it whatever the subscription cache holds. No extra round trip. "WHERE id": an index
         * scan (with enable_seqscan off, a table scan is costed at 10^10 and JIT-compiled).
         * The LATERAL ... LIMIT 1 keeps the join a primary-key probe per distinct subscription
         * (Memoize): a plain join was planned as a hash join over an index scan of every
         * subscription, whose cost grows with the table, not the batch. head: an ordered
         * subscription's oldest unfinished job, listed ones included (SCHEMA_ORDERED_HEAD,
         * decisions 33 and 54); the CASE leaves it unevaluated for the others. */
        static const char sql[] =
            "SELECT j.id::text, j.status, j.attempts, "
            "(extract(epoch FROM j.next_attempt_at) * 1000)::bigint, "
            "(SELECT status = 'offline' FROM delivery_switch WHERE id), "
            "s.status, s.url, s.paused_at IS NOT NULL, s.disabled_at IS NOT NULL, "
            "s.disabled_reason, s.rate_limit::text, s.retry_policy::text, s.timeout_seconds, "
            "(extract(epoch FROM s.circuit_open_until) * 1000)::bigint, "
            "(extract(epoch FROM s.slow_until) * 1000)::bigint, "
            "s.payload_shape, s.payload_fields::text, s.ordered, s.head::text, s.batching::text "
            "FROM jobs j LEFT JOIN LATERAL (SELECT x.*, CASE WHEN x.ordered THEN "
            SCHEMA_ORDERED_HEAD("x.id") " END AS head "
            "  FROM subscriptions x WHERE x.id = j.subscription_id LIMIT 1) s ON true "
            "WHERE j.id = ANY($1::uuid[])";
        const char *params[] = {arr.data};
        bt->waits++;
        if (pg_query_prepared(W.pg_read, "wh_states", sql, 1, params, NULL, NULL, 0, states_from_db, bt) < 0) {
            bt->waits--;
            bt->failed = true;
        }
    }
    buf_free(&arr);
}

void prep_batch(struct job *jobs)
{
    struct batch *bt = xcalloc(1, sizeof *bt);
    bt->jobs = jobs;
    bt->waits = 1; /* held until every lookup is sent */
    fetch_subs(bt);
    fetch_states(bt);
    fetch_payloads(bt);
    wait_done(bt);
}
