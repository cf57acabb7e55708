/* Group commit of triggered events and their jobs to PostgreSQL, then the enqueue of the
 * committed jobs on the Redis partition streams; completes the HTTP requests of each batch.
 *
 * While one commit is in flight, new events accumulate; when it finishes, everything waiting
 * (up to COMMIT_MAX_EVENTS, COMMIT_MAX_JOBS and COMMIT_MAX_BYTES) goes in the next
 * single-statement transaction, so load raises the batch size rather than the latency. The
 * queue, batching and returned-id matching are common/gcommit.c's.
 *
 * Events with an Idempotency-Key go through a second group commit of their own, whose
 * statement also frees expired keys, inserts one event per key (the unique index arbitrates
 * between batches and brokers) and reports, for every event of the batch, the key's event
 * (docs/decisions.md 22). Events without a key never meet that statement.
 *
 * An event with FANOUT_DEFER_JOBS jobs or more (and no key) goes through a third one, which
 * commits it with its job list instead of its job rows, so its answer does not wait for
 * thousands of rows; once answered, the event goes to the fan-out commit on its own connection,
 * which writes the rows (SCHEMA_FANOUT_SQL) and enqueues them (docs/decisions.md 54). */
#include "commit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"
#include "gcommit.h"
#include "ids.h"
#include "jobmsg.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "schema.h"

static struct gcommit gc, gc_keyed, gc_deferred, gc_fanout;

static struct event_rec *rec_of(struct gcommit_node *n)
{
    return n ? GCOMMIT_ITEM(n, struct event_rec, gc) : NULL;
}

void event_rec_free(struct event_rec *e)
{
    for (size_t i = 0; i < e->njobs; i++)
        free(e->jobs[i].url);
    free(e->jobs);
    free(e->payload);
    free(e->idem);
    free(e);
}

/* The hourly counters of a batch (docs/decisions.md 29): one upsert per event name per batch,
 * into this connection's own row (no other transaction ever waits on it). ev(id, event_name)
 * are the events inserted, jb(event_id) their jobs. */
#define STATS_UPSERT                                                                               \
    "st AS (INSERT INTO stats_hourly (hour, event_name, backend, triggers, jobs) "                 \
    "  SELECT date_trunc('hour', now()), ev.event_name, pg_backend_pid(), count(*), "             \
    "    coalesce(sum(c.n), 0) "                                                                   \
    "  FROM ev LEFT JOIN (SELECT event_id, count(*) AS n FROM jb GROUP BY event_id) c "           \
    "    ON c.event_id = ev.id "                                                                   \
    "  GROUP BY ev.event_name ORDER BY ev.event_name "                                             \
    "  ON CONFLICT (hour, event_name, backend) DO UPDATE SET "                                     \
    "  triggers = stats_hourly.triggers + EXCLUDED.triggers, "                                     \
    "  jobs = stats_hourly.jobs + EXCLUDED.jobs) "

/* One statement = one transaction: the events, and the jobs whose subscription still takes
 * them (SQL_SUB_TAKES in common/schema.h: a stale index entry cannot fail the batch; a paused
 * subscription gets its jobs: they wait, decision 24), and the batch's hourly counters.
 * Returns the inserted job ids. */
static const char insert_sql[] =
    "WITH ev AS (INSERT INTO events (id, event_name, payload, tenant) "
    "  SELECT i, n, decode(p, 'hex'), tn FROM unnest($1::uuid[], $2::text[], $3::text[], "
    "  $9::text[]) AS t(i, n, p, tn) "
    "  RETURNING id, event_name, tenant), "
    "jb AS (INSERT INTO jobs (id, event_id, subscription_id, url, partition, event_name) "
    "SELECT u.id, u.ev, u.sub, u.url, u.part, " SQL_JOB_NAME("ev.event_name") " "
    "FROM unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], $8::int[]) "
    "  AS u(id, ev, sub, url, part) JOIN ev ON ev.id = u.ev "
    "JOIN subscriptions s ON s.id = u.sub AND " SQL_SUB_TAKES("ev.event_name", "ev.tenant") " "
    "RETURNING jobs.id, jobs.event_id), " STATS_UPSERT
    "SELECT id FROM jb";

