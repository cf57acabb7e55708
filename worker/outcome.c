/* Recording finished attempts: outcomes are group-committed to PostgreSQL (attempt rows,
 * conditional job updates, the subscriptions' health and the operational events it causes, in
 * one statement; successes go through a shorter statement while their subscriptions are
 * healthy), then each partition's Redis state is cleaned in
 * one MULTI (XACK + XDEL, SREM live, ZADD retry, XADD dead), then the jobs are freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"
#include "gcommit.h"
#include "ids.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "opevents.h"
#include "worker.h"

#define OUTCOME_BATCH_MAX 2000

static struct gcommit gc, gc_ok; /* every outcome; successes (the short statement) */
static long finalizing; /* Redis MULTIs outstanding */

static struct job *job_of(struct gcommit_node *n)
{
    return n ? GCOMMIT_ITEM(n, struct job, gc) : NULL;
}

void job_free(struct job *j)
{
    if (j->easy)
        return; /* never: a transfer owns it until CURLMSG_DONE */
    curl_slist_free_all(j->req_headers);
    payload_unref(j->payload);
    sub_unref(j->sub);
    subctl_unref(j->ctl);
    buf_free(&j->excerpt);
    buf_free(&j->body);
    jobmsg_clear(&j->m);
    if (j->batch)
        batch_free(j->batch);
    free(j);
}

void job_abandon(struct job *j, const char *why)
{
    log_warn(j->m.job, "leaving job pending in Redis for a later claim: %s", why);
    W.inflight--;
    job_free(j);
    reader_kick();
}

long outcome_pending(void)
{
    return (long)(gcommit_waiting(&gc) + gcommit_waiting(&gc_ok)) +
           (gcommit_in_flight(&gc) ? 1 : 0) + (gcommit_in_flight(&gc_ok) ? 1 : 0) + finalizing;
}

