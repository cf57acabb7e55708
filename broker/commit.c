/* Group commit of triggered events and their jobs to PostgreSQL, then the enqueue of the
 * committed jobs on the Redis partition streams; completes the HTTP requests of each batch.
 *
 * While one commit is in flight, new events accumulate; when it finishes, everything waiting
 * (up to COMMIT_MAX_EVENTS) goes in the next single-statement transaction, so load raises the
 * batch size rather than the latency. */
#include "commit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jobmsg.h"
#include "keys.h"
#include "log.h"

struct batch {
    struct broker *b;
    struct event_rec *head;
    size_t nevents, njobs;
};

static struct event_rec *pending_head, *pending_tail;
static size_t pending_n;
static bool in_flight;

static void flush(struct broker *b);

void event_rec_free(struct event_rec *e)
{
    for (size_t i = 0; i < e->njobs; i++)
        free(e->jobs[i].url);
    free(e->jobs);
    free(e->payload);
    free(e);
}

/* One statement = one transaction: the events, and the jobs whose subscription is still
 * active (a stale index entry cannot fail the batch). Returns the inserted job ids. */
static const char insert_sql[] =
    "WITH ev AS (INSERT INTO events (id, event_name, payload) "
    "  SELECT i, n, decode(p, 'hex') FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(i, n, p)) "
    "INSERT INTO jobs (id, event_id, subscription_id, url, partition) "
    "SELECT u.id, u.ev, u.sub, u.url, u.part "
    "FROM unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], $8::int[]) "
    "  AS u(id, ev, sub, url, part) "
    "JOIN subscriptions s ON s.id = u.sub AND s.status = 'active' "
    "RETURNING jobs.id";

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

/* Marks which jobs the statement inserted. */
static void mark_kept(struct batch *bt, PGresult *res)
{
    int n = PQntuples(res);
    bool all = (size_t)n == bt->njobs;
    char *ids = NULL;
    if (!all) {
        ids = xmalloc((size_t)n * ID_LEN + 1);
        for (int i = 0; i < n; i++)
            memcpy(ids + (size_t)i * ID_LEN, PQgetvalue(res, i, 0), ID_LEN);
        qsort(ids, (size_t)n, ID_LEN, cmp_id);
    }
    for (struct event_rec *e = bt->head; e; e = e->next)
        for (size_t j = 0; j < e->njobs; j++)
            e->jobs[j].kept = all || bsearch(e->jobs[j].id, ids, (size_t)n, ID_LEN, cmp_id);
    free(ids);
}

static void enqueued(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct broker *b = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("commit",
                 "enqueue failed (%s): the jobs stay queued in PostgreSQL for the reconciler",
                 reply && reply->str ? reply->str : "Redis connection lost");
    } else {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_ERROR)
                log_warn("commit", "enqueue step failed: %s (reconciler will requeue)",
                         reply->element[i]->str);
    }
    broker_work_done(b);
}

static bool cmd(struct rds *r, struct rargs *a)
{
    return rargs_send(a, r, NULL, NULL) == 0;
}

/* Per partition: MULTI { SET payloads, XADD jobs, SADD live } EXEC, all on one hash tag. */
static void enqueue(struct batch *bt)
{
    struct broker *b = bt->b;
    struct rargs a = {0};
    struct buf msg = {0};
    char key[KEY_MAX], jobs_key[KEY_MAX], live_key[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)b->cfg.partitions; p++) {
        size_t jobs_len = key_jobs(jobs_key, p);
        size_t live_len = key_live(live_key, p);
        size_t n = 0;
        for (struct event_rec *e = bt->head; e; e = e->next)
            for (size_t j = 0; j < e->njobs; j++)
                n += e->jobs[j].kept && e->jobs[j].part == p;
        if (n == 0)
            continue;
        rargs_adds(&a, "MULTI");
        bool ok = cmd(b->redis, &a);
        for (struct event_rec *e = bt->head; ok && e; e = e->next) {
            bool payload_set = false;
            for (size_t j = 0; ok && j < e->njobs; j++) {
                struct job_rec *jr = &e->jobs[j];
                if (!jr->kept || jr->part != p)
                    continue;
                if (!payload_set) {
                    size_t klen = key_payload(key, p, e->id);
                    rargs_adds(&a, "SET");
                    rargs_add(&a, key, klen);
                    rargs_add(&a, e->payload, e->payload_len);
                    rargs_adds(&a, "EX");
                    rargs_addll(&a, b->cfg.payload_ttl);
                    ok = cmd(b->redis, &a);
                    payload_set = true;
                }
                struct job_msg m = {.attempt = 1, .url = jr->url};
                memcpy(m.job, jr->id, sizeof m.job);
                memcpy(m.event, e->id, sizeof m.event);
                memcpy(m.sub, jr->sub, sizeof m.sub);
                memcpy(m.name, e->name, sizeof m.name - 1);
                buf_reset(&msg);
                jobmsg_encode(&m, &msg);
                rargs_adds(&a, "XADD");
                rargs_add(&a, jobs_key, jobs_len);
                rargs_adds(&a, "*");
                rargs_adds(&a, KEYS_STREAM_FIELD);
                rargs_add(&a, msg.data, msg.len);
                ok = ok && cmd(b->redis, &a);
            }
        }
        if (ok) {
            rargs_adds(&a, "SADD");
            rargs_add(&a, live_key, live_len);
            for (struct event_rec *e = bt->head; e; e = e->next)
                for (size_t j = 0; j < e->njobs; j++)
                    if (e->jobs[j].kept && e->jobs[j].part == p)
                        rargs_add(&a, e->jobs[j].id, ID_LEN);
            ok = cmd(b->redis, &a);
        }
        rargs_adds(&a, "EXEC");
        if (ok && rargs_send(&a, b->redis, enqueued, b) == 0)
            b->outstanding++;
        else
            log_warn("commit", "Redis is unavailable: %zu jobs stay queued in PostgreSQL for the "
                               "reconciler",
                     n);
        rargs_reset(&a);
    }
    rargs_free(&a);
    buf_free(&msg);
}

