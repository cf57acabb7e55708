/* Runtime visibility: GET /api/v0/webhooks/<name>/<id>/status (one subscription's health,
 * counts, latency and recent activity) and GET /api/v0/stats (counts per event name since a
 * time), read from the lifecycle log and the rollups of docs/decisions.md 29, confined to a
 * tenant key's own subscriptions (decision 46). Each answer is one statement that builds the
 * JSON in PostgreSQL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "evnames.h"
#include "clock.h"
#include "codec.h"
#include "ids.h"
#include "rfc3339.h"
#include "sql.h"
#include "valid.h"

#define STATS_MAX_AGE_S (30L * 24 * 3600) /* how far back ?since= may go */
#define STATS_DEFAULT_AGE_S (24L * 3600)

/* The rollup buckets of the last hour / day (the current bucket included). */
#define SINCE_1H "date_bin('5 minutes', now() - interval '1 hour', timestamptz '2000-01-01 00:00Z')"
#define SINCE_24H                                                                                  \
    "date_bin('5 minutes', now() - interval '24 hours', timestamptz '2000-01-01 00:00Z')"

/* {"delivered","failedAttempts","dead"} over the rows of c since <since>. */
#define COUNTS_1H                                                                                  \
    "json_build_object('delivered', coalesce(sum(delivered) FILTER (WHERE bucket >= " SINCE_1H     \
    "), 0), 'failedAttempts', coalesce(sum(failed_attempts) FILTER (WHERE bucket >= " SINCE_1H     \
    "), 0), 'dead', coalesce(sum(dead) FILTER (WHERE bucket >= " SINCE_1H "), 0))"
#define COUNTS_24H                                                                                 \
    "json_build_object('delivered', coalesce(sum(delivered), 0), 'failedAttempts', "               \
    "coalesce(sum(failed_attempts), 0), 'dead', coalesce(sum(dead), 0))"

/* The timestamps of the answer (SQL_TS of each column). */
#define TS_STARTED SQL_TS("started_at")
#define TS_AT SQL_TS("at")
#define TS_PAUSED SQL_TS("s.paused_at")
#define TS_DISABLED SQL_TS("s.disabled_at")
#define TS_OPEN_UNTIL SQL_TS("s.circuit_open_until")
#define TS_FAILING SQL_TS("s.failing_since")
#define TS_SUCCESS SQL_TS("last_success_at")
#define TS_FAILURE SQL_TS("last_failure_at")
#define TS_NOW SQL_TS("now()")
/* The start of the rollup rows $1 (Unix seconds) falls in: its hour, or its day (UTC) when
 * that is before the day that started 2 days ago (the reconciler merges those hours by day:
 * reconciler/purge.c). */
#define SINCE_ROW                                                                                  \
    "CASE WHEN to_timestamp($1::double precision) < (date_trunc('day', now() AT TIME ZONE "        \
    "'UTC') - interval '2 days') AT TIME ZONE 'UTC' THEN date_trunc('day', "                       \
    "to_timestamp($1::double precision) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "                   \
    "ELSE date_trunc('hour', to_timestamp($1::double precision)) END"
#define TS_SINCE_ROW SQL_TS(SINCE_ROW)

/* $1 id, $2 event name, $3 the key's tenant (NULL: any subscription). No row: no such active
 * subscription (or one of another tenant, decision 46: the same 404).
 * - c: the last day's rollup rows (primary key range: at most 289 buckets per writer);
 * - ra: the attempts of the subscription's newest 100 jobs, newest 100 first: the newest 100
 *   of each status merged (with the index jobs_subscription (subscription_id, status, id)
 *   each is a backwards index range that stops at 100, whatever the subscription's history),
 *   then their attempts by primary key;
 * - act: the latest 20 lifecycle entries (index subscription_activity_sub_at);
 * - jobsWaiting: the subscription's queued and retrying jobs (jobs_subscription's ranges, or
 *   the unfinished jobs' partial index: the backlog). */