static const char *out_status(enum outcome o)
{
    switch (o) {
    case OUT_DELIVERED: return "delivered";
    case OUT_RETRY: return "retrying";
    case OUT_DEAD: return "dead";
    case OUT_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

void outcome_failed(struct job *j)
{
    /* The subscription's retryPolicy as read with the batch, else RETRY_SCHEDULE. */
    const struct backoff *b = j->ctl && j->ctl->has_retry ? &j->ctl->retry : &W.backoff;
    long delay = backoff_next_ms(b, j->m.attempt, id_rand32());
    if (delay < 0) {
        j->out = OUT_DEAD;
        log_info(j->m.job, "dead after %d attempts: %s", j->m.attempt, j->error);
    } else {
        if (j->retry_after_ms >= 0)
            delay = backoff_apply_retry_after(delay, j->retry_after_ms);
        j->out = OUT_RETRY;
        j->next_ms = clock_now_ms() + delay;
    }
    outcome_submit(j);
}

/* Response excerpts are stored as text: keep valid UTF-8, replace the rest and NULs. */
static void excerpt_text(const struct buf *in, struct buf *out)
{
    buf_reset(out);
    size_t i = 0;
    while (i < in->len) {
        size_t run = 1;
        unsigned char c = (unsigned char)in->data[i];
        if (c >= 0xC0)
            run = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (c != 0 && i + run <= in->len && utf8_valid(in->data + i, run)) {
            buf_add(out, in->data + i, run);
            i += run;
        } else {
            buf_add(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
}

/* ---- Redis clean-up after the commit ------------------------------------------------------ */

static void finalized(struct rds *r, redisReply *reply, void *priv)
{
    (void)r, (void)priv;
    finalizing--;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        log_warn("outcome", "Redis clean-up failed (%s): the entries stay pending and are "
                            "claimed again; PostgreSQL already has the outcome",
                 reply && reply->str ? reply->str : "connection lost");
    reader_kick();
}

static bool queue_cmd(struct rargs *a)
{
    return rargs_send(a, W.rd_cmd, NULL, NULL) == 0;
}

/* Whether the job goes (back) to the retry set rather than leaving Redis. */
static bool parks(const struct job *j)
{
    return j->out == OUT_RETRY || j->out == OUT_RESCHED || j->out == OUT_HOLD;
}

/* Whether the job stays in the live set: parked in the retry set or held (paused, or waiting
 * for its turn in an ordered subscription). */
static bool stays_live(const struct job *j)
{
    return parks(j) || j->out == OUT_PAUSED || j->out == OUT_WAIT || j->out == OUT_BATCH;
}

/* A final state of an ordered subscription's job: the next one may go (decision 33). */
static bool releases_next(const struct job *j)
{
    return j->ctl && j->ctl->ordered &&
           (j->out == OUT_DELIVERED || j->out == OUT_DEAD || j->out == OUT_CANCELLED ||
            j->out == OUT_SKIP);
}

static void finalize(struct gcommit_node *batch)
{
    struct rargs a = {0};
    struct buf msg = {0};
    char jobs_key[KEY_MAX], live_key[KEY_MAX], retry_key[KEY_MAX], dead_key[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        size_t n = 0, nlive = 0, nretry = 0;
        for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
            if (j->part != p)
                continue;
            n++;
            if (parks(j))
                nretry++;
            else if (!stays_live(j))
                nlive++;
        }
        if (n == 0)
            continue;
        size_t jl = key_jobs(jobs_key, p), ll = key_live(live_key, p);
        size_t rl = key_retry(retry_key, p), dl = key_dead(dead_key, p);
        rargs_adds(&a, "MULTI");
        bool ok = queue_cmd(&a);
        rargs_adds(&a, "XACK");
        rargs_add(&a, jobs_key, jl);
        rargs_adds(&a, KEYS_GROUP);
        for (struct job *j = job_of(batch); j; j = job_of(j->gc.next))
            if (j->part == p)
                rargs_adds(&a, j->entry);
        ok = ok && queue_cmd(&a);
        rargs_adds(&a, "XDEL");
        rargs_add(&a, jobs_key, jl);
        for (struct job *j = job_of(batch); j; j = job_of(j->gc.next))
            if (j->part == p)
                rargs_adds(&a, j->entry);
        ok = ok && queue_cmd(&a);
        if (nlive) {
            rargs_adds(&a, "SREM");
            rargs_add(&a, live_key, ll);
            for (struct job *j = job_of(batch); j; j = job_of(j->gc.next))
                if (j->part == p && !stays_live(j))
                    rargs_add(&a, j->m.job, ID_LEN);
            ok = ok && queue_cmd(&a);
        }
        if (nretry) {
            /* one member per job and attempt: the message for the next attempt (a held job's
             * attempt has not been made: the same one) */
            struct buf members = {0};
            size_t *offs = xcalloc(nretry, sizeof *offs);
            size_t k = 0;
            for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
                if (j->part != p || !parks(j))
                    continue;
                int next = j->out == OUT_HOLD ? 0 : 1;
                j->m.attempt += next;
                offs[k++] = members.len;
                jobmsg_encode(&j->m, &members);
                buf_addc(&members, '\0');
                j->m.attempt -= next;
            }
            rargs_adds(&a, "ZADD");
            rargs_add(&a, retry_key, rl);
            k = 0;
            for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
                if (j->part != p || !parks(j))
                    continue;
                rargs_addll(&a, j->next_ms);
                rargs_adds(&a, members.data + offs[k++]);
            }
            ok = ok && queue_cmd(&a);
            free(offs);
            buf_free(&members);
        }
        for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
            if (j->part != p)
                continue;
            /* a paused subscription's job: its held zset, the message of the same attempt */
            if (j->out == OUT_PAUSED) {
                buf_reset(&msg);
                jobmsg_encode(&j->m, &msg);
                ok = ok && gate_send_hold(j, msg.data, msg.len);
            }
            /* a batching subscription's job: waits for its batch (decision 40) */
            if (j->out == OUT_BATCH) {
                buf_reset(&msg);
                jobmsg_encode(&j->m, &msg);
                ok = ok && batch_send_park(j, msg.data, msg.len);
            }
            /* an ordered subscription's job that is not its head: waits for its turn */
            if (j->out == OUT_WAIT) {
                buf_reset(&msg);
                jobmsg_encode(&j->m, &msg);
                ok = ok && gate_send_wait(j, msg.data, msg.len);
            }
            /* the breaker's probe is recorded: the next one may go when PostgreSQL says so. An
             * ordered head releases its lock whatever happened (parked for its rate-limit slot
             * or delivery offline too: it asks again when it is back) */
            if (j->probe && ((j->out != OUT_HOLD && j->out != OUT_PAUSED) || j->ctl->ordered))
                ok = ok && gate_send_probe_release(j);
            if (releases_next(j))
                ok = ok && gate_send_next(j);
        }
        for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
            if (j->part != p || j->out != OUT_DEAD)
                continue;
            buf_reset(&msg);
            jobmsg_encode(&j->m, &msg);
            rargs_adds(&a, "XADD");
            rargs_add(&a, dead_key, dl);
            rargs_adds(&a, "*");
            rargs_adds(&a, KEYS_STREAM_FIELD);
            rargs_add(&a, msg.data, msg.len);
            rargs_adds(&a, "error");
            rargs_adds(&a, j->error);
            ok = ok && queue_cmd(&a);
        }
        rargs_adds(&a, "EXEC");
        if (ok && rargs_send(&a, W.rd_cmd, finalized, NULL) == 0)
            finalizing++;
        else
            log_warn("outcome", "Redis is unavailable: %zu finished jobs stay pending and are "
                                "claimed again later",
                     n);
        rargs_reset(&a);
    }
    rargs_free(&a);
    buf_free(&msg);
    long n = 0;
    for (struct job *j = job_of(batch), *next; j; j = next) {
        next = job_of(j->gc.next);
        job_free(j);
        n++;
    }
    W.inflight -= n;
    reader_kick();
}

/* ---- PostgreSQL group commit -------------------------------------------------------------- */

