/* GET /api/v0/jobs (search: filters, newest first, keyset cursor) and GET /api/v0/jobs/<id> (one
 * job with its attempt log); docs/decisions.md 27 explains the query shapes and indexes, 46 how
 * a tenant key's search and reads are confined to its tenant's subscriptions. */
#include <event2/keyvalq_struct.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "api.h"
#include "codec.h"
#include "evnames.h"
#include "ids.h"
#include "rfc3339.h"
#include "sql.h"
#include "valid.h"

#define JOBS_LIMIT_DEFAULT 50
#define JOBS_LIMIT_MAX 500
#define CURSOR_VERSION 2 /* 1 (created_at, id) was retired with migration 11 */
#define CURSOR_BYTES 17  /* version, job id */
#define CURSOR_CHARS 23  /* base64url of CURSOR_BYTES, no padding */

/* The statuses a job can have; the filter's value is written into the statement from this
 * table (never from the request) so that the planner sees a constant and can prove a partial
 * index's predicate (jobs_unfinished, jobs_failed). */
static const char *const statuses[] = {"queued", "retrying", "delivered", "dead", "cancelled"};

struct jobs_q {
    const char *status;   /* from statuses[], or NULL */
    char sub[ID_LEN + 1]; /* "" when not filtered */
    char *event;          /* NULL when not filtered */
    char *event_keys;     /* the entries that match it (a PostgreSQL array literal) */
    bool has_since, has_until, has_cursor;
    int64_t since_us, until_us; /* µs since 1970, UTC */
    char cur_id[ID_LEN + 1];
    long limit;
    const char *tenant; /* only the jobs of this tenant's subscriptions; NULL: every job */
    char tenant_arg[TENANT_MAX + 1]; /* ?tenant= as given */
};

/* The cursor: base64url (no padding) of CURSOR_VERSION and the last row's id.
 * out: CURSOR_CHARS + 1 bytes. */
static void cursor_encode(const char *id, char out[CURSOR_CHARS + 1])
{
    unsigned char raw[CURSOR_BYTES];
    raw[0] = CURSOR_VERSION;
    for (int i = 0, k = 0; i < ID_LEN; i++) {
        if (id[i] == '-')
            continue;
        raw[1 + k / 2] =
            (unsigned char)(k % 2 ? raw[1 + k / 2] | hex_value(id[i]) : hex_value(id[i]) << 4);
        k++;
    }
    char std[40];
    size_t n = b64_encode(raw, sizeof raw, std);
    size_t o = 0;
    for (size_t i = 0; i < n && std[i] != '='; i++)
        out[o++] = std[i] == '+' ? '-' : std[i] == '/' ? '_' : std[i];
    out[o] = '\0';
}

/* Strict inverse of cursor_encode: exactly its length and alphabet, canonical (encodes back to
 * the same text), the version. 0 or -1. */
