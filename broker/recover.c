/* Sending finished jobs again (issue 10, docs/decisions.md 28): the retry of one job, the
 * recovery of a subscription's dead jobs of a time window (in the background, in chunks,
 * resumable by any broker), and the replay of an event to its subscriptions as new jobs.
 * A tenant key reaches only its tenant's jobs, subscriptions and events; another's answer 404
 * and nothing is written (decision 46): each statement takes the key's tenant ($n, NULL for
 * an admin key) in the rows it reads before it writes.
 *
 * One mechanism re-sends a job: a single conditional UPDATE puts it back to 'queued' (attempts
 * kept, next_attempt_at NULL, updated_at now), then commit_enqueue puts its message (attempt
 * attempts + 1, the subscription's current URL) on its partition's stream as a trigger does.
 * PostgreSQL is the truth: when the Redis step fails the job is queued there and the
 * reconciler enqueues it, so the request still succeeds (logged). */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "evnames.h"
#include "codec.h"
#include "commit.h"
#include "filter.h"
#include "ids.h"
#include "libmem.h"
#include "log.h"
#include "rfc3339.h"
#include "sql.h"
#include "valid.h"

#define RECOVER_CHUNK_TEXT "500"                       /* jobs per statement of a recovery */
#define RECOVER_WINDOW_MAX_US (14LL * 86400 * 1000000) /* 14 days */
#define RECOVER_BUSY_MS 1000  /* another broker holds the recovery's row: look again then */
#define RECOVER_ERROR_MS 5000 /* a chunk failed (database down): try again then */
#define REPLAY_IDS_MAX 1000
/* Payloads up to this size are cached in Redis with the re-sent job; larger ones are read from
 * PostgreSQL by the worker (a chunk's memory stays bounded: 500 x 16 KiB). */
#define INLINE_PAYLOAD_MAX "16384"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The bytes of a hex column (NULL when SQL NULL or malformed); caller frees. */
static char *col_hex(PGresult *res, int row, int col, size_t *len)
{
    *len = 0;
    if (PQgetisnull(res, row, col))
        return NULL;
    size_t hl = (size_t)PQgetlength(res, row, col);
    char *out = xmalloc(hl / 2 + 1);
    long n = hex_decode(PQgetvalue(res, row, col), hl, (unsigned char *)out, hl / 2 + 1);
    if (n < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* The path's subscription: event name and id valid, else 400 naming them. */
static bool sub_path_ok(struct req *r)
{
    if (evname_kind(r->seg[0], strlen(r->seg[0])) == EVNAME_INVALID) {
        http_error(r, 400, "invalid_field",
                   "event name must be one of the subscription's event names or patterns (1 to "
                   "%d characters of A-Z a-z 0-9 . _ : -, or a pattern ending in .*, or *)",
                   EVENT_NAME_MAX);
        return false;
    }
    if (!id_valid(r->seg[1], strlen(r->seg[1]))) {
        http_error(r, 400, "invalid_field", "subscription id must be a UUID");
        return false;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[1], id);
    memcpy(r->seg[1], id, sizeof id);
    return true;
}

/* The jobs a statement re-queued or created, ready for commit_enqueue: their strings copied
 * out of the result (freed after the callback) into one block, their payloads decoded. */
struct sendrows {
    struct enq_job *jobs;
    size_t n;
    char **payloads; /* owned, one per job (NULL when borrowed from the previous job) */
    char *text;      /* one block holding every string */
};

static void sendrows_free(struct sendrows *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->payloads[i]);
    free(s->payloads);
    free(s->jobs);
    free(s->text);
    free(s);
}

/* Rows from column c0: job, event, subscription, event name, URL, attempt, partition, payload
 * (hex; NULL when not cached); rows with a NULL job are skipped. A job without a payload
 * shares the previous job's when both are of the same event (replay sends it on one row).
 * Caller frees with sendrows_free. */
static struct sendrows *sendrows_of(PGresult *res, int c0, const struct broker *b)
{
    struct sendrows *s = xcalloc(1, sizeof *s);
    int rows = PQntuples(res);
    size_t total = 0;
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < 5; c++)
            total += (size_t)PQgetlength(res, i, c0 + c) + 1;
    s->text = xmalloc(total + 1);
    s->jobs = xcalloc((size_t)rows + 1, sizeof *s->jobs);
    s->payloads = xcalloc((size_t)rows + 1, sizeof *s->payloads);
    char *t = s->text;
    const char *last_payload = NULL;
    size_t last_len = 0;
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, c0))
            continue;
        const char *str[5];
        for (int c = 0; c < 5; c++) {
            size_t l = (size_t)PQgetlength(res, i, c0 + c);
            memcpy(t, PQgetvalue(res, i, c0 + c), l);
            t[l] = '\0';
            str[c] = t;
            t += l + 1;
        }
        struct enq_job *j = &s->jobs[s->n];
        size_t plen;
        char *pl = col_hex(res, i, c0 + 7, &plen);
        s->payloads[s->n] = pl;
        if (pl) {
            last_payload = pl;
            last_len = plen;
        } else if (last_payload && s->n > 0 && strcmp(s->jobs[s->n - 1].event, str[1]) == 0 &&
                   s->jobs[s->n - 1].payload) {
            pl = (char *)last_payload;
            plen = last_len;
        }
        long part = strtol(PQgetvalue(res, i, c0 + 6), NULL, 10);
        *j = (struct enq_job){.id = str[0],
                              .event = str[1],
                              .sub = str[2],
                              .name = str[3],
                              .url = str[4],
                              .attempt = (int)strtol(PQgetvalue(res, i, c0 + 5), NULL, 10),
                              .part = part >= 0 && part < b->cfg.partitions ? (unsigned)part : 0,
                              .payload = pl,
                              .payload_len = plen};
        s->n++;
    }
    return s;
}

