/* Finding jobs Redis lost: the rows of jobs listed by a fan-out no broker finished are
 * written first (decision 54); then unfinished jobs (a cursor over the partial index) unchanged
 * for the grace period whose ids are missing from wh:{p}:live on two checks are re-enqueued (queued
 * ones on the stream, retrying ones in the retry set at their due time; those of a paused
 * subscription held again instead, common/held.h) after a compare-and-set on the row;
 * payloads missing for live jobs are restored. And the held jobs of subscriptions PostgreSQL
 * does not call paused are released (a resume whose Redis step failed, a broker that died
 * before it, a subscription deleted or disabled while paused), except an ordered one's jobs
 * waiting behind its head (only a stranded head is released). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "held.h"
#include "ids.h"
#include "jobmsg.h"
#include "pg.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "recon.h"
#include "schema.h"

enum { C_ID, C_EVENT, C_SUB, C_NAME, C_URL, C_PART, C_STATUS, C_ATTEMPTS, C_NEXT, C_UPDATED,
       C_CREATED, C_PAUSED };

static const char scan_sql[] =
    "SELECT j.id::text, j.event_id::text, j.subscription_id::text, e.event_name, j.url, "
    "j.partition, j.status, j.attempts, "
    "(extract(epoch FROM j.next_attempt_at) * 1000)::bigint, j.updated_at::text, "
    "j.created_at::text, "
    "coalesce(s.status = 'active' AND s.disabled_at IS NULL AND s.paused_at IS NOT NULL, false) "
    "FROM jobs j JOIN events e ON e.id = j.event_id "
    "LEFT JOIN subscriptions s ON s.id = j.subscription_id "
    "WHERE j.status IN ('queued', 'retrying') "
    "AND (j.created_at, j.id) > ($1::timestamptz, $2::uuid) "
    "ORDER BY j.created_at, j.id LIMIT $3::int";

/* Which of rows[] (indexes into res) are members of the partition's live set. */
static int live_members(struct recon *r, PGresult *res, const int *rows, int n, unsigned part,
                        bool *live)
{
    char key[KEY_MAX];
    struct rargs a = {0};
    rargs_adds(&a, "SMISMEMBER");
    rargs_add(&a, key, key_live(key, part));
    for (int i = 0; i < n; i++)
        rargs_add(&a, PQgetvalue(res, rows[i], C_ID), (size_t)PQgetlength(res, rows[i], C_ID));
    redisReply *rep = recon_redis(r, a.argc, a.argv, a.lens);
    rargs_free(&a);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || (int)rep->elements != n) {
        if (rep)
            log_error("jobs", "SMISMEMBER: unexpected reply%s%s", rep->str ? ": " : "",
                      rep->str ? rep->str : "");
        freeReplyObject(rep);
        return -1;
    }
    for (int i = 0; i < n; i++)
        live[i] = rep->element[i]->integer == 1;
    freeReplyObject(rep);
    return 0;
}

/* Reads an event's payload (binary). Caller PQclear()s. */
static PGresult *payload_of(struct recon *r, const char *event_id)
{
    const char *params[] = {event_id};
    PGresult *res = PQexecParams(r->pg, "SELECT payload FROM events WHERE id = $1::uuid", 1,
                                 NULL, params, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        PQclear(res);
        return NULL;
    }
    return res;
}

static bool send_all(struct recon *r, int argc, const char **argv, const size_t *lens)
{
    redisReply *rep = recon_redis(r, argc, argv, lens);
    bool ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep && !ok)
        log_error("jobs", "%s: %s", argv[0], rep->str);
    freeReplyObject(rep);
    return ok;
}

/* Compare-and-set on the row (only the reconciler that wins enqueues), then one MULTI. A job
 * of a paused subscription is held again (its due time, if retrying, is dropped: it runs when
 * the subscription is resumed). */