static int cursor_decode(const char *s, char id[ID_LEN + 1])
{
    if (strlen(s) != CURSOR_CHARS)
        return -1;
    char std[CURSOR_CHARS + 3];
    for (size_t i = 0; i < CURSOR_CHARS; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1;
        std[i] = c;
    }
    memcpy(std + CURSOR_CHARS, "=", 2);
    unsigned char raw[CURSOR_BYTES + 2];
    if (b64_decode(std, CURSOR_CHARS + 1, raw, sizeof raw) != CURSOR_BYTES ||
        raw[0] != CURSOR_VERSION)
        return -1;
    char hex[33];
    hex_encode(raw + 1, 16, hex);
    snprintf(id, ID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
    char back[CURSOR_CHARS + 1];
    cursor_encode(id, back);
    return strcmp(back, s) == 0 ? 0 : -1;
}

/* Reads the query string into q. Unknown and repeated parameters are refused, so a typo does
 * not silently widen a search. 0, or -1 after answering 400 naming the field. */
static int jobs_parse(struct req *r, struct jobs_q *q)
{
    static const char *const known[] = {"status", "event", "subscription", "since",
                                        "until",  "limit", "cursor",       "tenant"};
    q->limit = JOBS_LIMIT_DEFAULT;
    if (r->query && strcasestr(r->query, "%00")) { /* decoding would cut the value there */
        http_error(r, 400, "invalid_field", "the query string holds a NUL byte (%%00)");
        return -1;
    }
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    if (r->query && evhttp_parse_query_str(r->query, &kv) != 0) {
        evhttp_clear_headers(&kv);
        http_error(r, 400, "invalid_field", "the query string is not valid percent-encoding");
        return -1;
    }
    int rc = -1;
    unsigned seen = 0;
    struct evkeyval *e;
    TAILQ_FOREACH(e, &kv, next)
    {
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k], e->key) != 0)
            k++;
        if (k == sizeof known / sizeof known[0]) {
            char name[65]; /* printable for the log */
            size_t n = 0;
            for (; e->key[n] && n < sizeof name - 1; n++)
                name[n] = e->key[n] >= 0x20 && e->key[n] < 0x7f ? e->key[n] : '?';
            name[n] = '\0';
            http_error(r, 400, "invalid_field",
                       "unknown query parameter \"%s\"; use status, event, subscription, "
                       "since, until, limit, cursor or tenant",
                       name);
            goto out;
        }
        if (seen & (1u << k)) {
            http_error(r, 400, "invalid_field", "%s is given twice", known[k]);
            goto out;
        }
        seen |= 1u << k;
        const char *v = e->value;
        size_t vl = strlen(v);
        if (k == 0) {
            for (size_t s = 0; s < sizeof statuses / sizeof statuses[0]; s++)
                if (strcmp(statuses[s], v) == 0)
                    q->status = statuses[s];
            if (!q->status) {
                http_error(r, 400, "invalid_field",
                           "status must be one of queued, retrying, delivered, dead, cancelled");
                goto out;
            }
        } else if (k == 1) {
            if (!valid_event_name(v, vl)) {
                http_error(r, 400, "invalid_field",
                           "event must be an event name: 1 to 128 of A-Z a-z 0-9 . _ : -");
                goto out;
            }
            q->event = xstrdup(v);
            char keys[EVNAMES_KEYS_MAX][EVNAME_SIZE];
            char *kp[EVNAMES_KEYS_MAX];
            int nk = evname_keys(v, vl, keys);
            for (int ki = 0; ki < nk; ki++)
                kp[ki] = keys[ki];
            struct buf arr = {0};
            evnames_pg_array(&arr, kp, nk);
            q->event_keys = buf_steal(&arr, NULL);
        } else if (k == 2) {
            if (!id_valid(v, vl)) {
                http_error(r, 400, "invalid_field",
                           "subscription must be a subscription id (a UUID)");
                goto out;
            }
            id_normalize(v, q->sub);
        } else if (k == 3 || k == 4) {
            int64_t *us = k == 3 ? &q->since_us : &q->until_us;
            if (rfc3339_parse(v, us) < 0) {
                http_error(r, 400, "invalid_field",
                           "%s must be an RFC 3339 time such as 2026-12-02T05:00:00Z (at most "
                           "6 fractional digits, 1970 to 9999)",
                           known[k]);
                goto out;
            }
            *(k == 3 ? &q->has_since : &q->has_until) = true;
        } else if (k == 5) {
            /* digits only: strtol alone would also take " 5", "+5" and "-0" */
            bool ok = vl > 0 && vl <= 3 && strspn(v, "0123456789") == vl;
            long n = ok ? strtol(v, NULL, 10) : 0;
            if (!ok || n < 1 || n > JOBS_LIMIT_MAX) {
                http_error(r, 400, "invalid_field", "limit must be a whole number from 1 to %d",
                           JOBS_LIMIT_MAX);
                goto out;
            }
            q->limit = n;
        } else if (k == 7) {
            if (!valid_tenant(v, vl)) {
                http_error(r, 400, "invalid_field",
                           "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -", TENANT_MAX);
                goto out;
            }
            memcpy(q->tenant_arg, v, vl + 1);
            q->tenant = q->tenant_arg;
        } else {
            if (cursor_decode(v, q->cur_id) < 0) {
                http_error(r, 400, "invalid_field",
                           "cursor is not a cursor this endpoint returned (pass \"next\" of the "
                           "previous page as it is)");
                goto out;
            }
            q->has_cursor = true;
        }
    }
    if (q->has_since && q->has_until && q->until_us < q->since_us) {
        http_error(r, 400, "invalid_field", "until is before since");
        goto out;
    }
    /* A tenant key searches its tenant's jobs only; naming another tenant is outside the key's
     * scope (the parameter, not an object: 403, decision 46). */
    const char *scope = req_tenant_scope(r);
    if (scope) {
        if (q->tenant && strcmp(q->tenant, scope) != 0) {
            http_error(r, 403, "forbidden", "this key sees only the jobs of its own tenant");
            goto out;
        }
        q->tenant = scope;
    }
    rc = 0;
out:
    evhttp_clear_headers(&kv);
    return rc;
}