static const char status_sql[] =
    "WITH s AS (SELECT * FROM subscriptions WHERE id = $1 AND $2 = ANY(event_names) "
    "  AND status = 'active' AND ($3::text IS NULL OR tenant = $3)), "
    "c AS (SELECT * FROM subscription_stats WHERE subscription_id = $1 "
    "  AND bucket >= " SINCE_24H "), "
    "ra AS (SELECT a.* FROM (SELECT j.* FROM (VALUES ('queued'), ('retrying'), ('delivered'), "
    "  ('dead'), ('cancelled')) st(s) CROSS JOIN LATERAL (SELECT id FROM jobs "
    "  WHERE subscription_id = $1 AND status = st.s ORDER BY id DESC "
    "  LIMIT 100) j ORDER BY j.id DESC LIMIT 100) j "
    "  CROSS JOIN LATERAL (SELECT * FROM attempts WHERE job_id = j.id) a "
    "  ORDER BY a.started_at DESC LIMIT 100), "
    "act AS (SELECT * FROM subscription_activity WHERE subscription_id = $1 "
    "  ORDER BY at DESC, n DESC LIMIT 20), "
    "e AS (SELECT * FROM (SELECT started_at AS at, 0::bigint AS n, "
    "json_build_object('at', " TS_STARTED
    ", 'kind', 'attempt', 'jobId', job_id, 'attempt', attempt, 'statusCode', "
    "  status_code, 'durationMs', duration_ms, 'error', error) AS j FROM ra "
    "  ORDER BY started_at DESC LIMIT 20) x "
    "  UNION ALL SELECT at, n, json_build_object('at', " TS_AT ", 'kind', kind, "
    "  'detail', detail) FROM act) "
    "SELECT json_build_object('subscriptionId', s.id, 'eventName', s.event_names[1], 'url', s.url, "
    "  'health', " SQL_SUB_HEALTH ", 'disabledReason', s.disabled_reason, "
    "  'pausedAt', " TS_PAUSED ", 'disabledAt', " TS_DISABLED ", "
    "  'circuitOpenUntil', " TS_OPEN_UNTIL ", 'failingSince', " TS_FAILING ", "
    "  'consecutiveFailures', s.failures, "
    "  'lastSuccessAt', (SELECT " TS_SUCCESS " FROM subscription_stats "
    "    WHERE subscription_id = $1 AND last_success_at IS NOT NULL "
    "    ORDER BY bucket DESC, last_success_at DESC LIMIT 1), "
    "  'lastFailureAt', (SELECT " TS_FAILURE " FROM subscription_stats "
    "    WHERE subscription_id = $1 AND last_failure_at IS NOT NULL "
    "    ORDER BY bucket DESC, last_failure_at DESC LIMIT 1), "
    "  'lastHour', (SELECT " COUNTS_1H " FROM c), "
    "  'last24Hours', (SELECT " COUNTS_24H " FROM c), "
    "  'latencyMs', (SELECT json_build_object('p50', percentile_disc(0.5) WITHIN GROUP "
    "    (ORDER BY duration_ms), 'p99', percentile_disc(0.99) WITHIN GROUP (ORDER BY "
    "    duration_ms), 'samples', count(*)) FROM ra), "
    "  'jobsWaiting', (SELECT count(*) FROM jobs WHERE subscription_id = $1 "
    "    AND status IN ('queued', 'retrying')), "
    "  'recentActivity', coalesce((SELECT json_agg(j ORDER BY at DESC, n DESC) FROM (SELECT * "
    "    FROM e ORDER BY at DESC, n DESC LIMIT 20) t), '[]'), "
    "  'time', " TS_NOW ")::text FROM s";

static void json_done(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) != 1) {
        http_error(r, 404, "not_found", "no subscription %s for event %s", r->seg[1], r->seg[0]);
        return;
    }
    struct buf b = {0};
    buf_add(&b, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    http_reply(r, 200, &b);
}