static int requeue(struct recon *r, PGresult *res, int row)
{
    const char *id = PQgetvalue(res, row, C_ID);
    const char *status = PQgetvalue(res, row, C_STATUS);
    bool retrying = strcmp(status, "retrying") == 0;
    bool paused = strcmp(PQgetvalue(res, row, C_PAUSED), "t") == 0;
    if (r->cfg.dry_run) {
        log_info(id, "would %s this %s job missing from Redis",
                 paused ? "hold (subscription paused)" : "re-enqueue", status);
        paused ? r->n.held++ : retrying ? r->n.rescheduled++ : r->n.requeued++;
        return 0;
    }
    const char *cas[] = {id, status, PQgetvalue(res, row, C_UPDATED)};
    PGresult *upd = recon_sql(r,
                              /* batch_id: a batch Redis lost no longer holds the job; it
                               * is batched again (decision 40) */
                              "UPDATE jobs SET updated_at = now(), batch_id = NULL "
                              "WHERE id = $1::uuid "
                              "AND status = $2 AND updated_at = $3::timestamptz RETURNING 1",
                              3, cas);
    if (!upd)
        return -1;
    bool won = PQntuples(upd) == 1;
    PQclear(upd);
    if (!won)
        return 0; /* the row moved on: someone else is handling it */
    PGresult *pl = payload_of(r, PQgetvalue(res, row, C_EVENT));
    if (!pl) {
        log_warn(id, "the job's event is gone; not re-enqueued");
        return 0;
    }
    unsigned part = (unsigned)strtoul(PQgetvalue(res, row, C_PART), NULL, 10);
    if (part >= (unsigned)r->cfg.partitions)
        part = 0;
    struct job_msg m = {.attempt = (int)strtol(PQgetvalue(res, row, C_ATTEMPTS), NULL, 10) + 1,
                        .url = PQgetvalue(res, row, C_URL)};
    memcpy(m.job, id, ID_LEN);
    memcpy(m.event, PQgetvalue(res, row, C_EVENT), ID_LEN);
    memcpy(m.sub, PQgetvalue(res, row, C_SUB), ID_LEN);
    snprintf(m.name, sizeof m.name, "%s", PQgetvalue(res, row, C_NAME));
    struct buf msg = {0};
    jobmsg_encode(&m, &msg);

    char pkey[KEY_MAX], qkey[KEY_MAX], lkey[KEY_MAX], hkey[KEY_MAX], ttl[24], due[24];
    size_t pl_len = key_payload(pkey, part, m.event);
    size_t ql = paused     ? key_held(qkey, part, m.sub)
                : retrying ? key_retry(qkey, part)
                           : key_jobs(qkey, part);
    size_t hl = key_held_subs(hkey, part);
    size_t ll = key_live(lkey, part);
    snprintf(ttl, sizeof ttl, "%ld", r->cfg.payload_ttl);
    long long next = PQgetisnull(res, row, C_NEXT) ? 0 : strtoll(PQgetvalue(res, row, C_NEXT), NULL, 10);
    long long now = clock_now_ms();
    snprintf(due, sizeof due, "%lld", paused ? 0 : next > now ? next : now);

    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", pkey, PQgetvalue(pl, 0, 0), "EX", ttl};
    size_t setl[] = {3, pl_len, (size_t)PQgetlength(pl, 0, 0), 2, strlen(ttl)};
    const char *xadd[] = {"XADD", qkey, "*", KEYS_STREAM_FIELD, msg.data};
    size_t xaddl[] = {4, ql, 1, strlen(KEYS_STREAM_FIELD), msg.len};
    const char *zadd[] = {"ZADD", qkey, due, msg.data};
    size_t zaddl[] = {4, ql, strlen(due), msg.len};
    const char *sadd[] = {"SADD", lkey, id};
    size_t saddl[] = {4, ll, ID_LEN};
    const char *hadd[] = {"SADD", hkey, m.sub};
    size_t haddl[] = {4, hl, ID_LEN};
    const char *exec[] = {"EXEC"};
    bool ok = send_all(r, 1, multi, NULL) && send_all(r, 5, set, setl) &&
              (retrying || paused ? send_all(r, 4, zadd, zaddl) : send_all(r, 5, xadd, xaddl)) &&
              (!paused || send_all(r, 3, hadd, haddl)) && send_all(r, 3, sadd, saddl) &&
              send_all(r, 1, exec, NULL);
    buf_free(&msg);
    PQclear(pl);
    if (!ok)
        return -1;
    log_info(id, "was missing from Redis: %s (attempt %d)",
             paused     ? "held again, its subscription is paused"
             : retrying ? "back in the retry set"
                        : "back on the stream",
             m.attempt);
    paused ? r->n.held++ : retrying ? r->n.rescheduled++ : r->n.requeued++;
    return 0;
}