/* ---- POST /api/v0/jobs/<id>/retry ---------------------------------------------------------- */

struct retry {
    struct req *r;
    struct buf body;
    struct sendrows *rows;
};

static void retry_enqueued(void *priv, bool ok)
{
    struct retry *rt = priv;
    if (!ok)
        log_warn(rt->r->id,
                 "job %s is queued in PostgreSQL but not in Redis: the reconciler "
                 "enqueues it",
                 rt->r->seg[0]);
    sendrows_free(rt->rows);
    struct req *r = rt->r;
    struct buf body = rt->body;
    free(rt);
    http_reply(r, 202, &body);
}

/* Rows: the job's state before (status, subscription status, disabled), then the re-queued
 * job when the UPDATE took it. */
static void got_retry(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) < 1) {
        http_error(r, 404, "not_found", "no job %s", r->seg[0]);
        return;
    }
    if (PQgetisnull(res, 0, 3)) {
        const char *st = PQgetvalue(res, 0, 0);
        if (!strcmp(st, "queued") || !strcmp(st, "retrying"))
            http_error(r, 409, "conflict",
                       "job %s is still %s: only a dead, cancelled or delivered job can be "
                       "retried",
                       r->seg[0], st);
        else if (PQgetisnull(res, 0, 1) || strcmp(PQgetvalue(res, 0, 1), "active") != 0)
            http_error(r, 409, "subscription_deleted",
                       "the subscription of job %s is deleted: nothing to send it to", r->seg[0]);
        else if (PQgetvalue(res, 0, 2)[0] == 't')
            http_error(r, 409, "subscription_disabled",
                       "the subscription of job %s is disabled: re-enable it (PATCH "
                       "{\"status\":\"active\"}) before retrying",
                       r->seg[0]);
        else
            http_error(r, 409, "conflict", "job %s changed meanwhile (now %s); look again",
                       r->seg[0], st);
        return;
    }
    struct retry *rt = xcalloc(1, sizeof *rt);
    rt->r = r;
    struct buf *b = &rt->body;
    buf_printf(b, "{\"id\":\"%s\"", PQgetvalue(res, 0, 3));
    http_col_str(b, "eventId", res, 0, 4);
    http_col_str(b, "eventName", res, 0, 6);
    http_col_str(b, "subscriptionId", res, 0, 5);
    http_col_str(b, "webhookUrl", res, 0, 7);
    buf_adds(b, ",\"status\":\"queued\"");
    buf_printf(b, ",\"attempts\":%ld", strtol(PQgetvalue(res, 0, 8), NULL, 10) - 1);
    http_col_num(b, "nextAttempt", res, 0, 8);
    http_col_num(b, "lastStatusCode", res, 0, 11);
    http_col_str(b, "lastError", res, 0, 12);
    http_col_str(b, "createdAt", res, 0, 13);
    http_col_str(b, "updatedAt", res, 0, 14);
    buf_addc(b, '}');
    log_info(r->id, "job %s re-queued for attempt %s", r->seg[0], PQgetvalue(res, 0, 8));
    rt->rows = sendrows_of(res, 3, r->b);
    commit_enqueue(r->b, r->id, rt->rows->jobs, rt->rows->n, retry_enqueued, rt);
}