/* The same for events with an Idempotency-Key ($10 keys, $11 hex SHA-256 of the payloads), in
 * four steps that one statement orders:
 * - f frees the batch's keys whose first use is older than SCHEMA_IDEMPOTENCY_TTL (looked up
 *   in the unique index); w reads f's count, so f has run to the end before w inserts a row,
 *   and the unique check no longer sees the freed keys.
 * - w inserts the first event of each key (in key order, the same in every broker, so two
 *   batches never wait on each other in a cycle), with its job count. A key already taken, by
 *   an earlier batch or by another broker's transaction (the unique index makes this one wait
 *   for it to end), is a conflict: the no-op DO UPDATE locks that row and returns it, even
 *   when it committed after this statement's snapshot, which a plain SELECT would not see.
 * - j inserts the jobs of the events w inserted, and only those (a join, not IN: the generic
 *   plan estimates tiny CTEs and made IN a nested loop, jobs x events comparisons).
 * - Rows: each inserted job (o NULL), then for each event of the batch its ordinal, the key's
 *   event (itself when inserted), that event's job count and whether the name and payload
 *   match. */
/* Written as an age so that it cannot use the purge's index on idempotency_at (a scan of
 * every expired key not purged yet): the batch's keys are looked up in the key index. */
#define KEY_EXPIRED "now() - idempotency_at >= " SCHEMA_IDEMPOTENCY_TTL
static const char keyed_sql[] =
    "WITH t AS MATERIALIZED (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], "
    "  $10::text[], $11::text[], $9::text[]) WITH ORDINALITY AS t(i, n, p, k, d, tn, o)), "
    "u AS MATERIALIZED (SELECT u.*, " SQL_JOB_NAME("t.n") " AS en "
    "  FROM unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], "
    "  $8::int[]) AS u(id, ev, sub, url, part) JOIN t ON t.i = u.ev "
    "  JOIN subscriptions s ON s.id = u.sub AND " SQL_SUB_TAKES("t.n", "t.tn") "), "
    "f AS (UPDATE events SET idempotency_key = NULL, idempotency_at = NULL, "
    "  idempotency_sha256 = NULL, idempotency_jobs = NULL "
    "  WHERE idempotency_key IS NOT NULL AND idempotency_key = ANY($10::text[]) "
    "  AND " KEY_EXPIRED " RETURNING 1), "
    "w AS (INSERT INTO events (id, event_name, payload, idempotency_key, idempotency_at, "
    "  idempotency_sha256, idempotency_jobs, tenant) "
    "  SELECT DISTINCT ON (t.k) t.i, t.n, decode(t.p, 'hex'), t.k, now(), decode(t.d, 'hex'), "
    "    coalesce(c.n, 0), t.tn "
    "  FROM t LEFT JOIN (SELECT ev, count(*)::int AS n FROM u GROUP BY ev) c ON c.ev = t.i "
    "  WHERE (SELECT count(*) FROM f) >= 0 "
    "  ORDER BY t.k, t.o "
    "  ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL "
    "  DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key "
    "  RETURNING id, event_name, idempotency_key, idempotency_sha256, idempotency_jobs, "
    "  xmax = 0 AS fresh), "
    "j AS (INSERT INTO jobs (id, event_id, subscription_id, url, partition, event_name) "
    "  SELECT u.id, u.ev, u.sub, u.url, u.part, u.en FROM u JOIN w ON w.id = u.ev "
    "  RETURNING id, event_id), "
    "ev AS (SELECT id, event_name FROM w WHERE fresh), jb AS (SELECT event_id FROM j), "
    STATS_UPSERT
    "SELECT id, NULL::bigint, NULL::uuid, NULL::int, NULL::bool, NULL::bool FROM j "
    "UNION ALL "
    "SELECT t.i, t.o, w.id, w.idempotency_jobs, w.event_name = t.n, "
    "  w.idempotency_sha256 = decode(t.d, 'hex') "
    "FROM t JOIN w ON w.idempotency_key = t.k";