/* The outcomes of the batch (o), and their attempt rows (a) where cond holds: both outcome
 * statements start with these. Two workers that ran the same attempt (a claim after a
 * freeze): a success wins. where: a condition on the unnested rows, evaluated for each (the
 * short statement's makes its commit asynchronous). */
#define OUTCOME_O(where)                                                                         \
    "WITH o AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::text[], " \
    "  $6::bigint[], $7::int[], $8::text[], $9::bigint[], $10::bigint[], $11::text[]) "          \
    "  AS o(id, attempt, status, code, err, next_ms, dur, excerpt, started_ms, retry_ms, name) " \
    where "), "
#define OUTCOME_A(cond)                                                                          \
    "a AS (INSERT INTO attempts (job_id, attempt, started_at, duration_ms, status_code, error, " \
    "  response_excerpt) "                                                                       \
    "  SELECT o.id, o.attempt, to_timestamp(o.started_ms / 1000.0), o.dur, o.code, o.err, "     \
    "  o.excerpt FROM o WHERE " cond " "                                                         \
    "  ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = EXCLUDED.started_at, "           \
    "  duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, "                 \
    "  error = EXCLUDED.error, response_excerpt = EXCLUDED.response_excerpt "                   \
    "  WHERE EXCLUDED.status_code BETWEEN 200 AND 299 "                                          \
    "  AND attempts.status_code IS DISTINCT FROM EXCLUDED.status_code), "

/* Attempt rows, and job updates that only move unfinished jobs: a terminal state never goes
 * back. Jobs are looked up by primary key (= ANY), whatever the planner thinks of unnest.
 * "Unfinished" is written as "not terminal" (the same set under the jobs' status CHECK): with
 * status IN ('queued', 'retrying') the generic plan scanned the partial index jobs_unfinished
 * (created_at, id) with id = ANY as a filter on its second column, i.e. the whole backlog for
 * every batch, which made a delivery's cost grow with the jobs waiting (decision 49).
 *
 * In the same statement, the health of the batch's subscriptions (docs/decisions.md 26),
 * aggregated per subscription from the jobs it updated (u):
 * - lo/g: the last success, the failed attempts after it (nf), the first of them, the last
 *   failure, a 410 among them, the latest Retry-After end of a 429/503 (capped at an hour);
 * - s0 locks, in id order (two workers never wait on each other in a cycle), only the rows
 *   that change: a failure, or a success of a subscription that was failing. A healthy
 *   subscription's success reads its row and writes nothing. The rows are probed by primary
 *   key, one LATERAL subquery per subscription of the batch, taken in id order (the sorted g
 *   drives the nested loop, and each probe locks its row, rechecking the conditions on the
 *   latest version): as a join, the generic plan read every active subscription per
 *   statement and compared each with every one of the batch (decision 49);
 * - s1/s2 compute the new counters, the circuit transition (opened after BREAKER_FAILURES
 *   consecutive failures; a failed probe, one started after the circuit's end, reopens it
 *   with the cooldown doubled up to BREAKER_COOLDOWN_MAX; a success closes it: recovered)
 *   and the reason to disable (410 Gone, or failing since DISABLE_AFTER_HOURS);
 * - h writes them; x lists the operational events (none about a subscription to a broker.*
 *   name), ev inserts them and nj their jobs, one per live subscriber of the name (a LATERAL
 *   subquery that cannot be flattened, OFFSET 0, so the subscriptions are read per event: as a
 *   join, the generic plan scanned every active subscription in each statement, with no
 *   event to join them to nearly always: decision 49);
 * - act logs h's transitions in subscription_activity; ss and es add the batch to the
 *   rollups (docs/decisions.md 29): one upsert per subscription (5-minute bucket: delivered,
 *   failed attempts, dead, last success and failure) and per event name (hour), into this
 *   connection's own rows, so a healthy subscription's success still writes no subscription
 *   row.
 * Rows: each updated job; the first also carries the new jobs as JSON (NULL: none), which
 * opevents.c puts in Redis, and the number of circuits the batch opened (wh_circuit_opened_total). Built once by outcome_sql_build (the settings are literals). */
