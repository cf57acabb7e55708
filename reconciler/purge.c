/* Retention: deleting finished events older than RETENTION_DAYS with their jobs, attempts and
 * batches, in bounded batches, clearing previous signing secrets whose grace period is over and
 * Idempotency-Keys older than SCHEMA_IDEMPOTENCY_TTL. Ids are
 * UUIDv7, so "older than" is a primary-key range; there are no foreign keys, so the children
 * are deleted explicitly in the same statement. The status rollups (docs/decisions.md 29) are
 * merged (past hours, then old days, per event name; old 5-minute rows by hour per
 * subscription) and dropped after 31 days (per event name) and 2 days (per subscription).
 * Deleted subscriptions are kept (a small audit trail that old jobs still point to), without
 * their secrets (the broker clears them). */
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "recon.h"
#include "schema.h"

/* The smallest UUIDv7 of the cutoff millisecond: every id below it is older. */
#define CUTOFF_ID                                                                                  \
    "(SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-000000000000')::uuid "    \
    "FROM (SELECT lpad(to_hex((extract(epoch FROM now() - make_interval(days => $1::int)) "      \
    "* 1000)::bigint), 12, '0') AS h) t)"

#define OLD_EVENTS                                                                                 \
    "SELECT e.id FROM events e WHERE e.id < " CUTOFF_ID " AND e.fanout IS NULL "                 \
    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id "                               \
    "AND j.status IN ('queued', 'retrying')) ORDER BY e.id LIMIT $2::int"

static const char count_sql[] = "SELECT count(*) FROM (" OLD_EVENTS ") t";
static const char delete_sql[] =
    "WITH e AS (" OLD_EVENTS "), "
    "j AS (DELETE FROM jobs WHERE event_id IN (SELECT id FROM e) RETURNING id, batch_id), "
    "a AS (DELETE FROM attempts WHERE job_id IN (SELECT id FROM j)), "
    /* the batches of those jobs (decision 40): finished with them (a batch finishes as a
     * unit, and an event with an unfinished job is not purged) */
    "b AS (DELETE FROM batches WHERE id IN (SELECT batch_id FROM j WHERE batch_id IS NOT NULL)), "
    "d AS (DELETE FROM events WHERE id IN (SELECT id FROM e) RETURNING 1) "
    "SELECT count(*) FROM d";

/* A previous secret stops signing at its expiry (the worker compares it when signing); this
 * removes it from the database too. */
#define EXPIRED_PREVIOUS                                                                           \
    "SELECT id FROM subscriptions WHERE previous_secret_expires_at <= now() LIMIT $1::int"
static const char expired_count_sql[] = "SELECT count(*) FROM (" EXPIRED_PREVIOUS ") t";
static const char expired_clear_sql[] =
    "WITH c AS (UPDATE subscriptions SET previous_secret = NULL, "
    "previous_secret_expires_at = NULL WHERE id IN (" EXPIRED_PREVIOUS ") "
    "AND previous_secret_expires_at <= now() RETURNING 1) SELECT count(*) FROM c";

/* A key older than the TTL no longer holds its event (the broker already treats it as free);
 * this removes it, with its time, digest and job count. Rows a trigger has locked (it is
 * freeing or answering that key) are skipped, so the purge never waits for the brokers. The
 * batch's ids go as an array so that the update finds them in the primary key (as IN, the
 * planner preferred a scan of every event). */
#define EXPIRED_KEYS                                                                               \
    "SELECT id FROM events WHERE idempotency_key IS NOT NULL AND idempotency_at <= now() - "      \
    SCHEMA_IDEMPOTENCY_TTL " ORDER BY idempotency_at LIMIT $1::int"
static const char keys_count_sql[] = "SELECT count(*) FROM (" EXPIRED_KEYS ") t";
static const char keys_clear_sql[] =
    "WITH c AS (UPDATE events SET idempotency_key = NULL, idempotency_at = NULL, "
    "idempotency_sha256 = NULL, idempotency_jobs = NULL WHERE id = ANY(ARRAY(" EXPIRED_KEYS
    " FOR UPDATE SKIP LOCKED)) AND idempotency_at <= now() - " SCHEMA_IDEMPOTENCY_TTL
    " RETURNING 1) SELECT count(*) FROM c";

