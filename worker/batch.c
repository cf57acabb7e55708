/* Batching (docs/decisions.md 40): parking a batching subscription's jobs in its batch-pend
 * zset, forming batches there by script (full, or the oldest due), and working a batch read from
 * the job stream: recorded and its jobs claimed in PostgreSQL, one signed POST of their
 * envelopes, one attempt row per job, retried or finished as a unit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"
#include "ids.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "opevents.h"
#include "worker.h"

#include <cJSON.h>

#define BATCH_TICK_MS 200    /* how often the due batches are looked for */
#define BATCH_TICK_IDS 4     /* batches one tick script may form per partition */
#define BATCH_PAUSED_MS 1000 /* a formed batch of a paused subscription looks again after this */

/* A batch being worked: from its stream entry to its Redis clean-up. */
struct wbatch {
    unsigned part;
    char entry[48];
    char id[ID_LEN + 1];
    char sub[ID_LEN + 1];
    int attempt;
    int64_t rslot;      /* the rate-limit slot reserved for this attempt ("r"), 0: none */
    cJSON *doc;         /* the message, to write it again with another attempt */
    cJSON *jobs;        /* doc's "j": the job messages */
    struct buf ids;     /* the job ids as a uuid[] literal */
    struct buf claimed; /* the ids PostgreSQL gave this batch (uuid[] literal) */
    struct job *j;      /* the delivery, once there is one (owns this batch) */
    /* the outcome being recorded */
    const char *status;
    int64_t next_ms;
};

/* ---- the scripts ------------------------------------------------------------------------- */

/* form(pend, subs, jobs, sub, max, interval ms, now ms, batch id, stream field): when max
 * messages wait, or the oldest has waited interval, the lowest max (by park time, then job id)
 * leave the zset and go to the stream as one batch message. Returns how many went. */
#define FORM_LUA                                                                                   \
    "local function form(pend, subs, jobs, sub, max, int, now, id, field) "                        \
    "  local n = redis.call('ZCARD', pend) "                                                       \
    "  if n == 0 then redis.call('SREM', subs, sub) return 0 end "                                 \
    "  local first = redis.call('ZRANGE', pend, 0, 0, 'WITHSCORES') "                              \
    "  if n < max and tonumber(first[2]) > now - int then return 0 end "                           \
    "  local m = redis.call('ZRANGE', pend, 0, max - 1) "                                          \
    "  redis.call('ZREM', pend, unpack(m)) "                                                       \
    "  redis.call('XADD', jobs, '*', field, '{\"b\":\"' .. id .. '\",\"s\":\"' .. sub .. "         \
    "    '\",\"a\":1,\"j\":[' .. table.concat(m, ',') .. ']}') "                                   \
    "  if n == #m then redis.call('SREM', subs, sub) end "                                         \
    "  return #m "                                                                                 \
    "end "                                                                                         \
    "local t = redis.call('TIME') "                                                                \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* Park. KEYS: pend, subs, ctl, jobs. ARGV: message, sub, max, interval ms, a new batch id,
 * stream field. The settings go to ctl (bmax, bint) for the tick's script. */
static const char park_lua[] =
    FORM_LUA "redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1]) "
             "redis.call('SADD', KEYS[2], ARGV[2]) "
             "redis.call('HSET', KEYS[3], 'bmax', ARGV[3], 'bint', ARGV[4]) "
             "return form(KEYS[1], KEYS[2], KEYS[4], ARGV[2], tonumber(ARGV[3]), "
             "  tonumber(ARGV[4]), now, ARGV[5], ARGV[6])";

/* Tick. KEYS: subs, jobs. ARGV: the pend key without the subscription id, the same for ctl,
 * stream field, batch ids (one per batch it may form). The keys of each subscription are the
 * prefixes common/keys.c made plus its id, in the same partition (hash tag). */
static const char tick_lua[] =
    FORM_LUA "local used = 0 "
             "for _, sub in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
             "  if used >= #ARGV - 3 then break end "
             "  local c = redis.call('HMGET', ARGV[2] .. sub, 'bmax', 'bint') "
             "  if form(ARGV[1] .. sub, KEYS[1], KEYS[2], sub, tonumber(c[1]) or 1000, "
             "      tonumber(c[2]) or 1000, now, ARGV[4 + used], ARGV[3]) > 0 then "
             "    used = used + 1 "
             "  end "
             "end "
             "return used";