#define OUTCOME_SQL_FMT                                                                     \
    OUTCOME_O("") OUTCOME_A("o.attempt > 0") \
    "u AS (UPDATE jobs j SET status = o.status, attempts = GREATEST(j.attempts, o.attempt), " \
    "  last_status_code = CASE WHEN o.attempt > 0 THEN o.code ELSE j.last_status_code END, " \
    "  last_error = CASE WHEN o.attempt > 0 OR o.status = 'cancelled' THEN o.err " \
    "    ELSE j.last_error END, " \
    "  next_attempt_at = CASE WHEN o.status = 'retrying' THEN to_timestamp(o.next_ms / 1000.0) END, " \
    "  delivered_at = CASE WHEN o.status = 'delivered' THEN now() ELSE j.delivered_at END, " \
    "  updated_at = now() " \
    "  FROM o WHERE j.id = ANY($1::uuid[]) AND j.id = o.id " \
    "  AND j.status NOT IN ('delivered', 'dead', 'cancelled') " \
    "  RETURNING j.id, j.subscription_id AS sub, o.attempt, o.status, o.code, o.err, " \
    "  o.started_ms, o.retry_ms, o.name), " \
    "f AS (SELECT u.*, u.status = 'delivered' AS ok FROM u WHERE u.attempt > 0), " \
    "lo AS (SELECT sub, max(started_ms) FILTER (WHERE ok) AS last_ok FROM f GROUP BY sub), " \
    "g AS (SELECT f.sub, lo.last_ok, " \
    "  count(*) FILTER (WHERE NOT f.ok AND (lo.last_ok IS NULL OR f.started_ms > lo.last_ok)) " \
    "    AS nf, " \
    "  min(f.started_ms) FILTER (WHERE NOT f.ok AND (lo.last_ok IS NULL " \
    "    OR f.started_ms > lo.last_ok)) AS first_fail, " \
    "  max(f.started_ms) FILTER (WHERE NOT f.ok) AS last_fail, " \
    "  coalesce(bool_or(f.code = 410), false) AS gone, " \
    "  max(f.started_ms + LEAST(f.retry_ms, 3600000)) FILTER (WHERE f.code IN (429, 503) " \
    "    AND f.retry_ms >= 0) AS slow_ms " \
    "  FROM f JOIN lo ON lo.sub = f.sub GROUP BY f.sub, lo.last_ok), " \
    "s0 AS (SELECT s.id, s.event_name, s.url, s.failures, s.failing_since, s.circuit_open_until, " \
    "  s.circuit_cooldown_s, s.disabled_at, g.last_ok, g.nf, g.first_fail, g.last_fail, g.gone, " \
    "  g.slow_ms " \
    "  FROM (SELECT * FROM g ORDER BY sub) g CROSS JOIN LATERAL (SELECT x.id, x.event_name, " \
    "    x.url, x.failures, x.failing_since, x.circuit_open_until, x.circuit_cooldown_s, " \
    "    x.disabled_at FROM subscriptions x WHERE x.id = g.sub AND x.status = 'active' " \
    "    AND (g.nf > 0 OR g.gone OR g.slow_ms IS NOT NULL OR x.failures > 0 " \
    "    OR x.failing_since IS NOT NULL OR x.circuit_open_until IS NOT NULL) FOR UPDATE) s), " \
    "s1 AS (SELECT s0.*, " \
    "  CASE WHEN last_ok IS NULL THEN failures + nf ELSE nf END AS nfail, " \
    "  CASE WHEN nf = 0 THEN NULL " \
    "    WHEN last_ok IS NULL AND failing_since IS NOT NULL THEN failing_since " \
    "    ELSE to_timestamp(first_fail / 1000.0) END AS nsince, " \
    "  CASE WHEN last_ok IS NULL THEN circuit_open_until END AS still_open " \
    "  FROM s0), " \
    "s2 AS (SELECT s1.*, " \
    "  CASE WHEN still_open IS NOT NULL AND nf > 0 " \
    "      AND last_fail >= extract(epoch FROM still_open) * 1000 THEN 'reopened' " \
    "    WHEN still_open IS NOT NULL THEN 'open' " \
    "    WHEN nf > 0 AND nfail >= %ld THEN 'opened' " \
    "    WHEN circuit_open_until IS NOT NULL THEN 'recovered' " \
    "    ELSE 'closed' END AS circ, " \
    "  CASE WHEN disabled_at IS NOT NULL THEN NULL " \
    "    WHEN gone THEN 'the endpoint answered 410 Gone' " \
    "    WHEN nf > 0 AND nsince <= now() - %s * interval '1 hour' " \
    "      THEN 'no successful delivery for %s hours' END AS why, " \
    "  LEAST(coalesce(circuit_cooldown_s, %ld) * 2, %ld) AS doubled " \
    "  FROM s1), " \
    "h AS (UPDATE subscriptions s SET failures = s2.nfail, failing_since = s2.nsince, " \
    "  circuit_open_until = CASE s2.circ " \
    "    WHEN 'reopened' THEN now() + s2.doubled * interval '1 second' " \
    "    WHEN 'opened' THEN now() + %ld * interval '1 second' " \
    "    WHEN 'open' THEN s.circuit_open_until END, " \
    "  circuit_cooldown_s = CASE s2.circ WHEN 'reopened' THEN s2.doubled WHEN 'opened' THEN %ld " \
    "    WHEN 'open' THEN s.circuit_cooldown_s END, " \
    "  slow_until = GREATEST(s.slow_until, to_timestamp(s2.slow_ms / 1000.0)), " \
    "  disabled_at = CASE WHEN s2.why IS NULL THEN s.disabled_at ELSE now() END, " \
    "  disabled_reason = coalesce(s2.why, s.disabled_reason), " \
    "  updated_at = CASE WHEN s2.why IS NULL THEN s.updated_at ELSE now() END " \
    "  FROM s2 WHERE s.id = s2.id " \
    "  RETURNING s.id, s.event_name, s.url, s2.circ, s2.why, s2.nfail, s.circuit_cooldown_s), " \
    "x AS (SELECT * FROM (" \
    "  SELECT 'broker.endpoint.circuit_opened' AS type, id AS sub, event_name AS name, url, " \
    "    nfail || ' consecutive failed attempts: nothing is sent for ' || circuit_cooldown_s " \
    "    || ' seconds, then one probe' AS reason, NULL::uuid AS job FROM h WHERE circ = 'opened' " \
    "  UNION ALL SELECT 'broker.endpoint.recovered', id, event_name, url, " \
    "    'a delivery succeeded: the circuit is closed', NULL FROM h WHERE circ = 'recovered' " \
    "  UNION ALL SELECT 'broker.endpoint.disabled', id, event_name, url, why, NULL " \
    "    FROM h WHERE why IS NOT NULL " \
    "  UNION ALL SELECT 'broker.attempt.exhausted', s.id, s.event_name, s.url, " \
    "    'attempt ' || u.attempt || ' failed: ' || coalesce(u.err, 'unknown error'), u.id " \
    "    FROM u JOIN subscriptions s ON s.id = u.sub " \
    "    WHERE u.status = 'dead' AND u.code IS DISTINCT FROM 410) t " \
    "  WHERE left(t.name, 7) <> 'broker.'), " \
    "ev AS (INSERT INTO events (id, event_name, payload) " \
    "  SELECT wh_uuidv7(), x.type, convert_to(json_strip_nulls(json_build_object('type', x.type, " \
    "    'subscriptionId', x.sub, 'eventName', x.name, 'url', x.url, 'reason', x.reason, " \
    "    'jobId', x.job, 'time', to_char(now() AT TIME ZONE 'UTC', " \
    "    'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))::text, 'UTF8') FROM x " \
    "  RETURNING id, event_name, payload), " \
    "nj AS (INSERT INTO jobs (id, event_id, subscription_id, url, partition, event_name) " \
    "  SELECT wh_uuidv7(), ev.id, r.id, r.url, wh_partition(r.id, %ld), " \
    "    CASE WHEN r.plain_until IS NOT NULL THEN ev.event_name END " \
    "  FROM ev CROSS JOIN LATERAL (SELECT r.id, r.url, r.plain_until FROM subscriptions r " \
    "    WHERE r.event_names && wh_name_keys(ev.event_name) AND r.status = 'active' " \
    "    AND r.disabled_at IS NULL OFFSET 0) r " \
    "  RETURNING id, event_id, subscription_id, url, partition), " \
    "act AS (INSERT INTO subscription_activity (subscription_id, kind, detail) " \
    "  SELECT id, 'circuit_opened', nfail || ' consecutive failed attempts: nothing is sent for ' " \
    "    || circuit_cooldown_s || ' seconds, then one probe' FROM h WHERE circ = 'opened' " \
    "  UNION ALL SELECT id, 'circuit_reopened', 'the probe failed: nothing is sent for ' " \
    "    || circuit_cooldown_s || ' seconds' FROM h WHERE circ = 'reopened' " \
    "  UNION ALL SELECT id, 'circuit_closed', 'a delivery succeeded: recovered' FROM h " \
    "    WHERE circ = 'recovered' " \
    "  UNION ALL SELECT id, 'disabled', why FROM h WHERE why IS NOT NULL), " \
    "ss AS (INSERT INTO subscription_stats AS t (subscription_id, bucket, backend, delivered, " \
    "  failed_attempts, dead, last_success_at, last_failure_at) " \
    "  SELECT sub, date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00Z'), " \
    "    pg_backend_pid(), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok), " \
    "    count(*) FILTER (WHERE status = 'dead'), " \
    "    to_timestamp(max(started_ms) FILTER (WHERE ok) / 1000.0), " \
    "    to_timestamp(max(started_ms) FILTER (WHERE NOT ok) / 1000.0) " \
    "  FROM f GROUP BY sub ORDER BY sub " \
    "  ON CONFLICT (subscription_id, bucket, backend) DO UPDATE SET " \
    "  delivered = t.delivered + EXCLUDED.delivered, " \
    "  failed_attempts = t.failed_attempts + EXCLUDED.failed_attempts, " \
    "  dead = t.dead + EXCLUDED.dead, " \
    "  last_success_at = GREATEST(t.last_success_at, EXCLUDED.last_success_at), " \
    "  last_failure_at = GREATEST(t.last_failure_at, EXCLUDED.last_failure_at)), " \
    "es AS (INSERT INTO stats_hourly AS t (hour, event_name, backend, triggers, jobs, delivered, " \
    "  dead, failed_attempts) " \
    "  SELECT date_trunc('hour', now()), name, pg_backend_pid(), sum(tr), sum(jb), sum(dl), " \
    "    sum(dd), sum(fa) FROM (" \
    "    SELECT name, 0 AS tr, 0 AS jb, (ok)::int AS dl, (status = 'dead')::int AS dd, " \
    "      (NOT ok)::int AS fa FROM f " \
    "    UNION ALL SELECT event_name, 1, 0, 0, 0, 0 FROM ev " \
    "    UNION ALL SELECT ev.event_name, 0, 1, 0, 0, 0 FROM nj JOIN ev ON ev.id = nj.event_id) c " \
    "  GROUP BY name ORDER BY name " \
    "  ON CONFLICT (hour, event_name, backend) DO UPDATE SET " \
    "  triggers = t.triggers + EXCLUDED.triggers, jobs = t.jobs + EXCLUDED.jobs, " \
    "  delivered = t.delivered + EXCLUDED.delivered, dead = t.dead + EXCLUDED.dead, " \
    "  failed_attempts = t.failed_attempts + EXCLUDED.failed_attempts) " \
    "SELECT u.id, CASE WHEN row_number() OVER () = 1 THEN (SELECT json_agg(json_build_object(" \
    "  'j', nj.id, 'e', nj.event_id, 's', nj.subscription_id, 'u', nj.url, 'p', nj.partition, " \
    "  'n', ev.event_name, 'd', convert_from(ev.payload, 'UTF8'))) " \
    "  FROM nj JOIN ev ON ev.id = nj.event_id) END, " \
    "  CASE WHEN row_number() OVER () = 1 THEN (SELECT count(*) FROM h WHERE circ = 'opened') END " \
    "FROM u"