void recover_retry(struct req *r)
{
    if (!id_valid(r->seg[0], strlen(r->seg[0]))) {
        http_error(r, 400, "invalid_field", "job id must be a UUID");
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[0], id);
    memcpy(r->seg[0], id, sizeof id);
    static const char sql[] =
        "WITH j0 AS (SELECT j.status, s.status AS sst, s.disabled_at IS NOT NULL AS dis "
        "  FROM jobs j LEFT JOIN subscriptions s ON s.id = j.subscription_id WHERE j.id = $1 "
        "  AND ($2::text IS NULL OR s.tenant = $2)), "
        "u AS (UPDATE jobs j SET status = 'queued', next_attempt_at = NULL, batch_id = NULL, updated_at = now() "
        "  FROM subscriptions s WHERE j.id = $1 AND j.status IN ('dead', 'cancelled', 'delivered') "
        "  AND s.id = j.subscription_id AND s.status = 'active' AND s.disabled_at IS NULL "
        "  AND ($2::text IS NULL OR s.tenant = $2) "
        "  RETURNING j.*, s.url AS surl) "
        "SELECT j0.status, j0.sst, j0.dis, u.id, u.event_id, u.subscription_id, e.event_name, "
        "  u.surl, u.attempts + 1, u.partition, "
        "  CASE WHEN length(e.payload) <= " INLINE_PAYLOAD_MAX
        " THEN encode(e.payload, 'hex') END, "
        "  u.last_status_code, u.last_error, " SQL_TS("u.created_at") ", " SQL_TS(
            "u.updated_at") " "
                            "FROM j0 LEFT JOIN u ON true LEFT JOIN events e ON e.id = u.event_id";
    const char *params[] = {r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 2, params, NULL, NULL, 0, got_retry, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* ---- the recovery runner ------------------------------------------------------------------- */

/* A recovery this broker is working through: its row read once (the window, the subscription,
 * the cursor), then one chunk statement, its enqueue, the next, until PostgreSQL calls it done
 * or failed. The values go to each chunk as parameters of an unprepared statement, so the
 * planner sees them and walks the subscription's 'dead' range of jobs_subscription in its
 * order from the cursor (with the values hidden in a generic plan or an InitPlan it estimated
 * a few rows, and sorted every remaining dead job of the window for each chunk). */
struct runner {
    struct broker *b;
    char id[ID_LEN + 1];
    char sub[ID_LEN + 1];
    char since[48], until[48], created[48]; /* timestamptz as PostgreSQL prints them */
    char cursor_at[48], cursor_id[ID_LEN + 1];
    struct event *timer;
    bool loaded; /* the fields above hold the row (as last read or moved by a chunk) */
    struct sendrows *rows;
    struct runner *next;
};

static struct runner *runners;

static void runner_free(struct runner *x)
{
    for (struct runner **p = &runners; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    if (x->timer)
        event_free(x->timer);
    free(x);
}

static void runner_step(struct runner *x);

static void on_runner_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    runner_step(arg);
}

static void runner_later(struct runner *x, long ms)
{
    if (!x->timer)
        x->timer = xnonnull(evtimer_new(x->b->base, on_runner_timer, x), "evtimer_new");
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(x->timer, &tv);
}

static void copy_col(char *out, size_t n, PGresult *res, int row, int col, const char *null)
{
    snprintf(out, n, "%s", PQgetisnull(res, row, col) ? null : PQgetvalue(res, row, col));
}

#define CURSOR_START_AT "-infinity"
#define CURSOR_START_ID "00000000-0000-0000-0000-000000000000"

static void got_row(void *priv, PGresult *res, const char *err)
{
    struct runner *x = priv;
    if (err) {
        log_at(LOG_WARN, LOG_CTX_RECOVERY, x->id, "cannot read the recovery (%s)", err);
        if (x->b->draining || !strcmp(err, "shutting down"))
            runner_free(x);
        else
            runner_later(x, RECOVER_ERROR_MS);
        return;
    }
    if (PQntuples(res) < 1) {
        runner_free(x); /* finished (or failed) meanwhile */
        return;
    }
    copy_col(x->sub, sizeof x->sub, res, 0, 0, "");
    copy_col(x->since, sizeof x->since, res, 0, 1, "");
    copy_col(x->until, sizeof x->until, res, 0, 2, "");
    copy_col(x->created, sizeof x->created, res, 0, 3, "");
    copy_col(x->cursor_at, sizeof x->cursor_at, res, 0, 4, CURSOR_START_AT);
    copy_col(x->cursor_id, sizeof x->cursor_id, res, 0, 5, CURSOR_START_ID);
    x->loaded = true;
    runner_step(x);
}

static void chunk_enqueued(void *priv, bool ok)
{
    struct runner *x = priv;
    if (!ok)
        log_at(LOG_WARN, LOG_CTX_RECOVERY, x->id,
               "recovery: %zu re-queued jobs not in Redis; the reconciler enqueues them",
               x->rows->n);
    sendrows_free(x->rows);
    x->rows = NULL;
    runner_step(x);
}

/* Rows: the recovery's state after the chunk and its new cursor (NULL when the row is locked
 * by another broker's chunk, not running any more, or its cursor is not the one this broker
 * read), its state before, then the chunk's re-queued jobs in creation order. */
static void got_chunk(void *priv, PGresult *res, const char *err)
{
    struct runner *x = priv;
    if (err) {
        log_at(LOG_WARN, LOG_CTX_RECOVERY, x->id, "recovery chunk failed (%s)", err);
        if (x->b->draining || !strcmp(err, "shutting down"))
            runner_free(x);
        else
            runner_later(x, RECOVER_ERROR_MS);
        return;
    }
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        if (PQntuples(res) >= 1 && !PQgetisnull(res, 0, 4) &&
            !strcmp(PQgetvalue(res, 0, 4), "running")) {
            /* another broker holds it or moved it on: read the row again in a while */
            x->loaded = false;
            runner_later(x, RECOVER_BUSY_MS);
            return;
        }
        runner_free(x);
        return;
    }
    const char *st = PQgetvalue(res, 0, 0);
    copy_col(x->cursor_at, sizeof x->cursor_at, res, 0, 2, CURSOR_START_AT);
    copy_col(x->cursor_id, sizeof x->cursor_id, res, 0, 3, CURSOR_START_ID);
    x->rows = sendrows_of(res, 5, x->b);
    log_at(LOG_DEBUG, LOG_CTX_RECOVERY, x->id, "recovery chunk: %zu jobs re-queued, %s done, %s",
           x->rows->n, PQgetvalue(res, 0, 1), st);
    if (strcmp(st, "running") != 0) {
        log_at(LOG_INFO, LOG_CTX_RECOVERY, x->id, "recovery %s: %s jobs re-sent", st,
               PQgetvalue(res, 0, 1));
        if (x->rows->n)
            commit_enqueue(x->b, x->id, x->rows->jobs, x->rows->n, NULL, NULL);
        sendrows_free(x->rows);
        runner_free(x);
        return;
    }
    commit_enqueue(x->b, x->id, x->rows->jobs, x->rows->n, chunk_enqueued, x);
}

/* One chunk in one statement: lock the recovery's row (SKIP LOCKED: another broker's chunk is
 * under way) if it is still at the cursor this broker knows, take the next RECOVER_CHUNK jobs
 * after the cursor that are dead, created in the window and dead before the recovery began,
 * re-queue those still dead, move the cursor and the count, and end the recovery when the
 * chunk was short (or fail it when the subscription is no longer live). */
static const char chunk_sql[] =
    "WITH r AS (SELECT x.id, coalesce(s.status = 'active' AND s.disabled_at IS NULL, false) "
    "  AS live FROM recoveries x LEFT JOIN subscriptions s ON s.id = x.subscription_id "
    "  WHERE x.id = $1 AND x.status = 'running' "
    "  AND coalesce(x.cursor_at, '" CURSOR_START_AT "') = $6::timestamptz "
    "  AND coalesce(x.cursor_id, '" CURSOR_START_ID "') = $7::uuid "
    "  FOR UPDATE OF x SKIP LOCKED), "
    "c AS (SELECT j.id, j.created_at FROM jobs j "
    "  WHERE j.subscription_id = $2 AND j.status = 'dead' AND j.id >= wh_uuid_at($3) "
    "  AND j.id < wh_uuid_at($4) AND j.id > $7::uuid "
    "  AND j.updated_at <= $5::timestamptz AND (SELECT live FROM r) "
    "  ORDER BY j.id LIMIT " RECOVER_CHUNK_TEXT "), "
    "u AS (UPDATE jobs j SET status = 'queued', next_attempt_at = NULL, batch_id = NULL, updated_at = now() "
    "  FROM c WHERE j.id = c.id AND j.status = 'dead' "
    "  RETURNING j.id, j.event_id, j.subscription_id, j.attempts, j.partition, j.created_at), "
    "l AS (SELECT created_at, id FROM c ORDER BY id DESC LIMIT 1), "
    "p AS (UPDATE recoveries x SET done = x.done + (SELECT count(*) FROM u), "
    "  cursor_at = coalesce((SELECT created_at FROM l), x.cursor_at), "
    "  cursor_id = coalesce((SELECT id FROM l), x.cursor_id), "
    "  status = CASE WHEN NOT r.live THEN 'failed' "
    "    WHEN (SELECT count(*) FROM c) < " RECOVER_CHUNK_TEXT " THEN 'done' ELSE 'running' END, "
    "  error = CASE WHEN NOT r.live THEN 'the subscription was disabled or deleted' END, "
    "  finished_at = CASE WHEN NOT r.live OR (SELECT count(*) FROM c) < " RECOVER_CHUNK_TEXT
    "    THEN now() END, "
    "  updated_at = now() FROM r WHERE x.id = r.id "
    "  RETURNING x.status, x.done, x.cursor_at::text, x.cursor_id) "
    "SELECT p.status, p.done, p.cursor_at, p.cursor_id, "
    "  (SELECT status FROM recoveries WHERE id = $1), "
    "  v.id, v.event_id, v.subscription_id, v.event_name, v.url, v.attempts + 1, v.partition, "
    "  v.payload "
    "FROM (SELECT 1) one LEFT JOIN p ON true LEFT JOIN ("
    "  SELECT u.*, e.event_name, s.url, CASE WHEN length(e.payload) <= " INLINE_PAYLOAD_MAX
    "    THEN encode(e.payload, 'hex') END AS payload "
    "  FROM u JOIN events e ON e.id = u.event_id JOIN subscriptions s ON s.id = u.subscription_id"
    ") v ON true ORDER BY v.id";

/* The next step: read the row when not known, else send a chunk. */
static void runner_step(struct runner *x)
{
    if (x->b->draining) {
        log_at(LOG_INFO, LOG_CTX_RECOVERY, x->id,
               "recovery paused by the shutdown; a broker resumes it at start-up");
        runner_free(x);
        return;
    }
    int rc;
    if (!x->loaded) {
        static const char sql[] =
            "SELECT subscription_id, since::text, until::text, created_at::text, "
            "cursor_at::text, cursor_id FROM recoveries WHERE id = $1 AND status = 'running'";
        const char *params[] = {x->id};
        rc = pg_query(x->b->pg_api, sql, 1, params, NULL, NULL, 0, got_row, x);
    } else {
        const char *params[] = {x->id,      x->sub,       x->since,    x->until,
                                x->created, x->cursor_at, x->cursor_id};
        rc = pg_query(x->b->pg_api, chunk_sql, 7, params, NULL, NULL, 0, got_chunk, x);
    }
    if (rc < 0)
        runner_later(x, RECOVER_ERROR_MS);
}

/* Starts working on recovery id unless this broker already is. */
static void runner_start(struct broker *b, const char *id)
{
    for (struct runner *x = runners; x; x = x->next)
        if (!strcmp(x->id, id))
            return;
    struct runner *x = xcalloc(1, sizeof *x);
    x->b = b;
    snprintf(x->id, sizeof x->id, "%s", id);
    x->next = runners;
    runners = x;
    log_at(LOG_INFO, LOG_CTX_RECOVERY, x->id, "working on recovery %s", id);
    runner_step(x);
}

static void got_running(void *priv, PGresult *res, const char *err)
{
    struct broker *b = priv;
    if (err) {
        log_warn("recover", "cannot list running recoveries: %s", err);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        runner_start(b, PQgetvalue(res, i, 0));
}

void recover_resume(struct broker *b)
{
    static const char sql[] =
        "SELECT id FROM recoveries WHERE status = 'running' ORDER BY created_at";
    if (pg_query(b->pg_api, sql, 0, NULL, NULL, NULL, 0, got_running, b) < 0)
        log_warn("recover", "cannot list running recoveries: the database is not connected");
}

/* ---- POST /api/v0/webhooks/<name>/<id>/recover ---------------------------------------------- */

struct rstart {
    struct req *r;
    char rid[ID_LEN + 1];
};

static void recovery_json(struct buf *b, PGresult *res, int row)
{
    buf_printf(b, "{\"id\":\"%s\"", PQgetvalue(res, row, 0));
    http_col_str(b, "subscriptionId", res, row, 1);
    http_col_str(b, "status", res, row, 2);
    http_col_num(b, "count", res, row, 3);
    http_col_num(b, "total", res, row, 3);
    http_col_num(b, "done", res, row, 4);
    http_col_str(b, "since", res, row, 5);
    http_col_str(b, "until", res, row, 6);
    http_col_str(b, "error", res, row, 7);
    http_col_str(b, "createdAt", res, row, 8);
    http_col_str(b, "updatedAt", res, row, 9);
    http_col_str(b, "finishedAt", res, row, 10);
    buf_addc(b, '}');
}

#define SQL_RECOVERY_COLS(x)                                                                       \
    x "id, " x "subscription_id, " x "status, " x "total, " x                                      \
      "done, " SQL_TS(x "since") ", " SQL_TS(x "until") ", " x "error, " SQL_TS(                   \
          x "created_at") ", " SQL_TS(x "updated_at") ", " SQL_TS(x "finished_at")

/* Rows: the subscription (status, disabled) and, when it is live, the recovery inserted or the
 * running one of the same window. */
static void got_start(void *priv, PGresult *res, const char *err)
{
    struct rstart *s = priv;
    struct req *r = s->r;
    char rid[ID_LEN + 1];
    memcpy(rid, s->rid, sizeof rid);
    free(s);
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) < 1) {
        http_error(r, 404, "not_found", "no subscription %s for event %s", r->seg[1], r->seg[0]);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "active") != 0) {
        http_error(r, 409, "subscription_deleted",
                   "subscription %s is deleted: nothing to send its jobs to", r->seg[1]);
        return;
    }
    if (PQgetvalue(res, 0, 1)[0] == 't') {
        http_error(r, 409, "subscription_disabled",
                   "subscription %s is disabled: re-enable it (PATCH {\"status\":\"active\"}) "
                   "before recovering",
                   r->seg[1]);
        return;
    }
    if (PQgetisnull(res, 0, 2)) {
        http_error(r, 409, "conflict",
                   "a recovery of this window was started at the same moment; send the request "
                   "again to get its id");
        return;
    }
    bool created = !strcmp(PQgetvalue(res, 0, 2), rid);
    if (created)
        log_info(r->id, "recovery %s of subscription %s: %s dead jobs", rid, r->seg[1],
                 PQgetvalue(res, 0, 5));
    struct buf b = {0};
    buf_printf(&b, "{\"id\":\"%s\"", PQgetvalue(res, 0, 2));
    http_col_str(&b, "subscriptionId", res, 0, 3);
    http_col_str(&b, "status", res, 0, 4);
    http_col_num(&b, "count", res, 0, 5);
    http_col_num(&b, "total", res, 0, 5);
    http_col_num(&b, "done", res, 0, 6);
    http_col_str(&b, "since", res, 0, 7);
    http_col_str(&b, "until", res, 0, 8);
    http_col_str(&b, "createdAt", res, 0, 9);
    buf_printf(&b, ",\"created\":%s}", created ? "true" : "false");
    if (!strcmp(PQgetvalue(res, 0, 4), "running"))
        runner_start(r->b, PQgetvalue(res, 0, 2));
    http_reply(r, created ? 202 : 200, &b);
}