bool batch_send_park(const struct job *j, const char *msg, size_t len)
{
    char pend[KEY_MAX], subs[KEY_MAX], ctl[KEY_MAX], jobs[KEY_MAX], id[ID_LEN + 1];
    id_new(id);
    struct rargs a = {0};
    rargs_adds(&a, "EVAL");
    rargs_adds(&a, park_lua);
    rargs_adds(&a, "4");
    rargs_add(&a, pend, key_batch_pend(pend, j->part, j->m.sub));
    rargs_add(&a, subs, key_batch_subs(subs, j->part));
    rargs_add(&a, ctl, key_ctl(ctl, j->part, j->m.sub));
    rargs_add(&a, jobs, key_jobs(jobs, j->part));
    rargs_add(&a, msg, len);
    rargs_add(&a, j->m.sub, ID_LEN);
    rargs_addll(&a, j->ctl->batch.max);
    rargs_addll(&a, j->ctl->batch.interval_ms);
    rargs_add(&a, id, ID_LEN);
    rargs_adds(&a, KEYS_STREAM_FIELD);
    bool ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
    rargs_free(&a);
    return ok;
}

static int64_t next_tick_ms;
static bool ticking;

static void ticked(struct rds *r, redisReply *reply, void *priv)
{
    (void)r, (void)priv;
    ticking = false;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("batch", "forming due batches failed: %s", reply->str);
}

void batch_tick(int64_t now_mono_ms)
{
    if (ticking || now_mono_ms < next_tick_ms)
        return;
    next_tick_ms = now_mono_ms + BATCH_TICK_MS;
    char subs[KEY_MAX], jobs[KEY_MAX], pend[KEY_MAX], ctl[KEY_MAX];
    char ids[BATCH_TICK_IDS][ID_LEN + 1];
    struct rargs a = {0};
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        rargs_adds(&a, "EVAL");
        rargs_adds(&a, tick_lua);
        rargs_adds(&a, "2");
        rargs_add(&a, subs, key_batch_subs(subs, p));
        rargs_add(&a, jobs, key_jobs(jobs, p));
        rargs_add(&a, pend, key_batch_pend(pend, p, ""));
        rargs_add(&a, ctl, key_ctl(ctl, p, ""));
        rargs_adds(&a, KEYS_STREAM_FIELD);
        for (int i = 0; i < BATCH_TICK_IDS; i++) {
            id_new(ids[i]);
            rargs_add(&a, ids[i], ID_LEN);
        }
        bool last = p + 1 == (unsigned)W.cfg.partitions;
        if (rargs_send(&a, W.rd_cmd, last ? ticked : NULL, NULL) == 0 && last)
            ticking = true;
    }
    rargs_free(&a);
}

/* ---- a batch read from the stream ------------------------------------------------------- */

bool batch_is_msg(const char *msg, size_t len)
{
    return len > 5 && memcmp(msg, "{\"b\":", 5) == 0;
}

void batch_free(struct wbatch *b)
{
    if (!b)
        return;
    cJSON_Delete(b->doc);
    buf_free(&b->ids);
    buf_free(&b->claimed);
    free(b);
}

/* The batch is done with (its Redis state written, or left pending for a claim). */
static void batch_done(struct wbatch *b)
{
    W.inflight--;
    if (b->j) {
        b->j->batch = b; /* job_free frees both */
        job_free(b->j);
    } else {
        batch_free(b);
    }
    reader_kick();
}

static void abandon(struct wbatch *b, const char *why)
{
    log_warn(b->id, "leaving batch pending in Redis for a later claim: %s", why);
    batch_done(b);
}

/* The message of attempt a, with the rate-limit slot reserved for it (b->rslot, "r", as a job
 * message carries it: parked until shortly before the slot, the batch uses it when back instead
 * of reserving another). Caller frees. */
static char *message(struct wbatch *b, int a)
{
    cJSON_ReplaceItemInObjectCaseSensitive(b->doc, "a", cJSON_CreateNumber(a));
    cJSON_DeleteItemFromObjectCaseSensitive(b->doc, "r");
    if (b->rslot > 0)
        cJSON_AddItemToObject(b->doc, "r", cJSON_CreateNumber((double)b->rslot));
    return cJSON_PrintUnformatted(b->doc);
}