static void committed(void *priv, PGresult *res, const char *err)
{
    struct batch *bt = priv;
    struct broker *b = bt->b;
    in_flight = false;
    if (err) {
        log_warn("commit", "commit of %zu events failed: %s", bt->nevents, err);
    } else {
        mark_kept(bt, res);
        enqueue(bt);
    }
    struct buf body = {0};
    for (struct event_rec *e = bt->head, *next; e; e = next) {
        next = e->next;
        if (err && !res) {
            http_error(e->r, 503, "unavailable",
                       "the database is unavailable (%s); the event was not accepted", err);
        } else if (err) {
            http_error(e->r, 500, "internal", "the event could not be stored: %s", err);
        } else {
            size_t k = 0;
            for (size_t j = 0; j < e->njobs; j++)
                k += (size_t)e->jobs[j].kept;
            buf_printf(&body, "{\"eventId\":\"%s\",\"eventName\":\"%s\",\"jobs\":%zu}", e->id,
                       e->name, k);
            log_debug(e->r->id, "event %s committed with %zu jobs", e->id, k);
            http_reply(e->r, 202, &body);
        }
        event_rec_free(e);
    }
    free(bt);
    flush(b);
}

static void flush(struct broker *b)
{
    if (in_flight || !pending_head)
        return;
    struct batch *bt = xcalloc(1, sizeof *bt);
    bt->b = b;
    /* Reused across batches: large buffers are not freed and reallocated every commit. */
    static struct buf ev_ids, names, payloads, job_ids, job_evs, job_subs, urls, parts;
    struct buf *arrays[] = {&ev_ids, &names, &payloads, &job_ids, &job_evs, &job_subs, &urls, &parts};
    for (size_t i = 0; i < 8; i++) {
        buf_reset(arrays[i]);
        pgarr_begin(arrays[i]);
    }
    struct event_rec **tail = &bt->head;
    static char *hex;
    static size_t hexcap;
    while (pending_head && bt->nevents < (size_t)b->cfg.commit_max_events) {
        struct event_rec *e = pending_head;
        pending_head = e->next;
        pending_n--;
        e->next = NULL;
        *tail = e;
        tail = &e->next;
        bt->nevents++;
        pgarr_add(&ev_ids, e->id, ID_LEN);
        pgarr_add(&names, e->name, strlen(e->name));
        if (hexcap < e->payload_len * 2 + 1) {
            hexcap = e->payload_len * 2 + 1;
            hex = xrealloc(hex, hexcap);
        }
        hex_encode((const unsigned char *)e->payload, e->payload_len, hex);
        pgarr_add(&payloads, hex, e->payload_len * 2);
        for (size_t j = 0; j < e->njobs; j++) {
            struct job_rec *jr = &e->jobs[j];
            pgarr_add(&job_ids, jr->id, ID_LEN);
            pgarr_add(&job_evs, e->id, ID_LEN);
            pgarr_add(&job_subs, jr->sub, ID_LEN);
            pgarr_add(&urls, jr->url, strlen(jr->url));
            pgarr_addll(&parts, jr->part);
            bt->njobs++;
        }
    }
    if (!pending_head)
        pending_tail = NULL;
    const char *params[8];
    for (size_t i = 0; i < 8; i++) {
        pgarr_end(arrays[i]);
        params[i] = arrays[i]->data;
    }
    in_flight = true;
    int rc = pg_query_prepared(b->pg_commit, "wh_commit", insert_sql, 8, params, NULL, NULL, 0, committed, bt);
    if (rc < 0)
        committed(bt, NULL, "database connection is down");
}

void commit_submit(struct broker *b, struct event_rec *e)
{
    if (pending_n >= (size_t)b->cfg.max_pending_events) {
        http_error(e->r, 503, "unavailable",
                   "too many events are waiting for the database; retry shortly");
        event_rec_free(e);
        return;
    }
    e->next = NULL;
    if (pending_tail)
        pending_tail->next = e;
    else
        pending_head = e;
    pending_tail = e;
    pending_n++;
    flush(b);
}