/* Decision 54: the events of many jobs, each with its job list ($5: hex of
 * SCHEMA_FANOUT_ENTRY bytes per job, in id order) instead of its job rows; $6 the lists' job
 * counts, for the hourly stats. The subscription check is SCHEMA_FANOUT_SQL's, when the rows
 * are written. Returns the event ids. */
static const char deferred_sql[] =
    "WITH ev AS (INSERT INTO events (id, event_name, payload, tenant, fanout) "
    "  SELECT i, n, decode(p, 'hex'), tn, decode(l, 'hex') FROM unnest($1::uuid[], $2::text[], "
    "  $3::text[], $4::text[], $5::text[]) AS t(i, n, p, tn, l) "
    "  RETURNING id, event_name, tenant), "
    "jb AS (SELECT t.i AS event_id FROM unnest($1::uuid[], $6::int[]) AS t(i, c), "
    "  generate_series(1, t.c)), " STATS_UPSERT
    "SELECT id FROM ev";

static const char fanout_sql[] = SCHEMA_FANOUT_SQL;

/* Marks which jobs the statement inserted. */
static void mark_kept(const struct gcommit_batch *bt, const struct idset *returned)
{
    for (struct event_rec *e = rec_of(bt->head); e; e = rec_of(e->gc.next)) {
        for (size_t j = 0; j < e->njobs; j++)
            e->jobs[j].kept = idset_has(returned, e->jobs[j].id);
    }
}

/* One commit_enqueue call: its MULTIs outstanding, whether one failed, and whom to tell. */
struct enq {
    struct broker *b;
    char ctx[ID_LEN + 1]; /* request id, recovery id, "commit" or "enqueue" */
    int outstanding;
    bool failed;
    commit_enqueued_fn *done;
    void *priv;
};

static void enq_finish(struct enq *q)
{
    if (q->done)
        q->done(q->priv, !q->failed);
    struct broker *b = q->b;
    free(q);
    broker_work_done(b);
}

static void enqueued(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct enq *q = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        log_at(LOG_WARN, LOG_CTX_RECOVERY, q->ctx,
               "enqueue failed (%s): the jobs stay queued in PostgreSQL for the reconciler",
               reply && reply->str ? reply->str : "Redis connection lost");
        q->failed = true;
    } else {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_ERROR) {
                log_at(LOG_WARN, LOG_CTX_RECOVERY, q->ctx,
                       "enqueue step failed: %s (reconciler will requeue)", reply->element[i]->str);
                q->failed = true;
            }
    }
    if (--q->outstanding == 0)
        enq_finish(q);
}

static bool cmd(struct rds *r, struct rargs *a)
{
    return rargs_send(a, r, NULL, NULL) == 0;
}

/* Per partition: MULTI { SET payloads, XADD jobs, SADD live } EXEC, all on one hash tag. A
 * payload is set once per run of consecutive jobs of one event in a partition. */
