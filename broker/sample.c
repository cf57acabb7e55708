/* The broker's metrics (docs/metrics.md, decision 37): GET /metrics, which renders the last
 * values and never queries anything, and the gauges sampled on the periodic tick: per partition
 * the stream length, pending entries, retry set size and the oldest entry's age from Redis, and
 * the dead jobs and subscriptions by state from PostgreSQL, one round at a time. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "ids.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"

/* Kinds of sampled Redis replies, packed with the partition into the callback's argument. */
enum { Q_XLEN, Q_PENDING, Q_RETRY, Q_OLDEST, Q_KINDS };

static int redis_waiting; /* replies of the current Redis round still to come */
static bool pg_waiting;   /* the database sample is in flight */
static int64_t next_ms;   /* monotonic: when the next round starts */
static int64_t pg_sent_ms, pg_next_ms; /* the database sample: sent; the next one's earliest */
static struct buf page;   /* the rendered text, reused across scrapes */

/* The database sample costs at most about 2 % of one PostgreSQL core: the next one waits at
 * least 50 times as long as the last one took (at most 10 minutes). Its cost grows with the
 * dead jobs it counts: at 10 million jobs, 200,000 of them dead, it took 30 ms with the index
 * in memory and 2.6 s without, every 5 s (decision 53). */
#define PG_SAMPLE_SPACING 50
#define PG_SAMPLE_SPACING_MAX_MS 600000

void sample_get(struct req *r)
{
    buf_reset(&page);
    metrics_render(&page);
    http_reply_typed(r, 200, METRICS_CONTENT_TYPE, "no-store", page.data, page.len);
}

/* The entry id's milliseconds ("<ms>-<seq>"); -1 when malformed. */
static int64_t entry_ms(const char *s, size_t n)
{
    int64_t ms = 0;
    size_t i = 0;
    for (; i < n && i < 19 && s[i] >= '0' && s[i] <= '9'; i++)
        ms = ms * 10 + (s[i] - '0');
    return i > 0 && i < n && s[i] == '-' ? ms : -1;
}

static void on_queue(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    uintptr_t arg = (uintptr_t)priv;
    size_t part = arg / Q_KINDS;
    redis_waiting--;
    if (!reply)
        return;   /* connection lost: the last sample stays */
    double v = 0; /* an error (NOGROUP: no stream yet) reads as empty */
    switch (arg % Q_KINDS) {
    case Q_XLEN:
    case Q_RETRY:
        if (reply->type == REDIS_REPLY_INTEGER)
            v = (double)reply->integer;
        metrics_set(arg % Q_KINDS == Q_XLEN ? M_QUEUE_STREAM : M_QUEUE_RETRY, part, v);
        break;
    case Q_PENDING: /* the summary form: [count, smallest id, greatest id, [consumers]] */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
            reply->element[0]->type == REDIS_REPLY_INTEGER)
            v = (double)reply->element[0]->integer;
        metrics_set(M_QUEUE_PENDING, part, v);
        break;
    case Q_OLDEST: /* XRANGE - + COUNT 1: [[id, fields]] or [] */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements >= 1 &&
            reply->element[0]->element[0]->type == REDIS_REPLY_STRING) {
            const redisReply *id = reply->element[0]->element[0];
            int64_t ms = entry_ms(id->str, id->len);
            int64_t age = ms < 0 ? 0 : clock_now_ms() - ms;
            v = age > 0 ? (double)age / 1000 : 0;
        }
        metrics_set(M_QUEUE_LAG, part, v);
        break;
    }
}