/* Live jobs whose payload Redis no longer has (the workers would fall back to PostgreSQL). */
static int restore_payload(struct recon *r, PGresult *res, int row)
{
    unsigned part = (unsigned)strtoul(PQgetvalue(res, row, C_PART), NULL, 10);
    const char *event = PQgetvalue(res, row, C_EVENT);
    char key[KEY_MAX];
    size_t klen = key_payload(key, part, event);
    const char *ex[] = {"EXISTS", key};
    size_t exl[] = {6, klen};
    redisReply *rep = recon_redis(r, 2, ex, exl);
    if (!rep)
        return -1;
    bool present = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    if (present)
        return 0;
    r->n.payloads++;
    if (r->cfg.dry_run)
        return 0;
    PGresult *pl = payload_of(r, event);
    if (!pl)
        return 0;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", r->cfg.payload_ttl);
    /* NX: never overwrite; the bytes are the same anyway */
    const char *set[] = {"SET", key, PQgetvalue(pl, 0, 0), "EX", ttl, "NX"};
    size_t setl[] = {3, klen, (size_t)PQgetlength(pl, 0, 0), 2, strlen(ttl), 2};
    bool ok = send_all(r, 6, set, setl);
    PQclear(pl);
    return ok ? 0 : -1;
}

static int check_batch(struct recon *r, PGresult *res)
{
    int n = PQntuples(res);
    int *rows = xcalloc((size_t)n + 1, sizeof *rows);
    bool *live = xcalloc((size_t)n + 1, sizeof *live);
    int rc = 0;
    int64_t cutoff = clock_now_ms() - r->cfg.grace_ms;
    for (unsigned p = 0; p < (unsigned)r->cfg.partitions && rc == 0; p++) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            unsigned part = (unsigned)strtoul(PQgetvalue(res, i, C_PART), NULL, 10);
            if (part >= (unsigned)r->cfg.partitions)
                part = 0;
            if (part == p)
                rows[k++] = i;
        }
        if (k == 0)
            continue;
        if (live_members(r, res, rows, k, p, live) < 0) {
            rc = -1;
            break;
        }
        /* candidates: not live and unchanged for the grace period */
        int m = 0;
        for (int i = 0; i < k && rc == 0; i++) {
            if (live[i]) {
                rc = restore_payload(r, res, rows[i]);
                continue;
            }
            struct tm tm;
            memset(&tm, 0, sizeof tm);
            const char *upd = PQgetvalue(res, rows[i], C_UPDATED);
            /* updated_at::text is "YYYY-MM-DD HH:MM:SS.ffffff+00" in the session's zone; the
             * reconciler sets UTC, so the seconds compare directly. */
            if (strptime(upd, "%Y-%m-%d %H:%M:%S", &tm) == NULL)
                continue;
            int64_t upd_ms = (int64_t)timegm(&tm) * 1000;
            if (upd_ms <= cutoff)
                rows[m++] = rows[i];
        }
        if (rc < 0 || m == 0)
            continue;
        /* the second check, after a pause: absorbs jobs moving between structures */
        if (r->cfg.confirm_ms > 0)
            usleep((useconds_t)r->cfg.confirm_ms * 1000);
        if (live_members(r, res, rows, m, p, live) < 0) {
            rc = -1;
            break;
        }
        for (int i = 0; i < m && rc == 0; i++)
            if (!live[i])
                rc = requeue(r, res, rows[i]);
    }
    free(rows);
    free(live);
    return rc;
}

/* Decision 54: events committed with a job list whose rows no broker wrote within the grace
 * period (it stopped, or its statement failed) get them written here, RECONCILE_BATCH events
 * at a time; the scan that follows enqueues them like any job Redis lost. */
static int finish_fanouts(struct recon *r)
{
    static const char pending_sql[] =
        "SELECT coalesce(array_agg(id ORDER BY id), '{}')::text, count(*), "
        "coalesce(sum(length(fanout) / " SCHEMA_FANOUT_STRIDE "), 0) FROM (SELECT id, fanout FROM events "
        "WHERE fanout IS NOT NULL AND created_at < now() - $1::bigint * interval '1 ms' "
        "ORDER BY id LIMIT $2::int) e";
    char grace[24], batch[24];
    snprintf(grace, sizeof grace, "%ld", r->cfg.grace_ms);
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    for (;;) {
        const char *params[] = {grace, batch};
        PGresult *res = recon_sql(r, pending_sql, 2, params);
        if (!res)
            return -1;
        long events = strtol(PQgetvalue(res, 0, 1), NULL, 10);
        long listed = strtol(PQgetvalue(res, 0, 2), NULL, 10);
        if (events == 0 || r->cfg.dry_run) {
            if (events)
                log_info("fanout", "would write the rows of %ld jobs listed by %ld events whose "
                         "fan-out no broker finished", listed, events);
            r->n.fanouts += events;
            PQclear(res);
            return 0;
        }
        const char *ids[] = {PQgetvalue(res, 0, 0)};
        PGresult *w = recon_sql(r, SCHEMA_FANOUT_SQL, 1, ids);
        PQclear(res);
        if (!w)
            return -1;
        log_info("fanout",
                 "wrote the rows of %d of the %ld jobs listed by %ld events whose fan-out no "
                 "broker finished (a broker stopped, or its statement failed)",
                 PQntuples(w), listed, events);
        PQclear(w);
        r->n.fanouts += events;
        if (events < r->cfg.batch)
            return 0;
    }
}