/* The rollups of docs/decisions.md 29, RECONCILE_BATCH rows at a time (an index range:
 * stats_hourly's primary key, subscription_stats_bucket): hourly rows past the 30 days GET
 * /api/v0/stats may ask for (and a day's margin), 5-minute rows of subscriptions past the
 * status's 24 hours (and a day's margin). */
#define OLD_ROLLUP(t, col, age)                                                                    \
    "SELECT ctid FROM " t " WHERE " col " < now() - interval '" age "' LIMIT $1::int"
#define OLD_HOURLY OLD_ROLLUP("stats_hourly", "hour", "31 days")
#define OLD_SUBSTATS OLD_ROLLUP("subscription_stats", "bucket", "2 days")
static const char hourly_count_sql[] = "SELECT count(*) FROM (" OLD_HOURLY ") t";
static const char hourly_clear_sql[] =
    "WITH c AS (DELETE FROM stats_hourly WHERE ctid = ANY(ARRAY(" OLD_HOURLY
    ")) RETURNING 1) SELECT count(*) FROM c";
static const char substats_count_sql[] = "SELECT count(*) FROM (" OLD_SUBSTATS ") t";
static const char substats_clear_sql[] =
    "WITH c AS (DELETE FROM subscription_stats WHERE ctid = ANY(ARRAY(" OLD_SUBSTATS
    ")) RETURNING 1) SELECT count(*) FROM c";

/* Each writer has its own hourly rows (decision 29); once an hour has been over for 10
 * minutes nobody writes it any more, and its rows are merged into one per event name
 * (backend 0); hours before the day that started 2 days ago are merged further into one row
 * per day (hour = the day's start), so that GET /api/v0/stats sums at most about 80 rows per
 * name over 30 days, whatever the number of brokers and workers. RECONCILE_BATCH source rows
 * at a time; the sums of one statement are grouped, so its upsert meets each merged row once
 * (a merged row is never a source of the same statement). Dates are UTC. */
#define STATS_DAY_CUT                                                                              \
    "(date_trunc('day', now() AT TIME ZONE 'UTC') - interval '2 days') AT TIME ZONE 'UTC'"
#define STATS_DAY(h) "(date_trunc('day', " h " AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
#define UNMERGED                                                                                   \
    "SELECT hour, event_name, backend FROM stats_hourly WHERE (backend <> 0 "                     \
    "AND hour < date_trunc('hour', now() - interval '10 minutes')) OR (hour < " STATS_DAY_CUT    \
    " AND hour <> " STATS_DAY("hour") ") ORDER BY hour, event_name, backend LIMIT $1::int"
static const char merge_count_sql[] = "SELECT count(*) FROM (" UNMERGED ") t";
static const char merge_sql[] =
    "WITH o AS (" UNMERGED " FOR UPDATE), "
    "d AS (DELETE FROM stats_hourly s USING o WHERE s.hour = o.hour "
    "  AND s.event_name = o.event_name AND s.backend = o.backend RETURNING s.*), "
    "m AS (INSERT INTO stats_hourly AS t (hour, event_name, backend, triggers, jobs, delivered, "
    "  dead, failed_attempts) SELECT CASE WHEN hour < " STATS_DAY_CUT " THEN " STATS_DAY("hour")
    " ELSE hour END, event_name, 0, sum(triggers), sum(jobs), sum(delivered), sum(dead), "
    "  sum(failed_attempts) FROM d GROUP BY 1, 2 "
    "  ON CONFLICT (hour, event_name, backend) DO UPDATE SET "
    "  triggers = t.triggers + EXCLUDED.triggers, jobs = t.jobs + EXCLUDED.jobs, "
    "  delivered = t.delivered + EXCLUDED.delivered, dead = t.dead + EXCLUDED.dead, "
    "  failed_attempts = t.failed_attempts + EXCLUDED.failed_attempts) "
    "SELECT count(*) FROM d";

/* The same for subscription_stats: 5-minute rows older than 2 hours (the status's last hour
 * never reads them) are merged into one row per subscription and hour (backend 0), so the
 * status's last 24 hours are about 50 rows of a subscription rather than 288 per writer. */