/* The columns of one job, in the order job_json reads them. */
#define SQL_JOB_COLS                                                                               \
    "j.id, j.event_id, e.event_name, j.subscription_id, j.url, j.status, j.attempts, "             \
    "j.last_status_code, j.last_error, " SQL_TS("j.next_attempt_at") ", " SQL_TS(                  \
        "j.created_at") ", " SQL_TS("j.updated_at") ", " SQL_TS("j.delivered_at")
#define SQL_JOB_NCOLS 13

/* Appends one job object without its closing brace. */
static void job_json(struct buf *b, PGresult *res, int i)
{
    buf_printf(b, "{\"id\":\"%s\",\"eventId\":\"%s\",\"event\":\"/api/v0/events/%s\"",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 1));
    http_col_str(b, "eventName", res, i, 2);
    http_col_str(b, "subscriptionId", res, i, 3);
    http_col_str(b, "url", res, i, 4);
    http_col_str(b, "status", res, i, 5);
    http_col_num(b, "attempts", res, i, 6);
    http_col_num(b, "lastStatusCode", res, i, 7);
    http_col_str(b, "lastError", res, i, 8);
    http_col_str(b, "nextAttemptAt", res, i, 9);
    http_col_str(b, "createdAt", res, i, 10);
    http_col_str(b, "updatedAt", res, i, 11);
    http_col_str(b, "deliveredAt", res, i, 12);
}

struct jobs_list {
    struct req *r;
    long limit;
};

/* Rows: up to limit + 1 jobs, newest first; the extra row only says that there is a next page. */
static void got_list(void *priv, PGresult *res, const char *err)
{
    struct jobs_list *g = priv;
    struct req *r = g->r;
    long limit = g->limit;
    free(g);
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    int n = PQntuples(res);
    int shown = n > limit ? (int)limit : n;
    struct buf b = {0};
    buf_adds(&b, "{\"jobs\":[");
    for (int i = 0; i < shown; i++) {
        if (i)
            buf_addc(&b, ',');
        job_json(&b, res, i);
        buf_addc(&b, '}');
    }
    buf_adds(&b, "],\"next\":");
    if (n > limit) {
        char cur[CURSOR_CHARS + 1];
        cursor_encode(PQgetvalue(res, shown - 1, 0), cur);
        buf_printf(&b, "\"%s\"", cur);
    } else {
        buf_adds(&b, "null");
    }
    buf_addc(&b, '}');
    http_reply(r, 200, &b);
}

/* Appends the newest limit + 1 jobs matching key (a SQL condition: one subscription's, or one
 * event name's in jobs_named) and w, newest first, as a parenthesised query: one range of
 * jobs_subscription (subscription_id, status, id) or jobs_named (event_name, status, id) per
 * status, merged (Merge Append) when no status is asked for, so that any status is an exact
 * index range read only until the page is full. With keys_only, only the ids, read from the
 * index alone (an index-only scan, when key names only index columns), for the event filter,
 * which reads limit + 1 jobs per range and fetches only the page's rows. */
static void key_query(struct buf *sql, const struct jobs_q *q, const char *key, const char *w,
                      int lim, bool keys_only)
{
    size_t n = sizeof statuses / sizeof statuses[0];
    if (!q->status)
        buf_adds(sql, "(SELECT * FROM (");
    for (size_t i = 0; i < n; i++) {
        const char *st = q->status ? q->status : statuses[i];
        buf_printf(sql,
                   "%s(SELECT %s FROM jobs j WHERE %s "
                   "AND j.status = '%s'%s ORDER BY j.id DESC LIMIT $%d)",
                   i ? " UNION ALL " : "", keys_only ? "j.id" : "*", key, st, w, lim);
        if (q->status)
            return;
    }
    buf_printf(sql, ") u ORDER BY u.id DESC LIMIT $%d)", lim);
}