int recon_jobs(struct recon *r)
{
    PGresult *tz = recon_sql(r, "SET TIME ZONE 'UTC'", 0, NULL);
    if (!tz)
        return -1;
    PQclear(tz);
    if (finish_fanouts(r) < 0)
        return -1;
    char after_ts[64] = "-infinity", after_id[40] = "00000000-0000-0000-0000-000000000000";
    char batch[24];
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    for (;;) {
        const char *params[] = {after_ts, after_id, batch};
        PGresult *res = recon_sql(r, scan_sql, 3, params);
        if (!res)
            return -1;
        int n = PQntuples(res);
        r->n.scanned += n;
        int rc = n ? check_batch(r, res) : 0;
        if (n) {
            snprintf(after_ts, sizeof after_ts, "%s", PQgetvalue(res, n - 1, C_CREATED));
            snprintf(after_id, sizeof after_id, "%s", PQgetvalue(res, n - 1, C_ID));
        }
        PQclear(res);
        if (rc < 0)
            return -1;
        if (n < r->cfg.batch)
            return 0;
    }
}

/* Moves every held message of sub (partition part) to the stream, HELD_RELEASE_CHUNK per
 * script call; ctl is left alone (this view of PostgreSQL may be older than a PATCH's). */
static int release(struct recon *r, unsigned part, const char *sub)
{
    char key[KEY_MAX];
    const char *zc[] = {"ZCARD", key};
    size_t zcl[] = {5, key_held(key, part, sub)};
    redisReply *rep = recon_redis(r, 2, zc, zcl);
    if (!rep)
        return -1;
    long long n = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    freeReplyObject(rep);
    if (r->cfg.dry_run) {
        log_sub(LOG_INFO, sub, "would release %lld held jobs: the subscription is not paused", n);
        r->n.released += n;
        return 0;
    }
    for (;;) {
        struct held_cmd c;
        held_release_cmd(&c, part, sub, HELD_RELEASE_CHUNK, -1);
        rep = recon_redis(r, c.argc, c.argv, c.lens);
        if (!rep || rep->type != REDIS_REPLY_INTEGER) {
            if (rep)
                log_sub(LOG_ERROR, sub, "releasing held jobs: %s",
                        rep->str ? rep->str : "bad reply");
            freeReplyObject(rep);
            return -1;
        }
        long long left = rep->integer;
        freeReplyObject(rep);
        if (left == 0)
            break;
    }
    log_sub(LOG_INFO, sub, "released %lld held jobs: the subscription is not paused in PostgreSQL",
            n);
    r->n.released += n;
    return 0;
}

/* An ordered subscription's jobs waiting for their turn (docs/decisions.md 33) share its held
 * zset. Those waiting behind an unfinished head stay; the smallest is released only while its
 * job id is at or below the head PostgreSQL gives (head, 36 characters; "" when it has no
 * unfinished job): the head itself, or a finished job, waiting means a release was lost (a
 * Redis failure between the head's outcome and its clean-up, an old snapshot). One script per
 * member (HELD_RELEASE_CHUNK 1: the lowest); a moved member cannot be moved twice, so a
 * release racing with a worker's only costs a comparison. */