/* Successes of healthy subscriptions (decision 50). For a batch of deliveries (every outcome
 * delivered, so nf = 0, no 410, no Retry-After) whose subscriptions have no failure counted,
 * no failing_since and no circuit, the statement above changes no subscription, raises no
 * operational event and writes no activity: only the attempt rows, the job updates and the
 * two rollups remain, and its other twenty-odd plan nodes cost about 25 us of PostgreSQL per
 * delivery to set up and run for nothing. This statement is those writes alone, guarded: bad
 * probes the batch's subscriptions ($12, by primary key) at the statement's snapshot, the
 * same snapshot at which s0 would have found them, and when one of them is not healthy the
 * statement writes nothing and answers one row (the nil id, 'unhealthy'); the worker then
 * sends the batch through the full statement. The columns and rows are otherwise the full
 * statement's: each updated job; no operational events; no circuit opened.
 * Its commit is asynchronous (decision 56): set_config(..., true) sets synchronous_commit off
 * for this transaction alone, so recording successes neither waits for a WAL flush nor
 * makes the broker's commits wait behind one. A PostgreSQL crash can lose the last successes recorded
 * (up to about 0.6 s): their jobs return to queued after Redis has forgotten them, and the
 * reconciler sends them again, a duplicate and never a loss. Failures, deaths and every
 * health or operational-event change go through the full statement, whose commit is
 * synchronous and makes every asynchronous commit before it durable too (the WAL is flushed
 * in order). */