void commit_enqueue(struct broker *b, const char *ctx, const struct enq_job *jobs, size_t njobs,
                    commit_enqueued_fn *done, void *priv)
{
    metrics_add(M_JOBS_CREATED, 0, njobs); /* every caller committed them first */
    struct enq *q = xcalloc(1, sizeof *q);
    q->b = b;
    snprintf(q->ctx, sizeof q->ctx, "%s", ctx ? ctx : "enqueue");
    q->done = done;
    q->priv = priv;
    q->outstanding = 1; /* ours until every MULTI is sent */
    b->outstanding++;
    struct rargs a = {0};
    struct buf msg = {0};
    char key[KEY_MAX], jobs_key[KEY_MAX], live_key[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)b->cfg.partitions; p++) {
        size_t jobs_len = key_jobs(jobs_key, p);
        size_t live_len = key_live(live_key, p);
        size_t n = 0;
        for (size_t j = 0; j < njobs; j++)
            n += jobs[j].part == p;
        if (n == 0)
            continue;
        rargs_adds(&a, "MULTI");
        bool ok = cmd(b->redis, &a);
        const char *payload_of = NULL; /* the event whose payload was set last */
        for (size_t j = 0; ok && j < njobs; j++) {
            const struct enq_job *jr = &jobs[j];
            if (jr->part != p)
                continue;
            /* no payload (too large to carry): the worker reads it from PostgreSQL */
            if (jr->payload && (!payload_of || strcmp(payload_of, jr->event) != 0)) {
                size_t klen = key_payload(key, p, jr->event);
                rargs_adds(&a, "SET");
                rargs_add(&a, key, klen);
                rargs_add(&a, jr->payload, jr->payload_len);
                rargs_adds(&a, "EX");
                rargs_addll(&a, b->cfg.payload_ttl);
                ok = cmd(b->redis, &a);
                payload_of = jr->event;
            }
            struct job_msg m = {.attempt = jr->attempt, .url = (char *)jr->url};
            snprintf(m.job, sizeof m.job, "%s", jr->id);
            snprintf(m.event, sizeof m.event, "%s", jr->event);
            snprintf(m.sub, sizeof m.sub, "%s", jr->sub);
            snprintf(m.name, sizeof m.name, "%s", jr->name);
            buf_reset(&msg);
            jobmsg_encode(&m, &msg);
            rargs_adds(&a, "XADD");
            rargs_add(&a, jobs_key, jobs_len);
            rargs_adds(&a, "*");
            rargs_adds(&a, KEYS_STREAM_FIELD);
            rargs_add(&a, msg.data, msg.len);
            ok = ok && cmd(b->redis, &a);
        }
        if (ok) {
            rargs_adds(&a, "SADD");
            rargs_add(&a, live_key, live_len);
            for (size_t j = 0; j < njobs; j++)
                if (jobs[j].part == p)
                    rargs_add(&a, jobs[j].id, ID_LEN);
            ok = cmd(b->redis, &a);
        }
        rargs_adds(&a, "EXEC");
        if (ok && rargs_send(&a, b->redis, enqueued, q) == 0) {
            q->outstanding++;
        } else {
            q->failed = true;
            log_at(LOG_WARN, LOG_CTX_RECOVERY, q->ctx,
                   "Redis is unavailable: %zu jobs stay queued in PostgreSQL for the "
                   "reconciler",
                   n);
        }
        rargs_reset(&a);
    }
    rargs_free(&a);
    buf_free(&msg);
    if (--q->outstanding == 0)
        enq_finish(q);
}

/* The jobs a committed batch inserted, to the streams. */
static void enqueue(struct broker *b, const struct gcommit_batch *bt)
{
    static struct enq_job *jobs;
    static size_t cap;
    size_t n = 0;
    for (struct event_rec *e = rec_of(bt->head); e; e = rec_of(e->gc.next)) {
        for (size_t j = 0; j < e->njobs; j++) {
            const struct job_rec *jr = &e->jobs[j];
            if (!jr->kept)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                jobs = xrealloc(jobs, cap * sizeof *jobs);
            }
            jobs[n++] = (struct enq_job){.id = jr->id, .event = e->id, .sub = jr->sub,
                                         .name = e->name, .url = jr->url, .part = jr->part,
                                         .attempt = 1, .payload = e->payload,
                                         .payload_len = e->payload_len};
        }
    }
    if (n)
        commit_enqueue(b, "commit", jobs, n, NULL, NULL);
}

/* "tenant": the event's tenant, or null for a global one (decision 44). */
static void tenant_json(struct buf *b, const char *tenant)
{
    if (tenant[0])
        buf_printf(b, "\"tenant\":\"%s\"", tenant); /* A-Z a-z 0-9 _ -: nothing to escape */
    else
        buf_adds(b, "\"tenant\":null");
}

/* The answer of one event of a committed batch: a new event with the jobs kept, or, for a key
 * already taken, that key's first event (202) or 422 when the name or payload differ. */