static int release_ordered(struct recon *r, unsigned part, const char *sub, const char *head)
{
    char key[KEY_MAX];
    size_t kl = key_held(key, part, sub);
    long n = 0;
    for (;;) {
        const char *zr[] = {"ZRANGE", key, "0", "0"};
        size_t zrl[] = {6, kl, 1, 1};
        redisReply *rep = recon_redis(r, 4, zr, zrl);
        if (!rep)
            return -1;
        struct job_msg m = {0};
        bool behind = rep->type != REDIS_REPLY_ARRAY || rep->elements == 0 ||
                      rep->element[0]->type != REDIS_REPLY_STRING ||
                      (jobmsg_decode(rep->element[0]->str, rep->element[0]->len, &m) == 0 &&
                       head[0] && strcmp(m.job, head) > 0);
        jobmsg_clear(&m);
        freeReplyObject(rep);
        if (behind)
            break;
        if (r->cfg.dry_run) {
            log_info(sub, "would release a stranded job of this ordered subscription");
            r->n.released++;
            return 0;
        }
        struct held_cmd c;
        held_release_cmd(&c, part, sub, 1, -1);
        rep = recon_redis(r, c.argc, c.argv, c.lens);
        bool ok = rep && rep->type == REDIS_REPLY_INTEGER;
        if (rep && !ok)
            log_error(sub, "releasing waiting jobs: %s", rep->str ? rep->str : "bad reply");
        long long left = ok ? rep->integer : 0;
        freeReplyObject(rep);
        if (!ok)
            return -1;
        n++;
        if (left == 0)
            break;
    }
    if (n) {
        log_info(sub, "released %ld waiting job%s of this ordered subscription: its head was "
                      "waiting (a lost release)", n, n == 1 ? "" : "s");
        r->n.released += n;
    }
    return 0;
}

/* One partition's held-subs: the subscriptions PostgreSQL calls paused keep their held jobs;
 * so do ordered ones (release_ordered); every other one (active, disabled, deleted, unknown,
 * no longer ordered) has them released: delivered, or cancelled by the worker. */
static int held_partition(struct recon *r, unsigned part)
{
    char key[KEY_MAX];
    const char *sm[] = {"SMEMBERS", key};
    size_t sml[] = {8, key_held_subs(key, part)};
    redisReply *subs = recon_redis(r, 2, sm, sml);
    if (!subs)
        return -1;
    int rc = 0;
    if (subs->type != REDIS_REPLY_ARRAY || subs->elements == 0)
        goto out_free;
    struct buf arr = {0};
    pgarr_begin(&arr);
    for (size_t i = 0; i < subs->elements; i++) {
        redisReply *m = subs->element[i];
        if (m->type == REDIS_REPLY_STRING && id_valid(m->str, m->len))
            pgarr_add(&arr, m->str, m->len);
    }
    pgarr_end(&arr);
    const char *params[] = {arr.data};
    /* Rows: the paused ones (head NULL), and the ordered ones with their head (decision 33,
     * the worker's rule: the smallest id among the queued and the retrying jobs and the jobs
     * still listed by a waiting fan-out, decision 54; "" when none) */
    PGresult *paused = recon_sql(r,
                                 "SELECT id::text, CASE WHEN paused_at IS NULL THEN coalesce("
                                 SCHEMA_ORDERED_HEAD("s.id") "::text, '') END "
                                 "FROM subscriptions s WHERE id = ANY($1::uuid[]) "
                                 "AND status = 'active' AND disabled_at IS NULL "
                                 "AND (paused_at IS NOT NULL OR ordered)",
                                 1, params);
    buf_free(&arr);
    if (!paused) {
        rc = -1;
        goto out_free;
    }
    for (size_t i = 0; i < subs->elements && rc == 0; i++) {
        redisReply *m = subs->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        if (!id_valid(m->str, m->len)) {
            log_warn("held", "dropping a malformed member of %s: not a subscription id", key);
            const char *srem[] = {"SREM", key, m->str};
            size_t sreml[] = {4, strlen(key), m->len};
            if (!r->cfg.dry_run && !send_all(r, 3, srem, sreml))
                rc = -1;
            continue;
        }
        char sub[ID_LEN + 1];
        id_normalize(m->str, sub);
        int row = -1;
        for (int k = 0; k < PQntuples(paused) && row < 0; k++)
            if (strcmp(PQgetvalue(paused, k, 0), sub) == 0)
                row = k;
        if (row < 0)
            rc = release(r, part, sub);
        else if (!PQgetisnull(paused, row, 1))
            rc = release_ordered(r, part, sub, PQgetvalue(paused, row, 1));
    }
    PQclear(paused);
out_free:
    freeReplyObject(subs);
    return rc;
}

int recon_held(struct recon *r)
{
    for (unsigned p = 0; p < (unsigned)r->cfg.partitions; p++)
        if (held_partition(r, p) < 0)
            return -1;
    return 0;
}