#define OUTCOME_OK_SQL                                                                          \
    OUTCOME_O("WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL")                 \
    "bad AS MATERIALIZED (SELECT 1 FROM subscriptions s WHERE s.id = ANY($12::uuid[]) "         \
    "  AND s.status = 'active' AND (s.failures > 0 OR s.failing_since IS NOT NULL "              \
    "  OR s.circuit_open_until IS NOT NULL) LIMIT 1), "                                          \
    OUTCOME_A("NOT EXISTS (SELECT FROM bad)")                                                    \
    "u AS (UPDATE jobs j SET status = 'delivered', attempts = GREATEST(j.attempts, o.attempt), " \
    "  last_status_code = o.code, last_error = o.err, next_attempt_at = NULL, "                 \
    "  delivered_at = now(), updated_at = now() "                                                \
    "  FROM o WHERE j.id = ANY($1::uuid[]) AND j.id = o.id "                                     \
    "  AND j.status NOT IN ('delivered', 'dead', 'cancelled') AND NOT EXISTS (SELECT FROM bad) " \
    "  RETURNING j.id, j.subscription_id AS sub, o.started_ms, o.name), "                        \
    "ss AS (INSERT INTO subscription_stats AS t (subscription_id, bucket, backend, delivered, "  \
    "  failed_attempts, dead, last_success_at) "                                                 \
    "  SELECT sub, date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00Z'), "              \
    "    pg_backend_pid(), count(*), 0, 0, to_timestamp(max(started_ms) / 1000.0) "             \
    "  FROM u GROUP BY sub ORDER BY sub "                                                        \
    "  ON CONFLICT (subscription_id, bucket, backend) DO UPDATE SET "                            \
    "  delivered = t.delivered + EXCLUDED.delivered, "                                           \
    "  last_success_at = GREATEST(t.last_success_at, EXCLUDED.last_success_at)), "              \
    "es AS (INSERT INTO stats_hourly AS t (hour, event_name, backend, delivered) "               \
    "  SELECT date_trunc('hour', now()), name, pg_backend_pid(), count(*) "                     \
    "  FROM u GROUP BY name ORDER BY name "                                                      \
    "  ON CONFLICT (hour, event_name, backend) DO UPDATE SET "                                   \
    "  delivered = t.delivered + EXCLUDED.delivered) "                                           \
    "SELECT u.id, NULL::text, NULL::bigint FROM u "                                              \
    "UNION ALL SELECT '00000000-0000-0000-0000-000000000000'::uuid, 'unhealthy', NULL FROM bad"