static void answer_committed(struct event_rec *e, struct buf *body)
{
    const struct idem *id = e->idem;
    if (id && !id->found) {
        http_error(e->r, 500, "internal", "the commit reported nothing on this keyed event");
        return;
    }
    if (id && strcmp(id->orig, e->id) != 0) {
        if (!id->same_name || !id->same_payload) {
            http_error(e->r, 422, "idempotency_key_reused",
                       "this Idempotency-Key was used within 24 hours with a different %s; "
                       "nothing was written",
                       !id->same_name && !id->same_payload ? "event name and payload"
                       : !id->same_name                    ? "event name"
                                                           : "payload");
            return;
        }
        buf_printf(body, "{\"eventId\":\"%s\",\"eventName\":\"%s\",", id->orig, e->name);
        tenant_json(body, e->tenant);
        buf_printf(body, ",\"jobs\":%ld}", id->orig_jobs);
        log_debug(e->r->id, "Idempotency-Key repeated: answered with event %s", id->orig);
        if (e->r->ev)
            evhttp_add_header(evhttp_request_get_output_headers(e->r->ev), "Idempotent-Replayed",
                              "true");
        http_reply(e->r, 202, body);
        return;
    }
    size_t k = 0;
    for (size_t j = 0; j < e->njobs; j++)
        k += (size_t)e->jobs[j].kept;
    buf_printf(body, "{\"eventId\":\"%s\",\"eventName\":\"%s\",", e->id, e->name);
    tenant_json(body, e->tenant);
    buf_printf(body, ",\"jobs\":%zu}", k);
    log_debug(e->r->id, "event %s committed with %zu jobs", e->id, k);
    http_reply(e->r, 202, body);
}

static size_t kept_jobs(const struct event_rec *e)
{
    size_t k = 0;
    for (size_t j = 0; j < e->njobs; j++)
        k += (size_t)e->jobs[j].kept;
    return k;
}

/* Decision 54: answered events whose job list was committed wait here while the deferred
 * commit has more events to answer (answers first: the rows would compete with its next
 * statement for PostgreSQL), at most FANOUT_HOLD_MS, then go to the fan-out commit. */
#define FANOUT_HOLD_MS 100
static struct gcommit_node *held, **held_tail = &held;
static int64_t held_since_ms;

/* Hands the held events to the fan-out commit, unless the deferred commit is still busy and
 * the oldest has waited less than FANOUT_HOLD_MS. */
static void fanout_release(struct broker *b)
{
    if (!held || ((gcommit_in_flight(&gc_deferred) || gcommit_waiting(&gc_deferred)) &&
                  clock_mono_ms() - held_since_ms < FANOUT_HOLD_MS))
        return;
    struct gcommit_node *n = held;
    held = NULL;
    held_tail = &held;
    while (n) {
        struct gcommit_node *next = n->next;
        struct event_rec *e = rec_of(n);
        if (gcommit_submit(&gc_fanout, n) != GCOMMIT_FITS) {
            log_at(LOG_WARN, LOG_CTX_RECOVERY, e->id,
                   "too many fan-outs wait for the database: the rows of this event's %zu "
                   "listed jobs are left to the reconciler",
                   e->gc.jobs);
            event_rec_free(e);
            broker_work_done(b);
        }
        n = next;
    }
}

/* An answered event whose job list was committed, to the fan-out. Counts as outstanding work
 * until its rows are written and enqueued (a drain waits for it). */
static void fanout_submit(struct broker *b, struct event_rec *e)
{
    e->r = NULL; /* answered */
    e->gc.jobs = kept_jobs(e);
    e->gc.next = NULL;
    b->outstanding++;
    if (!held)
        held_since_ms = clock_mono_ms();
    *held_tail = &e->gc;
    held_tail = &e->gc.next;
}

/* Enqueues what a committed batch inserted (a deferred batch: hands its events to the fan-out
 * instead) and answers (and frees) every event of it. */
static void finish(struct broker *b, const struct gcommit_batch *bt, PGresult *res,
                   const char *err, bool deferred)
{
    if (err) {
        log_warn("commit", "commit of %zu events failed: %s", bt->items, err);
    } else {
        log_debug("commit", "committed %zu events, %zu jobs%s, %zu bytes in one statement",
                  bt->items, bt->jobs, deferred ? " (listed)" : "", bt->bytes);
        if (!deferred)
            enqueue(b, bt);
    }
    struct buf body = {0};
    for (struct event_rec *e = rec_of(bt->head), *next; e; e = next) {
        next = rec_of(e->gc.next);
        if (err && !res)
            http_error(e->r, 503, "unavailable",
                       "the database is unavailable (%s); the event was not accepted", err);
        else if (err)
            http_error(e->r, 500, "internal", "the event could not be stored: %s", err);
        else
            answer_committed(e, &body);
        if (!err && deferred && kept_jobs(e))
            fanout_submit(b, e);
        else
            event_rec_free(e);
    }
}