enum fin { FIN_CLEAN, FIN_PARK, FIN_FINAL };

static void finalized(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct wbatch *b = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        log_warn(b->id,
                 "Redis clean-up of the batch failed (%s): its entry stays pending and is "
                 "claimed again; PostgreSQL already has the outcome",
                 reply && reply->str ? reply->str : "connection lost");
    batch_done(b);
}

/* One MULTI on the batch's partition: its stream entry acked and deleted; FIN_PARK: the message
 * of attempt a to the retry set due at due_ms; FIN_FINAL: the jobs PostgreSQL finished (ids,
 * n) leave the live set, and dead ones go to the dead-letter stream with err. */
static void finalize(struct wbatch *b, enum fin how, int a, int64_t due_ms, char (*ids)[ID_LEN + 1],
                     int n, bool dead, const char *err)
{
    char jobs[KEY_MAX], other[KEY_MAX];
    size_t jl = key_jobs(jobs, b->part);
    struct rargs a_ = {0};
    bool ok;
    rargs_adds(&a_, "MULTI");
    ok = rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
    rargs_adds(&a_, "XACK");
    rargs_add(&a_, jobs, jl);
    rargs_adds(&a_, KEYS_GROUP);
    rargs_adds(&a_, b->entry);
    ok = ok && rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
    rargs_adds(&a_, "XDEL");
    rargs_add(&a_, jobs, jl);
    rargs_adds(&a_, b->entry);
    ok = ok && rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
    if (how == FIN_PARK) {
        char *msg = message(b, a);
        rargs_adds(&a_, "ZADD");
        rargs_add(&a_, other, key_retry(other, b->part));
        rargs_addll(&a_, due_ms);
        rargs_adds(&a_, msg);
        ok = ok && rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
        free(msg);
    }
    if (how == FIN_FINAL && n > 0) {
        rargs_adds(&a_, "SREM");
        rargs_add(&a_, other, key_live(other, b->part));
        for (int i = 0; i < n; i++)
            rargs_add(&a_, ids[i], ID_LEN);
        ok = ok && rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
    }
    if (how == FIN_FINAL && dead) {
        size_t dl = key_dead(other, b->part);
        const cJSON *m;
        cJSON_ArrayForEach(m, b->jobs)
        {
            const cJSON *jid = cJSON_GetObjectItemCaseSensitive(m, "j");
            bool finished = false;
            for (int i = 0; i < n && !finished && cJSON_IsString(jid); i++)
                finished = strcmp(ids[i], jid->valuestring) == 0;
            if (!finished)
                continue;
            char *text = cJSON_PrintUnformatted(m);
            rargs_adds(&a_, "XADD");
            rargs_add(&a_, other, dl);
            rargs_adds(&a_, "*");
            rargs_adds(&a_, KEYS_STREAM_FIELD);
            rargs_adds(&a_, text);
            rargs_adds(&a_, "error");
            rargs_adds(&a_, err ? err : "");
            ok = ok && rargs_send(&a_, W.rd_cmd, NULL, NULL) == 0;
            free(text);
        }
    }
    /* a half-open circuit's probe was this batch: recorded, the next may go (decision 25) */
    if (b->status && b->j && b->j->probe)
        ok = ok && gate_send_probe_release(b->j);
    rargs_adds(&a_, "EXEC");
    ok = ok && rargs_send(&a_, W.rd_cmd, finalized, b) == 0;
    rargs_free(&a_);
    if (!ok)
        abandon(b, "Redis is unavailable");
}

/* Columns of the load statement. */
enum {
    L_ID,
    L_EVENT,
    L_NAME,
    L_PAYLOAD,
    L_B_STATUS,
    L_B_ATTEMPTS,
    L_B_NEXT,
    L_OFFLINE,
    L_SUB_ID, /* prep_sub_from_row's six columns */
    L_S_STATUS = L_SUB_ID + 6,
    L_URL,
    L_PAUSED,
    L_DISABLED,
    L_REASON,
    L_RATE,
    L_RETRY,
    L_TIMEOUT,
    L_CIRCUIT,
    L_SLOW,
    L_FIELDS,
};

/* ---- recording the outcome --------------------------------------------------------------- */

/* The metrics of the n jobs a batch attempt's statement updated, counted per job as their
 * attempt rows are (one attempt each, with the batch's status code and duration). */
