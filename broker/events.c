/* GET /api/v0/events/<id>: an event, its tenant, its payload (parsed, and as the original bytes), one page of its jobs (page_size / offset) with
 * the state of each and its attempt log. A key limited to a tenant sees that tenant's events
 * only (decision 44): another's, or a global one, is a 404 like a missing id. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "codec.h"
#include "ids.h"
#include "paging.h"
#include "sql.h"

struct ev_get {
    struct req *r;
    struct page page;
};

/* Rows: the event's columns on every row, then one row per attempt of the page's jobs (or per
 * job without attempts) ordered by job then attempt, or one row without a job; the last
 * column is the event's total number of jobs. */
static void got_event(void *priv, PGresult *res, const char *err)
{
    struct ev_get *g = priv;
    struct req *r = g->r;
    struct page page = g->page;
    free(g);
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) < 1) {
        http_error(r, 404, "not_found", "no event %s", r->seg[0]);
        return;
    }
    struct buf b = {0};
    buf_printf(&b, "{\"id\":\"%s\"", PQgetvalue(res, 0, 0));
    http_col_str(&b, "eventName", res, 0, 1);
    http_col_str(&b, "createdAt", res, 0, 3);
    http_col_str(&b, "tenant", res, 0, 22); /* decision 44: null for a global event */
    buf_adds(&b, ",\"payload\":");
    /* Stored bytes were validated JSON (UTF-8) at trigger time: embed them as they are. */
    const char *hex = PQgetvalue(res, 0, 2);
    size_t hl = (size_t)PQgetlength(res, 0, 2);
    char *raw = xmalloc(hl / 2 + 1);
    long n = hex_decode(hex, hl, (unsigned char *)raw, hl / 2 + 1);
    if (n < 0) {
        free(raw);
        buf_free(&b);
        http_error(r, 500, "internal", "the stored payload of event %s is unreadable", r->seg[0]);
        return;
    }
    buf_add(&b, raw, (size_t)n);
    /* The same bytes as a JSON string: exactly what was triggered, signed and delivered (a
     * client's JSON parser re-spells the numbers and drops the whitespace of "payload"), so
     * a receiver's signature can be recomputed from it (docs/decisions.md 28). */
    buf_adds(&b, ",\"payloadRaw\":");
    json_escape(&b, raw, (size_t)n);
    free(raw);
    buf_adds(&b, ",\"jobs\":[");
    /* One row per attempt (or per job without attempts), ordered by job then attempt. */
    const char *job = NULL;
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 4))
            continue;
        if (!job || strcmp(job, PQgetvalue(res, i, 4)) != 0) {
            if (job)
                buf_adds(&b, "]},");
            job = PQgetvalue(res, i, 4);
            buf_printf(&b, "{\"id\":\"%s\"", job);
            http_col_str(&b, "subscriptionId", res, i, 5);
            http_col_str(&b, "webhookUrl", res, i, 6);
            http_col_str(&b, "status", res, i, 7);
            http_col_num(&b, "attempts", res, i, 8);
            http_col_num(&b, "lastStatusCode", res, i, 9);
            http_col_str(&b, "lastError", res, i, 10);
            http_col_str(&b, "nextAttemptAt", res, i, 11);
            http_col_str(&b, "deliveredAt", res, i, 12);
            http_col_str(&b, "createdAt", res, i, 13);
            http_col_str(&b, "updatedAt", res, i, 14);
            buf_adds(&b, ",\"attemptLog\":[");
        } else {
            buf_addc(&b, ',');
        }
        if (PQgetisnull(res, i, 15)) /* a job without attempts yet */
            continue;
        buf_printf(&b, "{\"attempt\":%s", PQgetvalue(res, i, 15));
        http_col_str(&b, "startedAt", res, i, 16);
        http_col_num(&b, "durationMs", res, i, 17);
        http_col_num(&b, "statusCode", res, i, 18);
        http_col_str(&b, "error", res, i, 19);
        /* text the worker stored: at most EXCERPT_MAX bytes of the body, made valid UTF-8 */
        http_col_str(&b, "responseExcerpt", res, i, 20);
        buf_addc(&b, '}');
    }
    if (job)
        buf_adds(&b, "]}");
    buf_addc(&b, ']');
    paging_json(&b, PQgetvalue(res, 0, 21), &page);
    buf_addc(&b, '}');
    http_reply(r, 200, &b);
}

void events_get(struct req *r)
{
    if (!id_valid(r->seg[0], strlen(r->seg[0]))) {
        http_error(r, 404, "not_found", "no event %.64s", r->seg[0]);
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[0], id);
    memcpy(r->seg[0], id, sizeof id);
    struct ev_get *g = xcalloc(1, sizeof *g);
    g->r = r;
    if (paging_parse(r, &g->page) < 0) {
        free(g);
        return;
    }
    static const char sql[] =
        "SELECT e.id, e.event_name, encode(e.payload, 'hex'), " SQL_TS("e.created_at") ", "
        "j.id, j.subscription_id, j.url, j.status, j.attempts, j.last_status_code, j.last_error, "
        SQL_TS("j.next_attempt_at") ", " SQL_TS("j.delivered_at") ", " SQL_TS("j.created_at") ", "
        SQL_TS("j.updated_at") ", a.attempt, " SQL_TS("a.started_at") ", a.duration_ms, "
        "a.status_code, a.error, a.response_excerpt, "
        "(SELECT count(*) FROM jobs WHERE event_id = e.id), e.tenant "
        "FROM events e LEFT JOIN LATERAL (SELECT * FROM jobs WHERE event_id = e.id "
        "  ORDER BY created_at, id LIMIT $2 OFFSET $3) j ON true "
        "LEFT JOIN attempts a ON a.job_id = j.id "
        "WHERE e.id = $1 AND ($4::text IS NULL OR coalesce(e.tenant, '') = $4::text) "
        "ORDER BY j.created_at, j.id, a.attempt";
    const char *params[] = {r->seg[0], g->page.size_text, g->page.offset_text,
                            req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 4, params, NULL, NULL, 0, got_event, g) < 0) {
        free(g);
        http_db_error(r, NULL, "not connected");
    }
}