/* Builds the statement for q into sql and its parameters into params (texts in store);
 * returns their number. Values are parameters; the status, from statuses[], is a constant so
 * that the planner can match partial indexes. A job's time is its id's (UUIDv7: the
 * millisecond the broker made it), so since, until and the cursor are bounds on the id, and
 * newest first is the id descending (docs/decisions.md 27).
 *
 * - No subscription and no event: the primary key backwards, stopped by LIMIT, or for a status
 *   of jobs_failed (id) (dead, cancelled); queued and retrying jobs (few: the backlog) through
 *   jobs_unfinished, sorted; delivered jobs are nearly all jobs, so the primary key filtered.
 * - A subscription: key_query.
 * - An event name (decision 39, revising 27): a job of a plain subscription (plain_until NULL:
 *   only ever its one exact name) has no event_name, and its event is named like the
 *   subscription's event_name; every other job carries its event's name. So the page is the
 *   newest limit + 1 of three sources: the plain subscriptions of the name
 *   (subscriptions_event_name, deleted ones included) each giving their newest limit + 1 job
 *   ids from the index alone (as before decision 39); the subscriptions of the name that
 *   stopped being plain, their jobs from before plain_until without a name (heap-checked, but
 *   only the jobs of the margin after that change have one); and the subscriptions that are
 *   not plain and ever listed an entry matching the name (names_seen, GIN), each giving a
 *   range of jobs_named (subscription_id, event_name, status, id). Cost ~ (subscriptions of
 *   the name + those that ever matched it) x page size index entries, whatever the table
 *   size. A subscription filter cuts each part to it.
 * - A tenant (a tenant key, or an admin's ?tenant=; decision 46): the event filter's parts
 *   take only the tenant's subscriptions; without an event, each of the tenant's
 *   subscriptions (subscriptions_tenant) gives its newest limit + 1 jobs (key_query), merged:
 *   ~ subscriptions of the tenant x page size index entries. Without a tenant the statements
 *   are the ones above, unchanged.
 * The page's jobs are then read by primary key and joined with their event (primary key) for
 * the name. */
static int jobs_sql(const struct jobs_q *q, struct buf *sql, const char *params[8],
                    char store[8][64])
{
    int np = 0;
    struct buf w = {0};
    buf_reserve(&w, 1); /* w.data is a string even when no condition is added */
    w.data[0] = '\0';
    if (q->has_since) {
        id_at(q->since_us, store[np]);
        params[np] = store[np];
        buf_printf(&w, " AND j.id >= $%d::uuid", ++np);
    }
    if (q->has_until) {
        id_at(q->until_us, store[np]);
        params[np] = store[np];
        buf_printf(&w, " AND j.id < $%d::uuid", ++np);
    }
    if (q->has_cursor) {
        params[np] = q->cur_id;
        buf_printf(&w, " AND j.id < $%d::uuid", ++np);
    }
    snprintf(store[np], 64, "%ld", q->limit + 1);
    params[np] = store[np];
    int lim = ++np;
    buf_adds(sql, "SELECT " SQL_JOB_COLS " FROM ");
    if (q->event) {
        params[np] = q->event;
        int ev = ++np;
        char subf[96] = "";
        size_t sl = 0;
        if (q->sub[0]) {
            params[np] = q->sub;
            sl += (size_t)snprintf(subf, sizeof subf, " AND s.id = $%d::uuid", ++np);
        }
        if (q->tenant) {
            params[np] = q->tenant;
            snprintf(subf + sl, sizeof subf - sl, " AND s.tenant = $%d", ++np);
        }
        buf_adds(sql, "(SELECT k.id FROM ((SELECT k.id FROM subscriptions s CROSS JOIN LATERAL ");
        key_query(sql, q, "j.subscription_id = s.id", w.data, lim, true);
        buf_printf(sql,
                   " k WHERE s.event_name = $%d AND s.plain_until IS NULL%s "
                   "ORDER BY k.id DESC LIMIT $%d) UNION ALL "
                   "(SELECT k.id FROM subscriptions s CROSS JOIN LATERAL ",
                   ev, subf, lim);
        key_query(sql, q,
                  "j.subscription_id = s.id AND j.id < s.plain_until AND j.event_name IS NULL",
                  w.data, lim, true);
        buf_printf(sql,
                   " k WHERE s.event_name = $%d AND s.plain_until IS NOT NULL%s "
                   "ORDER BY k.id DESC LIMIT $%d) UNION ALL ",
                   ev, subf, lim);
        /* the named jobs: per subscription that ever listed an entry matching the name
         * (names_seen, GIN), one range of jobs_named (subscription_id, event_name, status, id) */
        char named[96];
        snprintf(named, sizeof named, "j.subscription_id = s.id AND j.event_name = $%d", ev);
        buf_adds(sql, "(SELECT k.id FROM subscriptions s CROSS JOIN LATERAL ");
        key_query(sql, q, named, w.data, lim, true);
        params[np] = q->event_keys;
        buf_printf(sql,
                   " k WHERE s.names_seen && $%d::text[] AND s.plain_until IS NOT NULL%s "
                   "ORDER BY k.id DESC LIMIT $%d)",
                   ++np, subf, lim);
        buf_printf(sql, ") k ORDER BY k.id DESC LIMIT $%d) k JOIN jobs j ON j.id = k.id", lim);
    } else if (q->tenant) {
        /* per subscription of the tenant (subscriptions_tenant, deleted ones included), its
         * newest limit + 1 jobs (jobs_subscription's ranges as for one subscription), merged */
        params[np] = q->tenant;
        int tn = ++np;
        char subf[40] = "";
        if (q->sub[0]) {
            params[np] = q->sub;
            snprintf(subf, sizeof subf, " AND s.id = $%d::uuid", ++np);
        }
        buf_adds(sql, "(SELECT k.* FROM subscriptions s CROSS JOIN LATERAL ");
        key_query(sql, q, "j.subscription_id = s.id", w.data, lim, false);
        buf_printf(sql, " k WHERE s.tenant = $%d%s ORDER BY k.id DESC LIMIT $%d) j", tn, subf, lim);
    } else if (q->sub[0]) {
        params[np] = q->sub;
        char sub[40];
        snprintf(sub, sizeof sub, "j.subscription_id = $%d::uuid", ++np);
        key_query(sql, q, sub, w.data, lim, false);
        buf_adds(sql, " j");
    } else {
        char st[40] = "";
        if (q->status)
            snprintf(st, sizeof st, " AND j.status = '%s'", q->status);
        buf_printf(sql, "(SELECT * FROM jobs j WHERE true%s%s ORDER BY j.id DESC LIMIT $%d) j", st,
                   w.data, lim);
    }
    buf_adds(sql, " LEFT JOIN events e ON e.id = j.event_id ORDER BY j.id DESC");
    buf_free(&w);
    return np;
}