static void sample_queues(struct broker *b)
{
    char jobs[KEY_MAX], retry[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)b->cfg.partitions; p++) {
        size_t jl = key_jobs(jobs, p), rl = key_retry(retry, p);
        const char *xlen[] = {"XLEN", jobs}, *xpend[] = {"XPENDING", jobs, KEYS_GROUP},
                   *zcard[] = {"ZCARD", retry},
                   *xrange[] = {"XRANGE", jobs, "-", "+", "COUNT", "1"};
        size_t xlen_l[] = {4, jl}, xpend_l[] = {8, jl, strlen(KEYS_GROUP)}, zcard_l[] = {5, rl},
               xrange_l[] = {6, jl, 1, 1, 5, 1};
        struct {
            int argc;
            const char **argv;
            const size_t *lens;
        } cmds[Q_KINDS] = {[Q_XLEN] = {2, xlen, xlen_l},
                           [Q_PENDING] = {3, xpend, xpend_l},
                           [Q_RETRY] = {2, zcard, zcard_l},
                           [Q_OLDEST] = {6, xrange, xrange_l}};
        for (int k = 0; k < Q_KINDS; k++) {
            void *arg = (void *)(uintptr_t)(p * Q_KINDS + (unsigned)k);
            if (rds_cmd(b->redis, on_queue, arg, cmds[k].argc, cmds[k].argv, cmds[k].lens) < 0)
                return; /* not connected: the last sample stays */
            redis_waiting++;
        }
    }
}

/* Dead jobs: per subscription (deleted ones too: their rows stay), the range status = 'dead'
 * of jobs_subscription (subscription_id, status, id) (decision 27), an index-only scan of
 * exactly the dead jobs' entries plus one descent per subscription; no index of its own (one
 * more entry for every dead job to write, decision 28 dropped one) and never the heap of every
 * failed job (5 to 7 s at 10 M jobs, decision 37). Subscriptions: the table is small beside
 * jobs (7 ms for 1000). */
static const char db_sql[] =
    "SELECT (SELECT coalesce(sum(d.n), 0) FROM subscriptions a CROSS JOIN LATERAL "
    "    (SELECT count(*) AS n FROM jobs j WHERE j.subscription_id = a.id "
    "     AND j.status = 'dead') d), "
    "  count(*) FILTER (WHERE disabled_at IS NULL AND paused_at IS NULL), "
    "  count(*) FILTER (WHERE disabled_at IS NULL AND paused_at IS NOT NULL), "
    "  count(*) FILTER (WHERE disabled_at IS NOT NULL), "
    "  count(*) FILTER (WHERE disabled_at IS NULL AND paused_at IS NULL "
    "    AND circuit_open_until > now()) "
    "FROM subscriptions WHERE status = 'active'";

static void on_db(void *priv, PGresult *res, const char *err)
{
    const struct broker *b = priv;
    pg_waiting = false;
    int64_t now = clock_mono_ms(), took = now - pg_sent_ms;
    int64_t wait = took > PG_SAMPLE_SPACING_MAX_MS / PG_SAMPLE_SPACING ? PG_SAMPLE_SPACING_MAX_MS
                                                                       : took * PG_SAMPLE_SPACING;
    pg_next_ms = now + wait;
    if (wait > b->cfg.metrics_sample_ms)
        log_info("metrics", "the database gauges took %lld ms: the next sample in %lld s",
                 (long long)took, (long long)(wait / 1000));
    if (err) {
        log_warn("metrics", "sampling the database gauges failed: %s", err);
        return;
    }
    if (PQntuples(res) != 1 || PQnfields(res) != 5)
        return;
    metrics_set(M_JOBS_DEAD, 0, strtod(PQgetvalue(res, 0, 0), NULL));
    for (int s = 0; s < 4; s++)
        metrics_set(M_SUBSCRIPTIONS, (size_t)s, strtod(PQgetvalue(res, 0, s + 1), NULL));
}

void sample_tick(struct broker *b, int64_t now_mono_ms)
{
    metrics_set(M_REDIS_UP, 0, rds_up(b->redis));
    metrics_set(M_POSTGRES_UP, 0, pg_up(b->pg_commit) && pg_up(b->pg_fanout) && pg_up(b->pg_api));
    if (now_mono_ms < next_ms || b->draining)
        return;
    next_ms = now_mono_ms + b->cfg.metrics_sample_ms;
    if (redis_waiting == 0)
        sample_queues(b);
    if (!pg_waiting && now_mono_ms >= pg_next_ms &&
        pg_query_prepared(b->pg_api, "wh_metrics_sample", db_sql, 0, NULL, NULL, NULL, 0, on_db,
                          b) == 0) {
        pg_waiting = true;
        pg_sent_ms = now_mono_ms;
    }
}

void sample_start(struct broker *b)
{
    metrics_init(METRICS_BROKER, "broker", BROKER_VERSION, (unsigned)b->cfg.partitions);
}

void sample_free(void)
{
    buf_free(&page);
}