#define SUB_UNMERGED                                                                               \
    "SELECT subscription_id, bucket, backend FROM subscription_stats "                            \
    "WHERE bucket < date_trunc('hour', now() - interval '2 hours') "                              \
    "AND NOT (backend = 0 AND bucket = date_trunc('hour', bucket)) ORDER BY bucket LIMIT $1::int"
static const char sub_merge_count_sql[] = "SELECT count(*) FROM (" SUB_UNMERGED ") t";
static const char sub_merge_sql[] =
    "WITH o AS (" SUB_UNMERGED " FOR UPDATE), "
    "d AS (DELETE FROM subscription_stats s USING o WHERE s.subscription_id = o.subscription_id "
    "  AND s.bucket = o.bucket AND s.backend = o.backend RETURNING s.*), "
    "m AS (INSERT INTO subscription_stats AS t (subscription_id, bucket, backend, delivered, "
    "  failed_attempts, dead, last_success_at, last_failure_at) "
    "  SELECT subscription_id, date_trunc('hour', bucket), 0, sum(delivered), "
    "  sum(failed_attempts), sum(dead), max(last_success_at), max(last_failure_at) FROM d "
    "  GROUP BY 1, 2 ON CONFLICT (subscription_id, bucket, backend) DO UPDATE SET "
    "  delivered = t.delivered + EXCLUDED.delivered, "
    "  failed_attempts = t.failed_attempts + EXCLUDED.failed_attempts, "
    "  dead = t.dead + EXCLUDED.dead, "
    "  last_success_at = GREATEST(t.last_success_at, EXCLUDED.last_success_at), "
    "  last_failure_at = GREATEST(t.last_failure_at, EXCLUDED.last_failure_at)) "
    "SELECT count(*) FROM d";

/* Runs sql (dry run: dry_sql, once) with params until a batch comes back smaller than
 * RECONCILE_BATCH; the statements return the number of rows they handled. The total, or -1. */
static long in_batches(struct recon *r, const char *sql, const char *dry_sql, int nparams,
                       const char *const *params)
{
    long total = 0;
    for (;;) {
        PGresult *res = recon_sql(r, r->cfg.dry_run ? dry_sql : sql, nparams, params);
        if (!res)
            return -1;
        long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        total += n;
        if (n < r->cfg.batch || r->cfg.dry_run)
            return total;
    }
}

/* Clears, in batches of RECONCILE_BATCH, what sql clears (dry_sql: what it would, in a dry
 * run); what names it in the log line. 0, or -1. */
static int clear_expired(struct recon *r, const char *sql, const char *dry_sql, const char *what)
{
    char batch[24];
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    const char *params[] = {batch};
    long total = in_batches(r, sql, dry_sql, 1, params);
    if (total < 0)
        return -1;
    if (total)
        log_info("purge", "%s %ld %s", r->cfg.dry_run ? "would clear at least" : "cleared", total,
                 what);
    return 0;
}

int recon_purge(struct recon *r)
{
    if (clear_expired(r, expired_clear_sql, expired_count_sql,
                      "previous secrets whose grace period is over") < 0 ||
        clear_expired(r, keys_clear_sql, keys_count_sql,
                      "Idempotency-Keys older than 24 hours") < 0 ||
        clear_expired(r, hourly_clear_sql, hourly_count_sql,
                      "hourly stats rows older than 31 days") < 0 ||
        clear_expired(r, merge_sql, merge_count_sql,
                      "hourly stats rows of past hours (merged)") < 0 ||
        clear_expired(r, sub_merge_sql, sub_merge_count_sql,
                      "subscription stats rows older than 2 hours (merged by hour)") < 0 ||
        clear_expired(r, substats_clear_sql, substats_count_sql,
                      "subscription stats rows older than 2 days") < 0)
        return -1;
    char days[24], batch[24];
    snprintf(days, sizeof days, "%ld", r->cfg.retention_days);
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    const char *params[] = {days, batch};
    long total = in_batches(r, delete_sql, count_sql, 2, params);
    if (total < 0)
        return -1;
    if (total)
        log_info("purge", "%s %ld events (with their jobs and attempts) older than %ld days",
                 r->cfg.dry_run ? "would delete at least" : "deleted", total,
                 r->cfg.retention_days);
    r->n.purged += total;
    return 0;
}