void status_get(struct req *r)
{
    if (evname_kind(r->seg[0], strlen(r->seg[0])) == EVNAME_INVALID) {
        http_error(r, 400, "invalid_field",
                   "event name must be one of the subscription's event names or patterns (1 to "
                   "%d characters of A-Z a-z 0-9 . _ : -, or a pattern ending in .*, or *)",
                   EVENT_NAME_MAX);
        return;
    }
    if (!id_valid(r->seg[1], strlen(r->seg[1]))) {
        http_error(r, 400, "invalid_field", "id must be a subscription id (a UUID)");
        return;
    }
    char norm[ID_LEN + 1];
    id_normalize(r->seg[1], norm);
    memcpy(r->seg[1], norm, sizeof norm);
    const char *params[] = {r->seg[1], r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, status_sql, 3, params, NULL, NULL, 0, json_done, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* ---- stats -------------------------------------------------------------------------------- */

/* The answer from n (name, t, j, d, x, f, rp: one row per event name). */
#define STATS_ANSWER                                                                               \
    "SELECT json_build_object('since', " TS_SINCE_ROW ", 'until', " TS_NOW ", "                    \
    "  'total', json_build_object('triggers', coalesce(sum(t), 0), 'jobsCreated', "                \
    "  coalesce(sum(j), 0), 'delivered', coalesce(sum(d), 0), 'dead', coalesce(sum(x), 0), "       \
    "  'failedAttempts', coalesce(sum(f), 0), 'retriesPending', coalesce(sum(rp), 0)), "           \
    "  'events', coalesce(json_agg(json_build_object('eventName', name, 'triggers', t, "           \
    "  'jobsCreated', j, 'delivered', d, 'dead', x, 'failedAttempts', f, 'retriesPending', rp) "   \
    "  ORDER BY name), '[]'))::text FROM n"

/* $1 since (Unix seconds; rounded down to the start of its rollup row: SINCE_ROW). The
 * rollup rows of every writer from there (primary key range scan), summed per event name;
 * retries pending from the unfinished jobs' partial index (the backlog), with each job's
 * subscription's name. */
static const char stats_sql[] =
    "WITH r AS (SELECT event_name, sum(triggers) AS t, sum(jobs) AS j, sum(delivered) AS d, "
    "  sum(dead) AS x, sum(failed_attempts) AS f FROM stats_hourly "
    "  WHERE hour >= " SINCE_ROW " GROUP BY event_name), "
    "p AS (SELECT coalesce(j.event_name, s.event_name) AS event_name, count(*) AS n FROM jobs j "
    "  JOIN subscriptions s ON s.id = j.subscription_id "
    "  WHERE j.status = 'retrying' GROUP BY 1), "
    "n AS (SELECT coalesce(r.event_name, p.event_name) AS name, coalesce(r.t, 0) AS t, "
    "  coalesce(r.j, 0) AS j, coalesce(r.d, 0) AS d, coalesce(r.x, 0) AS x, coalesce(r.f, 0) AS f, "
    "  coalesce(p.n, 0) AS rp FROM r FULL JOIN p ON p.event_name = r.event_name) " STATS_ANSWER;

/* The same answer for one tenant's subscriptions (a tenant key, or an admin's ?tenant=;
 * decision 46): stats_hourly mixes tenants, so $2's subscriptions (subscriptions_tenant) are
 * read one by one. Their jobs made since $1 (jobs_subscription: one id range per status) give
 * jobsCreated and triggers (the distinct events among them) under the event's name; their
 * rollup rows (subscription_stats, kept 2 days) delivered, dead and failedAttempts under the
 * subscription's first name; their retrying jobs retriesPending. OFFSET 0 keeps each lateral
 * part a per-subscription index range (pulled up, the planner read the whole window's jobs by
 * primary key when one tenant had a third of them): the cost follows the tenant's own jobs. */
static const char stats_tenant_sql[] =
    "WITH s AS (SELECT id, event_name FROM subscriptions WHERE tenant = $2), "
    "w AS (SELECT wh_uuid_at(" SINCE_ROW ") AS lo), "
    "jb AS (SELECT coalesce(j.event_name, s.event_name) AS event_name, "
    "  count(DISTINCT j.event_id) AS t, count(*) AS j FROM s "
    "  CROSS JOIN (VALUES ('queued'), ('retrying'), ('delivered'), ('dead'), ('cancelled')) st(v) "
    "  CROSS JOIN LATERAL (SELECT event_name, event_id FROM jobs WHERE subscription_id = s.id "
    "  AND status = st.v AND id >= (SELECT lo FROM w) OFFSET 0) j GROUP BY 1), "
    "c AS (SELECT s.event_name, sum(c.delivered) AS d, sum(c.dead) AS x, "
    "  sum(c.failed_attempts) AS f FROM s CROSS JOIN LATERAL (SELECT * FROM subscription_stats "
    "  WHERE subscription_id = s.id AND bucket >= " SINCE_ROW " OFFSET 0) c GROUP BY 1), "
    "p AS (SELECT coalesce(j.event_name, s.event_name) AS event_name, count(*) AS n FROM s "
    "  CROSS JOIN LATERAL (SELECT event_name FROM jobs WHERE subscription_id = s.id "
    "  AND status = 'retrying' OFFSET 0) j GROUP BY 1), "
    "u AS (SELECT event_name, t, j, 0 AS d, 0 AS x, 0 AS f, 0 AS rp FROM jb "
    "  UNION ALL SELECT event_name, 0, 0, d, x, f, 0 FROM c "
    "  UNION ALL SELECT event_name, 0, 0, 0, 0, 0, n FROM p), "
    "n AS (SELECT event_name AS name, sum(t) AS t, sum(j) AS j, sum(d) AS d, sum(x) AS x, "
    "  sum(f) AS f, sum(rp) AS rp FROM u GROUP BY 1) " STATS_ANSWER;

void stats_get(struct req *r)
{
    double now = (double)clock_now_ms() / 1000.0, since = now - STATS_DEFAULT_AGE_S;
    /* a tenant key: its tenant's; an admin key: everything, or one tenant's with ?tenant= */
    const char *scope = req_tenant_scope(r);
    char *tenant = http_query_param(r, "tenant");
    if (tenant && !valid_tenant(tenant, strlen(tenant))) {
        free(tenant);
        http_error(r, 400, "invalid_field", "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -",
                   TENANT_MAX);
        return;
    }
    if (tenant && scope && strcmp(tenant, scope) != 0) {
        free(tenant);
        http_error(r, 403, "forbidden", "this key sees only the stats of its own tenant");
        return;
    }
    char tenant_text[TENANT_MAX + 1];
    snprintf(tenant_text, sizeof tenant_text, "%s", scope ? scope : tenant ? tenant : "");
    bool scoped = scope || tenant;
    free(tenant);
    char *v = http_query_param(r, "since");
    if (v) {
        int64_t us;
        int bad = rfc3339_parse(v, &us);
        free(v);
        if (!bad)
            since = (double)us / 1e6;
        if (bad) {
            http_error(r, 400, "invalid_field",
                       "since must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z");
            return;
        }
        if (since < now - STATS_MAX_AGE_S || since > now + 60) {
            http_error(r, 400, "invalid_field",
                       "since must be within the last %ld days, not in the future",
                       STATS_MAX_AGE_S / 86400);
            return;
        }
    }
    char since_text[40];
    snprintf(since_text, sizeof since_text, "%.3f", since);
    const char *params[] = {since_text, tenant_text};
    if (pg_query(r->b->pg_api, scoped ? stats_tenant_sql : stats_sql, scoped ? 2 : 1, params, NULL,
                 NULL, 0, json_done, r) < 0)
        http_db_error(r, NULL, "not connected");
}