void jobs_list(struct req *r)
{
    struct jobs_q q = {0};
    if (jobs_parse(r, &q) < 0) {
        free(q.event);
        free(q.event_keys);
        return;
    }
    struct buf sql = {0};
    const char *params[8];
    char store[8][64];
    int np = jobs_sql(&q, &sql, params, store);
    struct jobs_list *g = xcalloc(1, sizeof *g);
    g->r = r;
    g->limit = q.limit;
    if (pg_query(r->b->pg_api, sql.data, np, params, NULL, NULL, 0, got_list, g) < 0) {
        free(g);
        http_db_error(r, NULL, "not connected");
    }
    buf_free(&sql);
    free(q.event);
    free(q.event_keys);
}

/* Rows: the job's columns on every row, then one attempt per row (ordered), or one row with
 * NULL attempt columns for a job without attempts. */
static void got_job(void *priv, PGresult *res, const char *err)
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
    struct buf b = {0};
    job_json(&b, res, 0);
    buf_adds(&b, ",\"attemptLog\":[");
    const int a = SQL_JOB_NCOLS;
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, a))
            continue;
        if (i)
            buf_addc(&b, ',');
        buf_printf(&b, "{\"attempt\":%s", PQgetvalue(res, i, a));
        http_col_str(&b, "startedAt", res, i, a + 1);
        http_col_num(&b, "durationMs", res, i, a + 2);
        http_col_num(&b, "statusCode", res, i, a + 3);
        http_col_str(&b, "error", res, i, a + 4);
        /* text the worker stored: at most EXCERPT_MAX bytes of the body, made valid UTF-8 */
        http_col_str(&b, "responseExcerpt", res, i, a + 5);
        /* an attempt of a batch (decision 40): the batch's id, the webhook-id it was sent with */
        if (!PQgetisnull(res, i, a + 6))
            buf_printf(&b, ",\"batchId\":\"%s\"", PQgetvalue(res, i, a + 6));
        buf_addc(&b, '}');
    }
    buf_adds(&b, "]}");
    http_reply(r, 200, &b);
}

void jobs_get(struct req *r)
{
    if (!id_valid(r->seg[0], strlen(r->seg[0]))) {
        http_error(r, 400, "invalid_field", "the job id must be a UUID (got \"%.64s\")", r->seg[0]);
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[0], id);
    memcpy(r->seg[0], id, sizeof id);
    /* $2: the key's tenant (NULL: any job); another tenant's job is not found (decision 46) */
    static const char sql[] = "SELECT " SQL_JOB_COLS ", a.attempt, " SQL_TS(
        "a.started_at") ", a.duration_ms, "
                        "a.status_code, a.error, a.response_excerpt, a.batch_id::text "
                        "FROM jobs j LEFT JOIN events e ON e.id = j.event_id "
                        "LEFT JOIN attempts a ON a.job_id = j.id WHERE j.id = $1 "
                        "AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM subscriptions s "
                        "WHERE s.id = j.subscription_id AND s.tenant = $2)) ORDER BY "
                        "a.attempt";
    const char *params[] = {r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 2, params, NULL, NULL, 0, got_job, r) < 0)
        http_db_error(r, NULL, "not connected");
}