/* A string field holding an RFC 3339 time; 0 (absent: *present false), -1 after a 400. */
static int body_ts(struct req *r, cJSON *doc, const char *field, bool *present, int64_t *us)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    *present = v && !cJSON_IsNull(v);
    if (!*present)
        return 0;
    if (!cJSON_IsString(v) || rfc3339_parse(v->valuestring, us) < 0) {
        http_error(r, 400, "invalid_field",
                   "%s must be an RFC 3339 time such as \"2026-01-31T12:00:00Z\"", field);
        return -1;
    }
    return 0;
}

/* Microseconds since the epoch as a bigint parameter: exact (a double of seconds is not). */
static void us_text(int64_t us, char *out, size_t n)
{
    snprintf(out, n, "%lld", (long long)us);
}

void recover_start(struct req *r)
{
    if (!sub_path_ok(r))
        return;
    cJSON *doc = http_body_object(r);
    if (!doc)
        return;
    for (cJSON *f = doc->child; f; f = f->next)
        if (strcmp(f->string, "since") != 0 && strcmp(f->string, "until") != 0) {
            http_error(r, 400, "invalid_field", "unknown field %.64s (expected since, until)",
                       f->string);
            cJSON_Delete(doc);
            return;
        }
    bool has_since, has_until;
    int64_t since, until;
    if (body_ts(r, doc, "since", &has_since, &since) < 0 ||
        body_ts(r, doc, "until", &has_until, &until) < 0) {
        cJSON_Delete(doc);
        return;
    }
    cJSON_Delete(doc);
    if (!has_since) {
        http_error(r, 400, "invalid_field", "since is required (an RFC 3339 time)");
        return;
    }
    if (!has_until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        until = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    if (until < since) {
        http_error(r, 400, "invalid_field", "until must not be before since");
        return;
    }
    if (until - since > RECOVER_WINDOW_MAX_US) {
        http_error(r, 400, "invalid_field",
                   "until - since must be at most 14 days (the window of one recovery)");
        return;
    }
    char since_t[40], until_t[40];
    us_text(since, since_t, sizeof since_t);
    us_text(until, until_t, sizeof until_t);
    struct rstart *s = xcalloc(1, sizeof *s);
    s->r = r;
    id_new(s->rid);
    /* The running recovery of the same window is read without a lock (a broker's chunk may
     * hold its row for a while): found, it is the answer; else one is inserted. Two requests
     * racing for the same window: the unique index keeps one, the other answers 409. */
    static const char sql[] =
        "WITH s AS (SELECT id, status, disabled_at FROM subscriptions "
        "  WHERE id = $1 AND $2 = ANY(event_names) AND ($6::text IS NULL OR tenant = $6)), "
        "ex AS (SELECT id, subscription_id, status, total, done, since, until, created_at "
        "  FROM recoveries WHERE subscription_id = $1 AND status = 'running' "
        "  AND since = (timestamptz 'epoch' + $4::bigint * interval '1 microsecond') "
        "  AND until = (timestamptz 'epoch' + $5::bigint * interval '1 microsecond')), "
        "ins AS (INSERT INTO recoveries (id, subscription_id, since, until, total) "
        "  SELECT $3, s.id, (timestamptz 'epoch' + $4::bigint * interval '1 microsecond'), "
        "    (timestamptz 'epoch' + $5::bigint * interval '1 microsecond'), "
        "    (SELECT count(*) FROM jobs j WHERE j.subscription_id = s.id AND j.status = 'dead' "
        "     AND j.id >= wh_uuid_at(timestamptz 'epoch' + $4::bigint * interval '1 microsecond') "
        "     AND j.id < wh_uuid_at(timestamptz 'epoch' + $5::bigint * interval '1 microsecond')) "
        "  FROM s WHERE s.status = 'active' AND s.disabled_at IS NULL "
        "  AND NOT EXISTS (SELECT 1 FROM ex) "
        "  ON CONFLICT (subscription_id, since, until) WHERE status = 'running' DO NOTHING "
        "  RETURNING id, subscription_id, status, total, done, since, until, created_at), "
        "v AS (SELECT * FROM ins UNION ALL SELECT * FROM ex) "
        "SELECT s.status, s.disabled_at IS NOT NULL, v.id, v.subscription_id, v.status, "
        "  v.total, v.done, " SQL_TS("v.since") ", " SQL_TS("v.until") ", " SQL_TS(
            "v.created_at") " FROM s LEFT JOIN v ON true";
    const char *params[] = {r->seg[1], r->seg[0], s->rid, since_t, until_t, req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 6, params, NULL, NULL, 0, got_start, s) < 0) {
        free(s);
        http_db_error(r, NULL, "not connected");
    }
}