static void count_recorded(const struct wbatch *b, char (*ids)[ID_LEN + 1], int n)
{
    if (!b->j)
        return;
    enum outcome out = strcmp(b->status, "delivered") == 0 ? OUT_DELIVERED
                       : strcmp(b->status, "retrying") == 0 ? OUT_RETRY
                       : strcmp(b->status, "dead") == 0     ? OUT_DEAD
                                                            : OUT_CANCELLED;
    for (int i = 0; i < n; i++)
        outcome_count(out, b->j, ids[i]);
}

/* The rows the outcome statement updated: the jobs it finished or rescheduled. */
static void recorded(void *priv, PGresult *res, const char *err)
{
    struct wbatch *b = priv;
    struct job *j = b->j;
    if (err) {
        abandon(b, err);
        return;
    }
    int n = PQntuples(res);
    /* the operational events the batch caused (decision 26), committed with it: now to Redis */
    if (n > 0 && !PQgetisnull(res, 0, 1))
        opevents_enqueue(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
    char(*ids)[ID_LEN + 1] = xcalloc((size_t)n + 1, sizeof *ids);
    for (int i = 0; i < n; i++)
        if (PQgetlength(res, i, 0) == ID_LEN)
            memcpy(ids[i], PQgetvalue(res, i, 0), ID_LEN);
    count_recorded(b, ids, n);
    if (n == 0) {
        log_info(b->id,
                 "batch attempt %d was recorded already (or its jobs finished): Redis "
                 "clean-up only",
                 b->attempt);
        finalize(b, FIN_CLEAN, 0, 0, NULL, 0, false, NULL);
    } else if (strcmp(b->status, "retrying") == 0) {
        finalize(b, FIN_PARK, b->attempt + 1, b->next_ms, NULL, 0, false, NULL);
    } else {
        finalize(b, FIN_FINAL, 0, 0, ids, n, strcmp(b->status, "dead") == 0,
                 j && j->error[0] ? j->error : NULL);
    }
    free(ids);
}

/* One attempt row per job of the batch (its own attempt number: the job's attempts + 1), every
 * job's state, and the batch's, in one statement; only jobs this batch claimed and that are
 * unfinished ("not terminal", so the primary key is probed, not the partial index
 * jobs_unfinished: outcome.c says why), and only if this attempt of the batch is not recorded
 * yet (a claim after a crash records nothing twice). Cancelled: no attempt row, attempts unchanged. Then the per-job
 * outcome statement's tail (outcome_sql_tail): the subscription's health, the operational
 * events and the rollups, from u, with the consecutive failures counted once per batch attempt
 * (its jobs share the attempt's start time). Rows: the jobs, the first with the new
 * operational events' jobs (JSON) in column 1. */
#define RECORD_HEAD                                                                                \
    "WITH b AS (UPDATE batches SET status = $3::text, "                                            \
    "  attempts = CASE WHEN $3::text = 'cancelled' THEN attempts ELSE $2::int END, "               \
    "  next_attempt_at = CASE WHEN $3::text = 'retrying' "                                         \
    "    THEN to_timestamp($4::bigint / 1000.0) END, updated_at = now() "                          \
    "  WHERE id = $1::uuid AND status IN ('sending', 'retrying') "                                 \
    "  AND (attempts < $2::int OR $3::text = 'cancelled') RETURNING id), "                         \
    "u AS (UPDATE jobs j SET status = $3::text, "                                                  \
    "  attempts = j.attempts + CASE WHEN $3::text = 'cancelled' THEN 0 ELSE 1 END, "               \
    "  last_status_code = CASE WHEN $3::text = 'cancelled' THEN j.last_status_code "               \
    "    ELSE $5::int END, "                                                                       \
    "  last_error = $6::text, "                                                                    \
    "  next_attempt_at = CASE WHEN $3::text = 'retrying' "                                         \
    "    THEN to_timestamp($4::bigint / 1000.0) END, "                                             \
    "  delivered_at = CASE WHEN $3::text = 'delivered' THEN now() ELSE j.delivered_at END, "       \
    "  updated_at = now() "                                                                        \
    "  FROM b, events e WHERE j.id = ANY($10::uuid[]) AND j.batch_id = $1::uuid "                  \
    "  AND j.status NOT IN ('delivered', 'dead', 'cancelled') AND e.id = j.event_id "              \
    "  RETURNING j.id, j.subscription_id AS sub, "                                                 \
    "  CASE WHEN $3::text = 'cancelled' THEN 0 ELSE j.attempts END AS attempt, "                   \
    "  $3::text AS status, $5::int AS code, $6::text AS err, $7::bigint AS started_ms, "           \
    "  $11::bigint AS retry_ms, e.event_name AS name), "                                           \
    "a AS (INSERT INTO attempts (job_id, attempt, started_at, duration_ms, status_code, error, "   \
    "  response_excerpt, batch_id) "                                                               \
    "  SELECT u.id, u.attempt, to_timestamp($7::bigint / 1000.0), $8::int, $5::int, $6::text, "    \
    "  $9::text, $1::uuid FROM u WHERE u.attempt > 0 "                                             \
    "  ON CONFLICT (job_id, attempt) DO NOTHING), "

static char *record_sql;

static const char *record_stmt(void)
{
    static const char one[] = "count(*) FILTER (WHERE NOT f.ok AND (lo.last_ok IS NULL OR "
                              "f.started_ms > lo.last_ok))";
    static const char per_batch[] = "count(DISTINCT f.started_ms) FILTER (WHERE NOT f.ok AND "
                                    "(lo.last_ok IS NULL OR f.started_ms > lo.last_ok))";
    if (record_sql)
        return record_sql;
    const char *tail = outcome_sql_tail();
    const char *at = strstr(tail, one);
    if (!at)
        abort(); /* a programming error: the outcome statement's count of failures changed */
    record_sql = xasprintf("%s%.*s%s%s", RECORD_HEAD, (int)(at - tail), tail, per_batch,
                           at + sizeof one - 1);
    return record_sql;
}

/* Response excerpts and errors are stored as text: valid UTF-8 without NULs. */
static void text_of(const char *p, size_t n, struct buf *out)
{
    buf_reset(out);
    size_t i = 0;
    while (i < n) {
        size_t run = 1;
        unsigned char c = (unsigned char)p[i];
        if (c >= 0xC0)
            run = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (c != 0 && i + run <= n && utf8_valid(p + i, run)) {
            buf_add(out, p + i, run);
            i += run;
        } else {
            buf_add(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    buf_addc(out, '\0');
}

static void record(struct wbatch *b, const char *status, int64_t next_ms)
{
    struct job *j = b->j;
    b->status = status;
    b->next_ms = next_ms;
    char att[16], next[24], code[16], start[24], dur[24];
    struct buf err = {0}, exc = {0};
    snprintf(att, sizeof att, "%d", b->attempt);
    snprintf(next, sizeof next, "%lld", (long long)next_ms);
    snprintf(code, sizeof code, "%ld", j ? j->status_code : 0);
    snprintf(start, sizeof start, "%lld",
             (long long)(j && j->started_ms ? j->started_ms : clock_now_ms()));
    snprintf(dur, sizeof dur, "%ld", j ? j->duration_ms : 0);
    const char *errp = NULL, *excp = NULL;
    if (j && j->error[0]) {
        text_of(j->error, strlen(j->error), &err);
        errp = err.data;
    }
    if (j && j->started_ms) {
        text_of(j->excerpt.data ? j->excerpt.data : "", j->excerpt.len, &exc);
        excp = exc.data;
    }
    char retry[24];
    bool slow = j && (j->status_code == 429 || j->status_code == 503) && j->retry_after_ms >= 0;
    snprintf(retry, sizeof retry, "%ld", slow ? j->retry_after_ms : 0L);
    const char *params[] = {b->id,
                            att,
                            status,
                            next,
                            j && j->status_code > 0 ? code : NULL,
                            errp,
                            start,
                            dur,
                            excp,
                            b->claimed.data,
                            slow ? retry : NULL};
    if (pg_query_prepared(W.pg, "wh_batch_record", record_stmt(), 11, params, NULL, NULL, 0,
                          recorded, b) < 0)
        abandon(b, "PostgreSQL is unavailable");
    buf_free(&err);
    buf_free(&exc);
}

void batch_outcome(struct job *j)
{
    struct wbatch *b = j->batch;
    j->batch = NULL; /* the batch owns j from here (b->j) */
    switch (j->out) {
    case OUT_DELIVERED:
        log_debug(b->id, "batch delivered to %s: HTTP %ld in %ld ms (attempt %d)", job_url(j),
                  j->status_code, j->duration_ms, b->attempt);
        record(b, "delivered", 0);
        break;
    case OUT_RETRY:
        if (j->status_code == 410) { /* Gone: retrying cannot help */
            record(b, "dead", 0);
            break;
        }
        log_debug(b->id, "batch attempt %d failed: %s; again at %lld", b->attempt, j->error,
                  (long long)j->next_ms);
        record(b, "retrying", j->next_ms);
        break;
    case OUT_DEAD:
        log_info(b->id, "batch dead after %d attempts: %s", b->attempt, j->error);
        record(b, "dead", 0);
        break;
    case OUT_HOLD: /* the gate parked it for its rate-limit slot: the same attempt later */
        b->rslot = j->m.rslot;
        finalize(b, FIN_PARK, b->attempt, j->next_ms, NULL, 0, false, NULL);
        break;
    default:
        log_error(b->id, "unexpected outcome %d of a batch: left pending", (int)j->out);
        abandon(b, "unexpected outcome");
        break;
    }
}

/* ---- loading and sending ----------------------------------------------------------------- */

static struct subctl *ctl_of(PGresult *res, const char *sub)
{
    char err[256];
    struct subctl *c = xcalloc(1, sizeof *c);
    c->refs = 1;
    c->url = xstrdup(PQgetvalue(res, 0, L_URL));
    if (!PQgetisnull(res, 0, L_RATE)) {
        cJSON *v = cJSON_Parse(PQgetvalue(res, 0, L_RATE));
        c->has_rate = controls_rate_parse(v, &c->rate, NULL, err, sizeof err) == 0;
        cJSON_Delete(v);
    }
    if (!PQgetisnull(res, 0, L_RETRY)) {
        cJSON *v = cJSON_Parse(PQgetvalue(res, 0, L_RETRY));
        c->has_retry = controls_retry_parse(v, &c->retry, NULL, err, sizeof err) == 0;
        cJSON_Delete(v);
        if (!c->has_retry)
            log_sub(LOG_ERROR, sub, "the subscription's retryPolicy is not valid (%s)", err);
    }
    if (!PQgetisnull(res, 0, L_TIMEOUT)) {
        c->timeout_ms = strtol(PQgetvalue(res, 0, L_TIMEOUT), NULL, 10) * 1000;
        if (c->timeout_ms > W.cfg.claim_idle_ms - 1000)
            c->timeout_ms = W.cfg.claim_idle_ms - 1000;
    }
    return c; /* shape raw, no fields: the body is already built */
}

static int64_t ms_of(PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* The delivery of the batch: a job whose event id (webhook-id, signed) is the batch id and whose
 * payload is the JSON array of the envelopes of the rows' jobs, in job id order. */
static struct job *delivery_of(struct wbatch *b, PGresult *res)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->part = b->part;
    j->retry_after_ms = -1;
    memcpy(j->entry, b->entry, sizeof j->entry);
    memcpy(j->m.job, b->id, ID_LEN + 1);
    memcpy(j->m.event, b->id, ID_LEN + 1);
    memcpy(j->m.sub, b->sub, ID_LEN + 1);
    snprintf(j->m.name, sizeof j->m.name, "batch");
    j->m.url = xstrdup(PQgetvalue(res, 0, L_URL));
    j->m.attempt = b->attempt;
    j->ctl = ctl_of(res, b->sub);
    j->sub = prep_sub_from_row(res, 0, L_SUB_ID);
    j->sub->refs = 1;
    const char *fields = PQgetisnull(res, 0, L_FIELDS) ? NULL : PQgetvalue(res, 0, L_FIELDS);
    size_t flen = fields ? (size_t)PQgetlength(res, 0, L_FIELDS) : 0;
    if (fields && strcmp(fields, "{}") == 0)
        fields = NULL, flen = 0;
    struct buf body = {0};
    buf_addc(&body, '[');
    for (int i = 0; i < PQntuples(res); i++) {
        if (i)
            buf_addc(&body, ',');
        shape_body(&body, SHAPE_ENVELOPE, PQgetvalue(res, i, L_PAYLOAD),
                   (size_t)PQgetlength(res, i, L_PAYLOAD), fields, flen,
                   PQgetvalue(res, i, L_EVENT), PQgetvalue(res, i, L_NAME));
    }
    buf_addc(&body, ']');
    j->payload = xmalloc(sizeof *j->payload + body.len + 1);
    j->payload->refs = 1;
    j->payload->len = body.len;
    memcpy(j->payload->data, body.data, body.len);
    j->payload->data[body.len] = '\0';
    buf_free(&body);
    j->batch = b;
    b->j = j;
    return j;
}

static void loaded(void *priv, PGresult *res, const char *err)
{
    struct wbatch *b = priv;
    if (err) {
        abandon(b, err);
        return;
    }
    int n = PQntuples(res);
    if (n == 0) {
        log_info(b->id, "batch has no unfinished job of its own left: Redis clean-up only");
        finalize(b, FIN_CLEAN, 0, 0, NULL, 0, false, NULL);
        return;
    }
    int64_t rslot = b->rslot; /* kept only by the rate-limited send below */
    b->rslot = 0;
    pgarr_begin(&b->claimed);
    for (int i = 0; i < n; i++)
        pgarr_add(&b->claimed, PQgetvalue(res, i, L_ID), ID_LEN);
    pgarr_end(&b->claimed);
    int64_t now = clock_now_ms();
    long done =
        PQgetisnull(res, 0, L_B_ATTEMPTS) ? 0 : strtol(PQgetvalue(res, 0, L_B_ATTEMPTS), NULL, 10);
    bool offline =
        PQgetisnull(res, 0, L_OFFLINE) || strcmp(PQgetvalue(res, 0, L_OFFLINE), "t") == 0;
    offline_seen(offline);
    bool gone =
        PQgetisnull(res, 0, L_S_STATUS) || strcmp(PQgetvalue(res, 0, L_S_STATUS), "active") != 0;
    if (done >= b->attempt) {
        /* this attempt was recorded already (a worker died before its clean-up): re-park */
        int64_t due = ms_of(res, L_B_NEXT);
        finalize(b, FIN_PARK, (int)done + 1, due ? due : now, NULL, 0, false, NULL);
        return;
    }
    if (offline) {
        finalize(b, FIN_PARK, b->attempt, now, NULL, 0, false, NULL);
        return;
    }
    if (gone || strcmp(PQgetvalue(res, 0, L_DISABLED), "t") == 0) {
        b->j = NULL;
        log_info(b->id, "subscription %s is %s: the batch's %d jobs are cancelled", b->sub,
                 gone ? "deleted" : "disabled", n);
        record(b, "cancelled", 0);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, L_PAUSED), "t") == 0) {
        finalize(b, FIN_PARK, b->attempt, now + BATCH_PAUSED_MS, NULL, 0, false, NULL);
        return;
    }
    int64_t hold =
        ms_of(res, L_CIRCUIT) > ms_of(res, L_SLOW) ? ms_of(res, L_CIRCUIT) : ms_of(res, L_SLOW);
    if (hold > now) {
        finalize(b, FIN_PARK, b->attempt, hold, NULL, 0, false, NULL);
        return;
    }
    struct job *j = delivery_of(b, res);
    log_debug(b->id, "sending batch of %d jobs of subscription %s (attempt %d)", n, b->sub,
              b->attempt);
    if (j->sub->keylen < 0 || !j->sub->active) {
        j->started_ms = now;
        snprintf(j->error, sizeof j->error,
                 "the subscription's secret cannot be decrypted or is malformed (check "
                 "SECRETS_KEY and SECRETS_KEY_PREVIOUS on the workers)");
        outcome_failed(j);
    } else if (j->ctl->has_rate || ms_of(res, L_CIRCUIT)) {
        /* a batch takes one rate-limit slot; with the circuit half-open it is the one probe */
        if (j->ctl->has_rate)
            j->m.rslot = rslot; /* reserved before it was parked: waited for, not asked again */
        gate_add(j, ms_of(res, L_CIRCUIT) != 0);
        gate_flush();
    } else {
        deliver_start(j);
    }
}

/* Records the batch (once) and claims its jobs: each job unfinished and in no other batch gets
 * this batch's id (a job is in one batch only, whichever worker forms or reads what). Rows: the
 * jobs of this batch still unfinished, in id order, with their event, the batch's state, the
 * delivery switch and the subscription's settings and secrets. */
static const char load_sql[] =
    "WITH c AS (UPDATE jobs SET batch_id = $1::uuid WHERE id = ANY($3::uuid[]) "
    "  AND status IN ('queued', 'retrying') AND subscription_id = $2::uuid "
    /* in no other batch. Only the row decides (a concurrent claim re-checks the committed
     * row): recover and replay, and the reconciler's requeue, set batch_id NULL */
    "  AND (batch_id IS NULL OR batch_id = $1::uuid) "
    "  RETURNING id, event_id), "
    "bi AS (INSERT INTO batches (id, subscription_id) SELECT $1::uuid, $2::uuid "
    "  WHERE EXISTS (SELECT 1 FROM c) ON CONFLICT (id) DO NOTHING) "
    "SELECT c.id::text, c.event_id::text, e.event_name, convert_from(e.payload, 'UTF8'), "
    "  b.status, b.attempts, (extract(epoch FROM b.next_attempt_at) * 1000)::bigint, "
    "  (SELECT status = 'offline' FROM delivery_switch WHERE id), "
    "  s.id::text, s.status, s.secret, s.headers::text, "
    "  CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END, "
    "  (extract(epoch FROM s.previous_secret_expires_at) * 1000)::bigint, "
    "  s.status, s.url, s.paused_at IS NOT NULL, s.disabled_at IS NOT NULL, s.disabled_reason, "
    "  s.rate_limit::text, s.retry_policy::text, s.timeout_seconds, "
    "  (extract(epoch FROM s.circuit_open_until) * 1000)::bigint, "
    "  (extract(epoch FROM s.slow_until) * 1000)::bigint, s.payload_fields::text "
    "FROM c JOIN events e ON e.id = c.event_id "
    "LEFT JOIN batches b ON b.id = $1::uuid "
    "LEFT JOIN subscriptions s ON s.id = $2::uuid "
    "ORDER BY c.id";

void batch_take(unsigned part, const char *entry, const char *msg, size_t len)
{
    struct wbatch *b = xcalloc(1, sizeof *b);
    b->part = part;
    snprintf(b->entry, sizeof b->entry, "%s", entry);
    W.inflight++;
    b->doc = cJSON_ParseWithLength(msg, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(b->doc, "b");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(b->doc, "s");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(b->doc, "a");
    b->jobs = cJSON_GetObjectItemCaseSensitive(b->doc, "j");
    bool ok = cJSON_IsString(id) && id_valid(id->valuestring, strlen(id->valuestring)) &&
              cJSON_IsString(sub) && id_valid(sub->valuestring, strlen(sub->valuestring)) &&
              cJSON_IsNumber(att) && att->valuedouble >= 1 && att->valuedouble < 1000000 &&
              cJSON_IsArray(b->jobs);
    if (ok) {
        memcpy(b->id, id->valuestring, ID_LEN);
        memcpy(b->sub, sub->valuestring, ID_LEN);
        b->attempt = (int)att->valuedouble;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(b->doc, "r");
        if (cJSON_IsNumber(r) && r->valuedouble > 0 && r->valuedouble < 1e15)
            b->rslot = (int64_t)r->valuedouble;
        pgarr_begin(&b->ids);
        const cJSON *m;
        cJSON_ArrayForEach(m, b->jobs)
        {
            const cJSON *jid = cJSON_GetObjectItemCaseSensitive(m, "j");
            if (!cJSON_IsString(jid) || !id_valid(jid->valuestring, strlen(jid->valuestring))) {
                ok = false;
                break;
            }
            pgarr_add(&b->ids, jid->valuestring, ID_LEN);
        }
        pgarr_end(&b->ids);
    }
    if (!ok) {
        /* A poison entry: removed so it is not read forever (PostgreSQL keeps the jobs, and
         * the reconciler finds them if they are not live). */
        log_error("batch", "dropping malformed batch entry %s on partition %u", b->entry, part);
        snprintf(b->id, sizeof b->id, "batch");
        finalize(b, FIN_CLEAN, 0, 0, NULL, 0, false, NULL);
        return;
    }
    const char *params[] = {b->id, b->sub, b->ids.data};
    if (pg_query_prepared(W.pg, "wh_batch_load", load_sql, 3, params, NULL, NULL, 0, loaded, b) < 0)
        abandon(b, "PostgreSQL is unavailable");
}