static char *outcome_sql;

/* The statement with the settings written in (numbers the config table has bounded). */
static void outcome_sql_build(void)
{
    char hours[64];
    snprintf(hours, sizeof hours, "%.6g", W.disable_after_hours);
    outcome_sql = xasprintf(OUTCOME_SQL_FMT, W.cfg.breaker_failures, hours, hours,
                            W.cfg.breaker_cooldown, W.cfg.breaker_cooldown_max,
                            W.cfg.breaker_cooldown, W.cfg.breaker_cooldown, W.cfg.partitions);
}

const char *outcome_sql_tail(void)
{
    if (!outcome_sql)
        outcome_sql_build();
    const char *t = strstr(outcome_sql, "f AS (SELECT u.*");
    if (!t)
        abort(); /* a programming error: the statement lost the CTE its tail starts with */
    return t;
}

/* A job the statement did not update was already finished (another worker, after a claim):
 * Redis is only cleaned up, never given a retry or a dead letter for it. */
static void apply_returned(struct gcommit_node *batch, const struct idset *returned)
{
    for (struct job *j = job_of(batch); j; j = job_of(j->gc.next)) {
        if (idset_has(returned, j->m.job))
            continue;
        if (j->out != OUT_DELIVERED && j->out != OUT_CANCELLED)
            log_info(j->m.job, "attempt %d finished after the job was already finished "
                               "elsewhere; not scheduling anything",
                     j->m.attempt);
        j->out = OUT_SKIP;
    }
}

void outcome_count(enum outcome out, const struct job *j, const char *job_id)
{
    size_t cls = metrics_status_class(j->status_code);
    switch (out) {
    case OUT_DELIVERED:
        metrics_inc(M_ATTEMPTS, MA_SUCCESS(cls));
        metrics_inc(M_JOBS_FINISHED, MF_DELIVERED);
        /* creation (the id's ms) to the end of this attempt */
        int64_t made = id_time_ms(job_id);
        if (made > 0)
            metrics_observe(M_DELIVERY_LAG, (double)(j->started_ms + j->duration_ms - made) / 1000);
        break;
    case OUT_RETRY:
        metrics_inc(M_ATTEMPTS, MA_FAILURE(cls));
        metrics_inc(M_RETRIES, 0);
        break;
    case OUT_DEAD:
        metrics_inc(M_ATTEMPTS, MA_FAILURE(cls));
        metrics_inc(M_JOBS_FINISHED, MF_DEAD);
        break;
    case OUT_CANCELLED:
        metrics_inc(M_JOBS_FINISHED, MF_CANCELLED);
        return; /* no attempt */
    default:
        return;
    }
    metrics_observe(M_ATTEMPT_DURATION, (double)j->duration_ms / 1000);
}

/* The metrics of a committed batch's recorded outcomes (apply_returned has made the jobs the
 * statement did not update OUT_SKIP). */
static void count_recorded(struct gcommit_node *batch)
{
    for (struct job *j = job_of(batch); j; j = job_of(j->gc.next))
        outcome_count(j->out, j, j->m.job);
}

static void written(const struct gcommit_batch *bt, PGresult *res, const char *err,
                    const struct idset *returned, void *arg)
{
    (void)arg;
    if (err) {
        long n = 0;
        for (struct job *j = job_of(bt->head), *next; j; j = next) {
            next = job_of(j->gc.next);
            W.inflight--;
            job_free(j);
            n++;
        }
        log_warn("outcome", "cannot record %ld outcomes (%s): the jobs stay pending in Redis and "
                            "are claimed again",
                 n, err);
    } else {
        /* the operational events the batch caused, committed with it: now to Redis */
        if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 1))
            opevents_enqueue(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
        apply_returned(bt->head, returned);
        if (PQntuples(res) > 0 && PQnfields(res) > 2 && !PQgetisnull(res, 0, 2))
            metrics_add(M_CIRCUIT_OPENED, 0, strtoull(PQgetvalue(res, 0, 2), NULL, 10));
        count_recorded(bt->head);
        finalize(bt->head);
    }
}

/* The short statement's answer: a subscription of the batch was not healthy, nothing was
 * written, and the batch goes through the full statement (its jobs keep their outcomes). */