/* ---- GET /api/v0/webhooks/<name>/<id>/recover/<rid> ----------------------------------------- */

static void got_recovery(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) < 1) {
        http_error(r, 404, "not_found", "no recovery %s for subscription %s", r->seg[2], r->seg[1]);
        return;
    }
    struct buf b = {0};
    recovery_json(&b, res, 0);
    http_reply(r, 200, &b);
}

void recover_get(struct req *r)
{
    if (!sub_path_ok(r))
        return;
    if (!id_valid(r->seg[2], strlen(r->seg[2]))) {
        http_error(r, 400, "invalid_field", "recovery id must be a UUID");
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[2], id);
    memcpy(r->seg[2], id, sizeof id);
    static const char sql[] = "SELECT " SQL_RECOVERY_COLS(
        "x.") " FROM recoveries x "
              "JOIN subscriptions s ON s.id = x.subscription_id "
              "WHERE x.id = $1 AND x.subscription_id = $2 AND $3 = ANY(s.event_names) "
              "AND ($4::text IS NULL OR s.tenant = $4)";
    const char *params[] = {r->seg[2], r->seg[1], r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 4, params, NULL, NULL, 0, got_recovery, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* ---- POST /api/v0/events/<id>/replay ---------------------------------------------------- */

struct replay {
    struct req *r;
    struct buf body;
    struct sendrows *rows;
};

static void replay_enqueued(void *priv, bool ok)
{
    struct replay *rp = priv;
    if (!ok)
        log_warn(rp->r->id,
                 "replayed jobs of event %s are queued in PostgreSQL but not in "
                 "Redis: the reconciler enqueues them",
                 rp->r->seg[0]);
    sendrows_free(rp->rows);
    struct req *r = rp->r;
    struct buf body = rp->body;
    free(rp);
    http_reply(r, 202, &body);
}

/* Rows: whether the event exists, the refused ids (comma-separated, NULL when none), then the
 * new jobs (the payload on the first row only). */
static void got_replay(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) < 1 || PQgetvalue(res, 0, 0)[0] != 't') {
        http_error(r, 404, "not_found", "no event %s", r->seg[0]);
        return;
    }
    if (!PQgetisnull(res, 0, 1)) {
        http_error(r, 400, "invalid_field",
                   "subscriptionIds: not live subscriptions of this event's name: %.400s "
                   "(nothing was written)",
                   PQgetvalue(res, 0, 1));
        return;
    }
    struct replay *rp = xcalloc(1, sizeof *rp);
    rp->r = r;
    rp->rows = sendrows_of(res, 2, r->b);
    struct buf *b = &rp->body;
    buf_printf(b, "{\"eventId\":\"%s\",\"jobs\":[", r->seg[0]);
    for (size_t i = 0; i < rp->rows->n; i++) {
        const struct enq_job *j = &rp->rows->jobs[i];
        buf_printf(b, "%s{\"id\":\"%s\",\"subscriptionId\":\"%s\",\"webhookUrl\":", i ? "," : "",
                   j->id, j->sub);
        json_escape(b, j->url, strlen(j->url));
        buf_addc(b, '}');
    }
    buf_printf(b, "],\"count\":%zu}", rp->rows->n);
    log_info(r->id, "event %s replayed as %zu new jobs", r->seg[0], rp->rows->n);
    commit_enqueue(r->b, r->id, rp->rows->jobs, rp->rows->n, replay_enqueued, rp);
}