static void committed(const struct gcommit_batch *bt, PGresult *res, const char *err,
                      const struct idset *returned, void *arg)
{
    if (!err)
        mark_kept(bt, returned);
    finish(arg, bt, res, err, false);
}

/* Every listed job is committed (the subscription check comes with the rows). */
static void committed_deferred(const struct gcommit_batch *bt, PGresult *res, const char *err,
                               const struct idset *returned, void *arg)
{
    (void)returned; /* the event ids */
    if (!err)
        for (struct event_rec *e = rec_of(bt->head); e; e = rec_of(e->gc.next))
            for (size_t j = 0; j < e->njobs; j++)
                e->jobs[j].kept = 1;
    finish(arg, bt, res, err, true);
    fanout_release(arg);
}

/* The fan-out's rows are written: enqueues the jobs it wrote (a job whose row the reconciler
 * wrote first is not returned, and the reconciler enqueues it), frees the events. */
static void fanned_out(const struct gcommit_batch *bt, PGresult *res, const char *err,
                       const struct idset *returned, void *arg)
{
    (void)res;
    struct broker *b = arg;
    if (err) {
        log_at(LOG_WARN, LOG_CTX_RECOVERY, "fanout",
               "writing the rows of %zu events' %zu listed jobs failed (%s): the reconciler "
               "writes them",
               bt->items, bt->jobs, err);
    } else {
        for (struct event_rec *e = rec_of(bt->head); e; e = rec_of(e->gc.next))
            for (size_t j = 0; j < e->njobs; j++)
                e->jobs[j].kept = e->jobs[j].kept && idset_has(returned, e->jobs[j].id);
        log_debug("commit", "fan-out: wrote the rows of %zu events' listed jobs (%zu)", bt->items,
                  bt->jobs);
        enqueue(b, bt);
    }
    for (struct event_rec *e = rec_of(bt->head), *next; e; e = next) {
        next = rec_of(e->gc.next);
        event_rec_free(e);
        broker_work_done(b);
    }
}

/* Reads the keyed statement's rows: the inserted jobs, and each event's outcome. */
static void committed_keyed(const struct gcommit_batch *bt, PGresult *res, const char *err,
                            const struct idset *returned, void *arg)
{
    (void)returned; /* column 0 mixes job and event ids: read here instead */
    static struct idset jobs;
    static struct event_rec **byord;
    static size_t cap;
    if (!err) {
        if (cap < bt->items) {
            cap = bt->items;
            byord = xrealloc(byord, cap * sizeof *byord);
        }
        size_t n = 0;
        for (struct event_rec *e = rec_of(bt->head); e; e = rec_of(e->gc.next))
            byord[n++] = e;
        idset_clear(&jobs);
        for (int i = 0; i < PQntuples(res); i++) {
            if (PQgetisnull(res, i, 1)) {
                idset_add(&jobs, PQgetvalue(res, i, 0));
                continue;
            }
            long o = strtol(PQgetvalue(res, i, 1), NULL, 10);
            if (o < 1 || (size_t)o > n)
                continue;
            struct idem *id = byord[o - 1]->idem;
            id->found = true;
            snprintf(id->orig, sizeof id->orig, "%s", PQgetvalue(res, i, 2));
            id->orig_jobs = strtol(PQgetvalue(res, i, 3), NULL, 10);
            id->same_name = PQgetvalue(res, i, 4)[0] == 't';
            id->same_payload = PQgetvalue(res, i, 5)[0] == 't';
        }
        idset_sort(&jobs);
        mark_kept(bt, &jobs);
    }
    finish(arg, bt, res, err, false);
}

enum {
    A_EV_ID,
    A_NAME,
    A_PAYLOAD,
    A_JOB_ID,
    A_JOB_EV,
    A_JOB_SUB,
    A_URL,
    A_PART,
    A_TENANT, /* decision 44: NULL for a global event */
    A_N,
    /* the keyed statement's two more */
    A_KEY = A_N,
    A_SHA256,
    A_KEYED_N
};