static void written_ok(const struct gcommit_batch *bt, PGresult *res, const char *err,
                       const struct idset *returned, void *arg)
{
    if (!err && PQntuples(res) == 1 && !PQgetisnull(res, 0, 1) &&
        strcmp(PQgetvalue(res, 0, 1), "unhealthy") == 0) {
        log_debug("outcome", "%zu successes of a subscription that is not healthy: recorded by "
                             "the full statement",
                  bt->items);
        for (struct gcommit_node *n = bt->head, *next; n; n = next) {
            next = n->next;
            if (gcommit_submit(&gc, n) != GCOMMIT_FITS)
                abort(); /* no pending bound: cannot happen */
        }
        return;
    }
    written(bt, res, err, returned, arg);
}

enum { A_ID, A_ATT, A_ST, A_CODE, A_ERR, A_NEXT, A_DUR, A_EXC, A_START, A_RETRY, A_NAME, A_N,
       A_SUB = A_N, A_N_OK };

/* Appends one outcome to the statement's arrays; false for SKIP / RESCHED (nothing to record:
 * Redis clean-up only). */
static bool add_outcome(struct gcommit_node *n, struct buf *arr, void *arg)
{
    (void)arg;
    struct job *j = job_of(n);
    /* Reused across batches: not freed and reallocated every commit. */
    static struct buf text;
    const char *st = out_status(j->out);
    if (!st)
        return false;
    bool attempted = j->out != OUT_CANCELLED;
    pgarr_add(&arr[A_ID], j->m.job, ID_LEN);
    pgarr_addll(&arr[A_ATT], attempted ? j->m.attempt : 0);
    pgarr_add(&arr[A_ST], st, strlen(st));
    if (attempted && j->status_code > 0)
        pgarr_addll(&arr[A_CODE], j->status_code);
    else
        pgarr_null(&arr[A_CODE]);
    if (j->error[0]) {
        buf_reset(&text);
        struct buf e = {.data = j->error, .len = strlen(j->error)};
        excerpt_text(&e, &text);
        pgarr_add(&arr[A_ERR], text.data, text.len);
    } else {
        pgarr_null(&arr[A_ERR]);
    }
    pgarr_addll(&arr[A_NEXT], j->out == OUT_RETRY ? j->next_ms : 0);
    pgarr_addll(&arr[A_DUR], j->duration_ms);
    if (attempted && j->started_ms) {
        excerpt_text(&j->excerpt, &text);
        pgarr_add(&arr[A_EXC], text.data ? text.data : "", text.len);
    } else {
        pgarr_null(&arr[A_EXC]);
    }
    pgarr_addll(&arr[A_START], j->started_ms ? j->started_ms : clock_now_ms());
    /* a Retry-After slows the whole subscription down (slow_until) */
    if (attempted && (j->status_code == 429 || j->status_code == 503) && j->retry_after_ms >= 0)
        pgarr_addll(&arr[A_RETRY], j->retry_after_ms);
    else
        pgarr_null(&arr[A_RETRY]);
    pgarr_add(&arr[A_NAME], j->m.name, strlen(j->m.name)); /* the rollups' event name */
    return true;
}

/* The same, and the job's subscription for the short statement's guard. */
static bool add_ok(struct gcommit_node *n, struct buf *arr, void *arg)
{
    if (!add_outcome(n, arr, arg))
        return false;
    pgarr_add(&arr[A_SUB], job_of(n)->m.sub, ID_LEN);
    return true;
}

static void skipped(struct gcommit_node *head, void *arg)
{
    (void)arg;
    finalize(head);
}

static struct gcommit_ops outcome_ops = {
    .stmt_name = "wh_outcome",
    .nparams = A_N,
    .add = add_outcome,
    .skipped = skipped,
    .done = written,
    .linger = true,
};

static const struct gcommit_ops outcome_ok_ops = {
    .stmt_name = "wh_outcome_ok",
    .sql = OUTCOME_OK_SQL,
    .nparams = A_N_OK,
    .add = add_ok,
    .skipped = skipped,
    .done = written_ok,
    .linger = true,
};

void outcome_submit(struct job *j)
{
    if (!gc.ops) {
        outcome_sql_build();
        outcome_ops.sql = outcome_sql;
        /* The same group commit as the broker's, bounded by outcomes per batch only. */
        struct gcommit_limits batch = {OUTCOME_BATCH_MAX, 0, 0}, pending = {0, 0, 0};
        gcommit_init(&gc, &outcome_ops, NULL, W.pg, &batch, &pending);
        gcommit_init(&gc_ok, &outcome_ok_ops, NULL, W.pg, &batch, &pending);
    }
    if (j->batch) { /* a batch's delivery: recorded for each of its jobs by batch.c */
        batch_outcome(j);
        return;
    }
    if (j->out == OUT_RETRY && j->status_code == 410) {
        /* Gone: the subscription is disabled in the same commit; no retry for this job */
        log_info(j->m.job, "HTTP 410 from %s: dead, and the subscription is disabled", j->m.url);
        j->out = OUT_DEAD;
    }
    j->gc.jobs = 1; /* one row back per recorded outcome */
    j->gc.bytes = 0;
    if (gcommit_submit(j->out == OUT_DELIVERED ? &gc_ok : &gc, &j->gc) != GCOMMIT_FITS)
        abort(); /* no pending bound: cannot happen */
}