/* Creates the new jobs: for the subscriptions in ids (a uuid[] literal), or for every live
 * subscription that receives the event's name (decision 39) when ids is NULL. */
static void replay_run(struct req *r, const char *ids)
{
    char parts[24];
    snprintf(parts, sizeof parts, "%ld", r->b->cfg.partitions);
    /* Nothing is inserted when one listed id is not a live subscription that receives the
     * event's name (one of its entries matches it: wh_name_keys, decision 39) and is of the
     * event's tenant (the subscriptions its trigger reached: the global ones for an event
     * without a tenant; decision 46). $4: the key's tenant (NULL: any event). */
    static const char sql[] =
        "WITH e AS (SELECT id, event_name, payload, tenant FROM events WHERE id = $1 "
        "  AND ($4::text IS NULL OR tenant = $4)), "
        "w AS (SELECT DISTINCT unnest($2::uuid[]) AS id), "
        "s AS (SELECT s.id, s.url, s.plain_until FROM e JOIN subscriptions s "
        "  ON s.event_names && wh_name_keys(e.event_name) "
        "  AND s.status = 'active' AND s.disabled_at IS NULL "
        "  AND s.tenant IS NOT DISTINCT FROM e.tenant "
        "  WHERE $2::uuid[] IS NULL OR s.id = ANY($2::uuid[])), "
        "bad AS (SELECT w.id FROM w WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.id = w.id)), "
        "ins AS (INSERT INTO jobs (id, event_id, subscription_id, url, partition, event_name) "
        "  SELECT wh_uuidv7(), e.id, s.id, s.url, wh_partition(s.id, $3::int), "
        "  CASE WHEN s.plain_until IS NOT NULL THEN e.event_name END FROM e, s "
        "  WHERE NOT EXISTS (SELECT 1 FROM bad) "
        "  RETURNING id, event_id, subscription_id, url, partition) "
        "SELECT EXISTS (SELECT 1 FROM e), (SELECT string_agg(id::text, ', ') FROM bad), "
        "  v.id, v.event_id, v.subscription_id, v.event_name, v.url, 1, v.partition, v.payload "
        "FROM (SELECT 1) one LEFT JOIN (SELECT ins.*, e.event_name, "
        "  CASE WHEN row_number() OVER (ORDER BY ins.id) = 1 AND length(e.payload) "
        "<= " INLINE_PAYLOAD_MAX " THEN encode(e.payload, 'hex') END AS payload "
        "  FROM ins CROSS JOIN e) v ON true ORDER BY v.id";
    const char *params[] = {r->seg[0], ids, parts, req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 4, params, NULL, NULL, 0, got_replay, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* Rows (replay without subscriptionIds): the event's live subscriptions (id, filter text),
 * then, when one has a filter, a row with the payload (decision 30). Replays to the ones whose
 * filter matches the event's payload, as its trigger would fan out today. */
static void got_replay_subs(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    int n = PQntuples(res);
    if (n == 0 || !PQgetisnull(res, n - 1, 0)) { /* no filter (or no event: 404 from there) */
        replay_run(r, NULL);
        return;
    }
    cJSON *payload = cJSON_ParseWithLength(PQgetvalue(res, n - 1, 2),
                                           (size_t)PQgetlength(res, n - 1, 2));
    struct buf ids = {0};
    pgarr_begin(&ids);
    for (int i = 0; i < n - 1; i++) {
        if (!PQgetisnull(res, i, 1)) {
            char e[256];
            struct filter *f = filter_parse(PQgetvalue(res, i, 1),
                                            (size_t)PQgetlength(res, i, 1), e, sizeof e);
            bool match = f && payload && filter_match(f, payload);
            filter_free(f);
            if (!match)
                continue;
        }
        pgarr_add(&ids, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    pgarr_end(&ids);
    cJSON_Delete(payload);
    replay_run(r, ids.data);
    buf_free(&ids);
}

void recover_replay(struct req *r)
{
    if (!id_valid(r->seg[0], strlen(r->seg[0]))) {
        http_error(r, 400, "invalid_field", "event id must be a UUID");
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[0], id);
    memcpy(r->seg[0], id, sizeof id);
    struct buf ids = {0};
    bool some = false;
    if (r->body_len > 0) {
        cJSON *doc = http_body_object(r);
        if (!doc)
            return;
        for (cJSON *f = doc->child; f; f = f->next)
            if (strcmp(f->string, "subscriptionIds") != 0) {
                http_error(r, 400, "invalid_field",
                           "unknown field %.64s (expected subscriptionIds)", f->string);
                cJSON_Delete(doc);
                return;
            }
        cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "subscriptionIds");
        if (list && !cJSON_IsNull(list)) {
            int n = cJSON_GetArraySize(list);
            if (!cJSON_IsArray(list) || n < 1 || n > REPLAY_IDS_MAX) {
                http_error(r, 400, "invalid_field",
                           "subscriptionIds must be an array of 1 to %d subscription ids",
                           REPLAY_IDS_MAX);
                cJSON_Delete(doc);
                buf_free(&ids);
                return;
            }
            pgarr_begin(&ids);
            int i = 0;
            for (cJSON *v = list->child; v; v = v->next, i++) {
                if (!cJSON_IsString(v) || !id_valid(v->valuestring, strlen(v->valuestring))) {
                    http_error(r, 400, "invalid_field", "subscriptionIds[%d] must be a UUID", i);
                    cJSON_Delete(doc);
                    buf_free(&ids);
                    return;
                }
                pgarr_add(&ids, v->valuestring, strlen(v->valuestring));
            }
            pgarr_end(&ids);
            some = true;
        }
        cJSON_Delete(doc);
    }
    if (some) {
        replay_run(r, ids.data); /* listed: sent whatever their filters say */
        buf_free(&ids);
        return;
    }
    /* Every live subscription: those with a payload filter only when it matches. */
    static const char subs_sql[] =
        "WITH e AS (SELECT event_name, payload, tenant FROM events WHERE id = $1 "
        "  AND ($2::text IS NULL OR tenant = $2)), "
        "s AS (SELECT s.id, s.filter FROM e JOIN subscriptions s "
        "  ON s.event_names && wh_name_keys(e.event_name) "
        "  AND s.status = 'active' AND s.disabled_at IS NULL "
        "  AND s.tenant IS NOT DISTINCT FROM e.tenant) "
        "SELECT t.id, t.f, t.p FROM (SELECT 0 AS k, s.id::text AS id, s.filter::text AS f, "
        "  NULL::text AS p FROM s "
        "  UNION ALL SELECT 1, NULL, NULL, convert_from(e.payload, 'UTF8') FROM e "
        "  WHERE EXISTS (SELECT 1 FROM s WHERE s.filter IS NOT NULL)) t ORDER BY t.k";
    const char *params[] = {r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, subs_sql, 2, params, NULL, NULL, 0, got_replay_subs, r) < 0)
        http_db_error(r, NULL, "not connected");
}