/* A hex buffer of at least n bytes, reused across batches: not freed and reallocated every
 * commit. */
static char *hex_buf(size_t n)
{
    static char *hex;
    static size_t hexcap;
    if (hexcap < n) {
        hexcap = n;
        hex = xrealloc(hex, hexcap);
    }
    return hex;
}

/* Appends the event's own columns (id, name, payload in hex, tenant or NULL) to the arrays at
 * the indexes `at` gives, in that order. */
static void add_event_columns(const struct event_rec *e, struct buf *arr, const int at[4])
{
    pgarr_add(&arr[at[0]], e->id, ID_LEN);
    pgarr_add(&arr[at[1]], e->name, strlen(e->name));
    char *hex = hex_buf(e->payload_len * 2 + 1);
    hex_encode((const unsigned char *)e->payload, e->payload_len, hex);
    pgarr_add(&arr[at[2]], hex, e->payload_len * 2);
    if (e->tenant[0])
        pgarr_add(&arr[at[3]], e->tenant, strlen(e->tenant));
    else
        pgarr_null(&arr[at[3]]);
}

/* Appends one event and its jobs to the statement's arrays. */
static bool add_event(struct gcommit_node *n, struct buf *arr, void *arg)
{
    (void)arg;
    struct event_rec *e = rec_of(n);
    static const int at[4] = {A_EV_ID, A_NAME, A_PAYLOAD, A_TENANT};
    add_event_columns(e, arr, at);
    for (size_t j = 0; j < e->njobs; j++) {
        struct job_rec *jr = &e->jobs[j];
        pgarr_add(&arr[A_JOB_ID], jr->id, ID_LEN);
        pgarr_add(&arr[A_JOB_EV], e->id, ID_LEN);
        pgarr_add(&arr[A_JOB_SUB], jr->sub, ID_LEN);
        pgarr_add(&arr[A_URL], jr->url, strlen(jr->url));
        pgarr_addll(&arr[A_PART], jr->part);
    }
    return true;
}

/* The same, with the event's key and payload digest. */
static bool add_keyed_event(struct gcommit_node *n, struct buf *arr, void *arg)
{
    struct event_rec *e = rec_of(n);
    add_event(n, arr, arg);
    pgarr_add(&arr[A_KEY], e->idem->key, strlen(e->idem->key));
    pgarr_add(&arr[A_SHA256], e->idem->sha256, sizeof e->idem->sha256 - 1);
    return true;
}

static const struct gcommit_ops commit_ops = {
    .stmt_name = "wh_commit",
    .sql = insert_sql,
    .items_are_rows = true,
    .nparams = A_N,
    .add = add_event,
    .done = committed,
    .linger = true,
};

enum { D_EV_ID, D_NAME, D_PAYLOAD, D_TENANT, D_LIST, D_COUNT, D_N };

/* Appends a UUID's 32 hex digits (its text form without the dashes). */
static char *uuid_hex(char *out, const char *id)
{
    for (const char *c = id; *c; c++)
        if (*c != '-')
            *out++ = *c;
    return out;
}

/* One deferred event: the event's columns and its job list (SCHEMA_FANOUT_ENTRY bytes per job,
 * hex), in job id order: ids are made in increasing order for one event, so it already is. */
static bool add_deferred(struct gcommit_node *n, struct buf *arr, void *arg)
{
    (void)arg;
    struct event_rec *e = rec_of(n);
    static const int at[4] = {D_EV_ID, D_NAME, D_PAYLOAD, D_TENANT};
    add_event_columns(e, arr, at);
    char *hex = hex_buf(e->njobs * SCHEMA_FANOUT_ENTRY * 2 + 1), *p = hex;
    for (size_t j = 0; j < e->njobs; j++) {
        p = uuid_hex(p, e->jobs[j].id);
        p = uuid_hex(p, e->jobs[j].sub);
        const unsigned char part[2] = {(unsigned char)(e->jobs[j].part >> 8),
                                       (unsigned char)e->jobs[j].part};
        hex_encode(part, sizeof part, p);
        p += 2 * sizeof part;
    }
    pgarr_add(&arr[D_LIST], hex, (size_t)(p - hex));
    pgarr_addll(&arr[D_COUNT], (long long)e->njobs);
    return true;
}

