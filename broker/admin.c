/* GET and PUT /api/v0/admin/delivery: the global delivery switch (one row in PostgreSQL, read
 * by every worker; docs/decisions.md 23), how many jobs wait for delivery, and (GET) every
 * subscription's health, unhealthy first (decision 29). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "codec.h"
#include "log.h"
#include "sql.h"

#define MESSAGE_MAX 500 /* bytes of UTF-8 */

/* Unfinished jobs, counted over the partial index jobs_unfinished (a bitmap scan of it: the
 * cost grows with the backlog, not with history). */
#define SQL_WAITING "(SELECT count(*) FROM jobs WHERE status IN ('queued', 'retrying'))"

/* Columns of both statements: status, message, since, waitingJobs, changed by this statement.
 * "WHERE id" makes the read an index scan: with enable_seqscan off (decision 14) a scan of the
 * one-row table would be costed at 10^10 and set off JIT compilation. */
#define SQL_COLS "status, message, " SQL_TS("changed_at") ", " SQL_WAITING

/* The first SUBS_LISTED active subscriptions, unhealthy first (circuit open, failing,
 * disabled, paused, then healthy; most failures first, then id), and the counts, as JSON. One
 * pass over the active subscriptions (a top-N sort), not over any job. */
#define SUBS_LISTED "1000"
#define SQL_SUBS_HEALTH                                                                            \
    "(SELECT json_build_object('total', count(*), 'unhealthy', count(*) FILTER (WHERE h <> "       \
    "  'healthy'), 'listed', (SELECT coalesce(json_agg(j ORDER BY rk, failures DESC, id), '[]') "   \
    "  FROM (SELECT * FROM hs ORDER BY rk, failures DESC, id LIMIT " SUBS_LISTED ") l)) FROM hs)"
#define SQL_HS                                                                                     \
    "WITH hs0 AS (SELECT id, event_names[1] AS event_name, url, failures, disabled_reason, "       \
    "  " SQL_SUB_HEALTH " AS h "                                                                   \
    "  FROM subscriptions WHERE status = 'active'), "                                              \
    "hs AS (SELECT id, failures, h, CASE h WHEN 'circuit_open' THEN 0 WHEN 'failing' THEN 1 "      \
    "  WHEN 'disabled' THEN 2 WHEN 'paused' THEN 3 ELSE 4 END AS rk, json_build_object('id', id, " \
    "  'eventName', event_name, 'url', url, 'health', h, 'consecutiveFailures', failures, "       \
    "  'disabledReason', disabled_reason) AS j FROM hs0) "

static const char get_sql[] = SQL_HS "SELECT " SQL_COLS ", false, " SQL_SUBS_HEALTH
                                     "::text FROM delivery_switch WHERE id";

/* An upsert (the row is made by migration 5; this restores it if it was deleted by hand).
 * changed_at moves only when the status does. ON CONFLICT DO UPDATE works on the latest
 * committed row, so concurrent PUTs cannot both count as the transition. */
static const char put_sql[] =
    "WITH s AS (INSERT INTO delivery_switch AS d (id, status, message) VALUES (true, $1, $2) "
    "  ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, message = EXCLUDED.message, "
    "  changed_at = CASE WHEN d.status = EXCLUDED.status THEN d.changed_at ELSE now() END "
    "  RETURNING d.status, d.message, d.changed_at) "
    "SELECT " SQL_COLS ", changed_at = now() FROM s";

static void answered(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) != 1) {
        http_error(r, 500, "internal",
                   "the delivery switch row is missing; PUT /api/v0/admin/delivery restores it");
        return;
    }
    const char *status = PQgetvalue(res, 0, 0);
    bool msg = !PQgetisnull(res, 0, 1);
    if (strcmp(PQgetvalue(res, 0, 4), "t") == 0) {
        /* The message holds no control characters (checked on the way in): safe in a log. */
        if (strcmp(status, "offline") == 0)
            log_warn(r->id, "delivery switched OFFLINE: workers stop sending within about 1 s%s%s",
                     msg ? ": " : "", msg ? PQgetvalue(res, 0, 1) : "");
        else
            log_info(r->id, "delivery switched online: workers resume within about 1 s");
    }
    struct buf b = {0};
    buf_adds(&b, "{\"status\":");
    json_escape(&b, status, strlen(status));
    buf_adds(&b, ",\"message\":");
    if (msg)
        json_escape(&b, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
    else
        buf_adds(&b, "null");
    buf_printf(&b, ",\"since\":\"%s\",\"waitingJobs\":%s", PQgetvalue(res, 0, 2),
               PQgetvalue(res, 0, 3));
    if (PQnfields(res) > 5 && !PQgetisnull(res, 0, 5)) {
        /* GET: {"total","unhealthy","listed"} */
        buf_adds(&b, ",\"subscriptions\":");
        buf_add(&b, PQgetvalue(res, 0, 5), (size_t)PQgetlength(res, 0, 5));
    }
    buf_addc(&b, '}');
    http_reply(r, 200, &b);
}

void admin_delivery_get(struct req *r)
{
    if (pg_query(r->b->pg_api, get_sql, 0, NULL, NULL, NULL, 0, answered, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* A message: a string of at most MESSAGE_MAX bytes without control characters (the body was
 * validated: UTF-8, no \u0000), or null. false after replying. */
static bool message_ok(struct req *r, const cJSON *m)
{
    if (cJSON_IsNull(m))
        return true;
    if (!cJSON_IsString(m)) {
        http_error(r, 400, "invalid_field", "message must be a string or null");
        return false;
    }
    size_t n = strlen(m->valuestring);
    if (n > MESSAGE_MAX) {
        http_error(r, 400, "invalid_field", "message is %zu bytes long; at most %d are allowed", n,
                   MESSAGE_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m->valuestring[i];
        if (c < 0x20 || c == 0x7f) {
            http_error(r, 400, "invalid_field",
                       "message must not contain control characters (byte %zu)", i);
            return false;
        }
    }
    return true;
}

void admin_delivery_put(struct req *r)
{
    cJSON *doc = http_body_object(r);
    if (!doc)
        return;
    const cJSON *status = NULL, *message = NULL;
    for (const cJSON *it = doc->child; it; it = it->next) {
        if (strcmp(it->string, "status") == 0) {
            status = it;
        } else if (strcmp(it->string, "message") == 0) {
            message = it;
        } else {
            http_error(r, 400, "invalid_field",
                       "unknown field \"%.64s\" (expected status, message)", it->string);
            goto out_free;
        }
    }
    if (!status || !cJSON_IsString(status) ||
        (strcmp(status->valuestring, "online") != 0 &&
         strcmp(status->valuestring, "offline") != 0)) {
        http_error(r, 400, "invalid_field",
                   status ? "status must be \"online\" or \"offline\""
                          : "status is missing: send \"online\" or \"offline\"");
        goto out_free;
    }
    if (message && !message_ok(r, message))
        goto out_free;
    const char *params[] = {status->valuestring,
                            message && cJSON_IsString(message) ? message->valuestring : NULL};
    if (pg_query(r->b->pg_api, put_sql, 2, params, NULL, NULL, 0, answered, r) < 0)
        http_error(r, 503, "unavailable", "the database is unavailable; nothing was changed");
out_free:
    cJSON_Delete(doc);
}