/* The fan-out's one parameter: the event ids. */
static bool add_fanout(struct gcommit_node *n, struct buf *arr, void *arg)
{
    (void)arg;
    pgarr_add(&arr[0], rec_of(n)->id, ID_LEN);
    return true;
}

static const struct gcommit_ops deferred_ops = {
    .stmt_name = "wh_commit_deferred",
    .sql = deferred_sql,
    .items_are_rows = true,
    .nparams = D_N,
    .add = add_deferred,
    .done = committed_deferred,
};

static const struct gcommit_ops fanout_ops = {
    .stmt_name = "wh_fanout",
    .sql = fanout_sql,
    .nparams = 1,
    .add = add_fanout,
    .done = fanned_out,
};

static const struct gcommit_ops keyed_ops = {
    .stmt_name = "wh_commit_keyed",
    .sql = keyed_sql,
    .items_are_rows = true,
    .nparams = A_KEYED_N,
    .add = add_keyed_event,
    .done = committed_keyed,
};

void commit_submit(struct broker *b, struct event_rec *e)
{
    if (!gc.ops) {
        struct gcommit_limits batch = {(size_t)b->cfg.commit_max_events,
                                       (size_t)b->cfg.commit_max_jobs,
                                       (size_t)b->cfg.commit_max_bytes};
        struct gcommit_limits pending = {(size_t)b->cfg.max_pending_events,
                                         (size_t)b->cfg.max_pending_jobs,
                                         (size_t)b->cfg.max_pending_bytes};
        gcommit_init(&gc, &commit_ops, b, b->pg_commit, &batch, &pending);
        gcommit_init(&gc_keyed, &keyed_ops, b, b->pg_commit, &batch, &pending);
        gcommit_init(&gc_deferred, &deferred_ops, b, b->pg_commit, &batch, &pending);
        struct gcommit_limits fanout_batch = {batch.items, batch.jobs, 0};
        gcommit_init(&gc_fanout, &fanout_ops, b, b->pg_fanout, &fanout_batch, &pending);
    }
    /* What the event adds to the statement: its payload (hex) and its jobs' URLs and ids. */
    size_t bytes = e->payload_len * 2;
    for (size_t j = 0; j < e->njobs; j++)
        bytes += strlen(e->jobs[j].url) + 3 * ID_LEN;
    if (e->idem) {
        bytes += strlen(e->idem->key) + sizeof e->idem->sha256;
        log_debug(e->r->id, "event with an Idempotency-Key goes to the keyed commit");
    }
    e->gc.jobs = e->njobs;
    e->gc.bytes = bytes;
    /* decision 54: refused while the fan-outs behind the commit are as many as the commit may
     * have waiting (their events are held in memory until their rows are written) */
    bool defer = !e->idem && b->cfg.fanout_defer_jobs > 0 &&
                 e->njobs >= (size_t)b->cfg.fanout_defer_jobs;
    enum gcommit_hit hit = defer ? gcommit_room(&gc_fanout, &e->gc) : GCOMMIT_FITS;
    /* e may be answered and freed inside (a send that fails at once) */
    if (hit == GCOMMIT_FITS)
        hit = gcommit_submit(e->idem ? &gc_keyed : defer ? &gc_deferred : &gc, &e->gc);
    if (hit == GCOMMIT_FITS)
        return;
    static const char *const what[] = {
        [GCOMMIT_ITEMS] = "events (MAX_PENDING_EVENTS)",
        [GCOMMIT_JOBS] = "jobs (MAX_PENDING_JOBS)",
        [GCOMMIT_BYTES] = "bytes (MAX_PENDING_BYTES)",
    };
    if (e->r->ev)
        evhttp_add_header(evhttp_request_get_output_headers(e->r->ev), "Retry-After", "1");
    http_error(e->r, 503, "unavailable",
               "too many %s are waiting for the database; nothing was written, retry shortly",
               what[hit]);
    event_rec_free(e);
}
