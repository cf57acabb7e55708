/* Subscription endpoints (register, list, get, delete, rotate-secret) and the Redis event index
 * they keep: PostgreSQL first, then the hash wh:event:<entry> (wh:event:@<tenant>:<entry> for a
 * tenant's subscription, decision 44) of each of the subscription's event names and patterns
 * (decision 39; field URL, value {"id","status"} and the payload filter when there is one:
 * common/indexval.h). A key limited to a tenant sees and changes that tenant's subscriptions
 * only; another's answer exactly as a missing one. */
#include <cJSON.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "codec.h"
#include "controls.h"
#include "evnames.h"
#include "filter.h"
#include "ids.h"
#include "indexval.h"
#include "jsonv.h"
#include "keys.h"
#include "log.h"
#include "secretbox.h"
#include "paging.h"
#include "pause.h"
#include "shape.h"
#include "sign.h"
#include "sql.h"
#include "urlguard.h"
#include "valid.h"
#include "verify.h"

/* ,"name": column col of the row as JSON text (jsonb, integer), or null. */
static void raw_or_null(struct buf *b, const char *name, PGresult *res, int row, int col)
{
    buf_printf(b, ",\"%s\":", name);
    if (PQgetisnull(res, row, col))
        buf_adds(b, "null");
    else
        buf_add(b, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
}

/* ,"name": a rateLimit or retryPolicy column (jsonb text, whose member order and spacing are
 * PostgreSQL's) in the canonical form of common/controls.h, or null. */
static void setting_json(struct buf *b, const char *name, PGresult *res, int row, int col,
                         bool retry)
{
    char err[256];
    cJSON *v = PQgetisnull(res, row, col) ? NULL : cJSON_Parse(PQgetvalue(res, row, col));
    size_t mark = b->len;
    buf_printf(b, ",\"%s\":", name);
    int rc = !v      ? -1
             : retry ? controls_retry_parse(v, NULL, b, err, sizeof err)
                     : controls_rate_parse(v, NULL, b, err, sizeof err);
    if (rc < 0) {
        b->len = mark; /* unreadable (a hand-made row): shown as stored */
        b->data[b->len] = '\0';
        raw_or_null(b, name, res, row, col);
    }
    cJSON_Delete(v);
}

/* The controls of a row (SQL_SUB_COLS 9..18): description, rateLimit, retryPolicy,
 * timeoutSeconds and payloadFields (null when default), payload ("raw" when default), ordered
 * (a boolean, false by default), pausedAt
 * when paused, disabledAt and disabledReason when disabled. */
static void controls_json(struct buf *b, PGresult *res, int row)
{
    buf_adds(b, ",\"description\":");
    if (PQgetisnull(res, row, 9))
        buf_adds(b, "null");
    else
        json_escape(b, PQgetvalue(res, row, 9), (size_t)PQgetlength(res, row, 9));
    setting_json(b, "rateLimit", res, row, 13, false);
    setting_json(b, "retryPolicy", res, row, 14, true);
    raw_or_null(b, "timeoutSeconds", res, row, 15);
    /* payload shape (decision 31): NULL is the default, raw */
    buf_printf(b, ",\"payload\":\"%s\"",
               PQgetisnull(res, row, 16) ? "raw" : PQgetvalue(res, row, 16));
    raw_or_null(b, "payloadFields", res, row, 17);
    /* ordered delivery (decision 33) */
    buf_printf(b, ",\"ordered\":%s", strcmp(PQgetvalue(res, row, 18), "t") == 0 ? "true" : "false");
    if (!PQgetisnull(res, row, 10))
        buf_printf(b, ",\"pausedAt\":\"%s\"", PQgetvalue(res, row, 10));
    if (!PQgetisnull(res, row, 11)) {
        buf_printf(b, ",\"disabledAt\":\"%s\",\"disabledReason\":", PQgetvalue(res, row, 11));
        if (PQgetisnull(res, row, 12))
            buf_adds(b, "null");
        else
            json_escape(b, PQgetvalue(res, row, 12), (size_t)PQgetlength(res, row, 12));
    }
}

/* ,"batching": the setting in its canonical form (decision 40), or null when off. */
static void batching_json(struct buf *b, PGresult *res, int row)
{
    char err[256];
    buf_adds(b, ",\"batching\":");
    if (PQgetisnull(res, row, SQL_SUB_BATCHING)) {
        buf_adds(b, "null");
        return;
    }
    size_t mark = b->len;
    cJSON *v = cJSON_Parse(PQgetvalue(res, row, SQL_SUB_BATCHING));
    if (controls_batching_parse(v, NULL, b, err, sizeof err) < 0) {
        b->len = mark; /* unreadable (a hand-made row): shown as stored */
        b->data[b->len] = '\0';
        buf_adds(b, PQgetvalue(res, row, SQL_SUB_BATCHING));
    }
    cJSON_Delete(v);
}

/* Appends one subscription row (SQL_SUB_COLS order) as JSON, without the closing brace. The
 * "secret" field is there when secret (the plain text, never the stored column) is not NULL.
 * "status" is the one given, else the delivery state (decision 24): "disabled", "paused" or
 * "active" ("deleted" for a deleted row). */
static void sub_json_open(struct buf *b, PGresult *res, int row, const char *secret,
                          const char *status)
{
    buf_adds(b, "{\"id\":\"");
    buf_adds(b, PQgetvalue(res, row, 0));
    buf_adds(b, "\",\"eventName\":");
    json_escape(b, PQgetvalue(res, row, 1), (size_t)PQgetlength(res, row, 1));
    buf_adds(b, ",\"eventNames\":"); /* a JSON array from PostgreSQL (decision 39) */
    buf_add(b, PQgetvalue(res, row, SQL_SUB_NAMES), (size_t)PQgetlength(res, row, SQL_SUB_NAMES));
    buf_adds(b, ",\"webhookUrl\":");
    json_escape(b, PQgetvalue(res, row, 2), (size_t)PQgetlength(res, row, 2));
    buf_adds(b, ",\"tenant\":"); /* decision 44: null for a global subscription */
    if (PQgetisnull(res, row, SQL_SUB_TENANT))
        buf_adds(b, "null");
    else
        json_escape(b, PQgetvalue(res, row, SQL_SUB_TENANT),
                    (size_t)PQgetlength(res, row, SQL_SUB_TENANT));
    if (secret) {
        buf_adds(b, ",\"secret\":");
        json_escape(b, secret, strlen(secret));
    }
    buf_adds(b, ",\"headers\":");
    buf_add(b, PQgetvalue(res, row, 4), (size_t)PQgetlength(res, row, 4)); /* jsonb text */
    if (!status)
        status = strcmp(PQgetvalue(res, row, 5), "active") != 0 ? PQgetvalue(res, row, 5)
                 : !PQgetisnull(res, row, 11)                   ? "disabled"
                 : !PQgetisnull(res, row, 10)                   ? "paused"
                                                                : "active";
    buf_printf(b, ",\"status\":\"%s\",\"createdAt\":\"%s\",\"updatedAt\":\"%s\"", status,
               PQgetvalue(res, row, 6), PQgetvalue(res, row, 7));
    controls_json(b, res, row);
    raw_or_null(b, "filter", res, row, SQL_SUB_FILTER); /* as stored (jsonb), null when none */
    batching_json(b, res, row);
}

/* ,"previousSecretExpiresAt": the time, or null when no previous secret signs any more. */
static void prev_expiry_json(struct buf *b, PGresult *res, int row)
{
    buf_adds(b, ",\"previousSecretExpiresAt\":");
    if (PQgetisnull(res, row, 8))
        buf_adds(b, "null");
    else
        buf_printf(b, "\"%s\"", PQgetvalue(res, row, 8));
}

/* Appends one subscription row (SQL_SUB_COLS order) as JSON. previousSecretExpiresAt is there
 * only while a previous secret still signs (the previous secret itself is never shown). */
static void sub_json(struct buf *b, PGresult *res, int row, const char *secret, const char *status)
{
    sub_json_open(b, res, row, secret, status);
    if (!PQgetisnull(res, row, 8))
        prev_expiry_json(b, res, row);
    buf_addc(b, '}');
}

/* A failed query: 503 when the database was unreachable, 500 for anything else. */
/* A query that returns the path's subscription or no row: false after replying (database
 * error, 404). */
static bool one_sub(struct req *r, PGresult *res, const char *err)
{
    if (err) {
        http_db_error(r, res, err);
        return false;
    }
    if (PQntuples(res) != 1) {
        http_error(r, 404, "not_found", "no subscription %s for event %s", r->seg[1], r->seg[0]);
        return false;
    }
    return true;
}

/* Decision 44: the subscriptions a request may see, as a text parameter $p: NULL for an admin
 * key (all), else its key's tenant ("" for a key of no tenant: the global ones). A subscription
 * out of scope answers exactly as a missing one. */
#define SQL_IN_SCOPE(p)                                                                            \
    "(" p "::text IS NULL OR (" p "::text = '' AND tenant IS NULL) OR tenant = " p "::text)"

/* The tenant of row's subscription ("" for a global one), for its index keys: valid while res
 * is. */
static const char *row_tenant(PGresult *res, int row)
{
    return PQgetisnull(res, row, SQL_SUB_TENANT) ? "" : PQgetvalue(res, row, SQL_SUB_TENANT);
}

/* The secret of a registration or rotation into out (SECRET_TEXT_MAX bytes): the "secret"
 * field when given (validated), else a new one. -1 after replying. */
static int secret_take(struct req *r, const cJSON *given, char *out)
{
    char err[256];
    if (!given) {
        if (sign_secret_new(out, SECRET_TEXT_MAX) == 0)
            return 0;
        http_error(r, 500, "internal", "the random number generator failed");
        return -1;
    }
    if (!cJSON_IsString(given)) {
        http_error(r, 400, "invalid_field", "secret must be a string");
        return -1;
    }
    size_t n = strlen(given->valuestring);
    if (sign_secret_check(given->valuestring, n, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    memcpy(out, given->valuestring, n + 1); /* checked: shorter than SECRET_TEXT_MAX */
    return 0;
}

/* Seals a secret for subscription id (bound to it: the ciphertext opens in that row only) into
 * out (SECRETBOX_TEXT_MAX bytes). -1 after replying. */
static int secret_seal(struct req *r, const char *plain, const char *id, char *out)
{
    if (secretbox_seal(&r->b->secrets, plain, id, out, SECRETBOX_TEXT_MAX) == 0)
        return 0;
    http_error(r, 500, "internal", "encrypting the secret failed");
    return -1;
}

/* The plain text of subscription id's stored secret column (sealed, or plain from before
 * encryption) into out (SECRETBOX_PLAIN_MAX + 1 bytes). -1 after logging and replying. */
static int secret_open(struct req *r, const char *stored, const char *id, char *out)
{
    char err[256];
    if (secretbox_open(&r->b->secrets, stored, id, out, SECRETBOX_PLAIN_MAX + 1, err, sizeof err) ==
        0)
        return 0;
    log_error(r->id, "subscription %s: the stored secret cannot be decrypted: %s", id, err);
    http_error(r, 500, "internal",
               "the stored secret of subscription %s cannot be decrypted (check SECRETS_KEY and "
               "SECRETS_KEY_PREVIOUS)",
               id);
    return -1;
}

/* How often a write that lost a compare-and-set to a concurrent change is read and tried
 * again before the caller is told to repeat the request. */
#define SECRET_CAS_TRIES 3

/* ---- settings shared by register and PATCH ------------------------------------------------ */

/* The "filter" member (decision 30): validated by common/filter.h (400 naming the problem),
 * added to ctl as given (compact), or null to remove it. Same contract as control_field. */
static int filter_field(struct req *r, const cJSON *it, struct buf *ctl)
{
    char err[256];
    buf_adds(ctl, ctl->len > 1 ? ",\"filter\":" : "\"filter\":");
    if (cJSON_IsNull(it)) {
        buf_adds(ctl, "null");
        return 1;
    }
    struct filter *f = filter_compile(it, err, sizeof err);
    if (!f) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    filter_free(f);
    char *text = cJSON_PrintUnformatted(it);
    buf_adds(ctl, text);
    cJSON_free(text);
    return 1;
}

/* A filter (not null) in the body of a subscription of the broker's operational events
 * (reserved): refused (400, false), since their jobs are created by the workers' outcome
 * statement in SQL, without the broker's fan-out that evaluates filters. */
static bool filter_allowed(struct req *r, bool reserved, const cJSON *doc)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(doc, "filter");
    if (!f || cJSON_IsNull(f) || !reserved)
        return true;
    http_error(r, 400, "invalid_field",
               "filter is not available for the broker's operational events (event names "
               "starting with \"" EVENT_NAME_RESERVED "\"): they get every such event");
    return false;
}

/* Checks one body member that is a delivery setting (rateLimit, retryPolicy, timeoutSeconds,
 * description, payload, payloadFields, ordered, filter, batching; docs/api.md) and adds it,
 * canonical,
 * to the JSON object being built in ctl ("{" first, a member per setting given: null resets it
 * to the default). 1 when it was one (and valid), 0 when it is another field, -1 after replying
 * 400 naming the field. */
static int control_field(struct req *r, const cJSON *it, struct buf *ctl)
{
    char err[256];
    const char *n = it->string;
    if (strcmp(n, "filter") == 0)
        return filter_field(r, it, ctl);
    bool rate = strcmp(n, "rateLimit") == 0, retry = strcmp(n, "retryPolicy") == 0;
    bool timeout = strcmp(n, "timeoutSeconds") == 0, desc = strcmp(n, "description") == 0;
    /* payload shape (decision 31) */
    bool shape = strcmp(n, "payload") == 0, fields = strcmp(n, "payloadFields") == 0;
    bool ordered = strcmp(n, "ordered") == 0; /* decision 33 */
    bool batching = strcmp(n, "batching") == 0; /* decision 40 */
    if (!rate && !retry && !timeout && !desc && !shape && !fields && !ordered && !batching)
        return 0;
    buf_adds(ctl, ctl->len > 1 ? ",\"" : "\"");
    buf_adds(ctl, n);
    buf_adds(ctl, "\":");
    if (cJSON_IsNull(it)) {
        buf_adds(ctl, "null");
        return 1;
    }
    if (rate && controls_rate_parse(it, NULL, ctl, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    if (batching && controls_batching_parse(it, NULL, ctl, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    if (retry && controls_retry_parse(it, NULL, ctl, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    if (timeout) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : 0;
        if (!(d >= TIMEOUT_SECONDS_MIN && d <= TIMEOUT_SECONDS_MAX) || d != (double)(long)d) {
            http_error(r, 400, "invalid_field",
                       "timeoutSeconds must be an integer from %d to %d, or null for the "
                       "default (DELIVERY_TIMEOUT)",
                       TIMEOUT_SECONDS_MIN, TIMEOUT_SECONDS_MAX);
            return -1;
        }
        buf_printf(ctl, "%ld", (long)d);
    }
    if (desc) {
        size_t len = cJSON_IsString(it) ? strlen(it->valuestring) : 0;
        if (!cJSON_IsString(it) || len > DESCRIPTION_MAX || !utf8_valid(it->valuestring, len)) {
            http_error(r, 400, "invalid_field",
                       "description must be a string of at most %d bytes of UTF-8, or null",
                       DESCRIPTION_MAX);
            return -1;
        }
        json_escape(ctl, it->valuestring, len);
    }
    enum shape kind;
    if (shape && (!cJSON_IsString(it) || shape_parse(it->valuestring, &kind) < 0)) {
        http_error(r, 400, "invalid_field",
                   "payload must be \"raw\" or \"envelope\", or null for the default (raw)");
        return -1;
    }
    if (shape)
        buf_adds(ctl, kind == SHAPE_ENVELOPE ? "\"envelope\"" : "\"raw\"");
    if (ordered && !cJSON_IsBool(it)) {
        http_error(r, 400, "invalid_field",
                   "ordered must be true or false, or null for the default (false)");
        return -1;
    }
    if (ordered)
        buf_adds(ctl, cJSON_IsTrue(it) ? "true" : "false");
    if (fields) { /* as a JSON string of its canonical text (SQL_SHAPE_VALUES) */
        struct buf canon = {0};
        int rc = shape_fields_check(it, &canon, err, sizeof err);
        if (rc == 0)
            json_escape(ctl, canon.data, canon.len);
        buf_free(&canon);
        if (rc < 0) {
            http_error(r, 400, "invalid_field", "%s", err);
            return -1;
        }
    }
    return 1;
}

/* The payload shape's part of SQL_CTL_VALUES / SQL_CTL_SET (decision 31): "raw" is stored as
 * NULL (the default). payloadFields travels in the controls object as a string holding its
 * canonical compact text (control_field), cast to the json column as it is: the bytes the
 * worker splices and the API shows (a jsonb value would come back with spaces and its keys
 * reordered). */
#define SQL_SHAPE_VALUES(p)                                                                        \
    "NULLIF(" p "::jsonb ->> 'payload', 'raw'), "                                                   \
    "CASE WHEN jsonb_typeof(" p "::jsonb -> 'payloadFields') = 'string' "                         \
    "  THEN (" p "::jsonb ->> 'payloadFields')::json END"
#define SQL_SHAPE_SET(p, t)                                                                        \
    "payload_shape = CASE WHEN " p "::jsonb ? 'payload' "                                         \
    "  THEN NULLIF(" p "::jsonb ->> 'payload', 'raw') ELSE " t ".payload_shape END, "             \
    "payload_fields = CASE WHEN " p "::jsonb ? 'payloadFields' "                                  \
    "  THEN CASE WHEN jsonb_typeof(" p "::jsonb -> 'payloadFields') = 'string' "                  \
    "  THEN (" p "::jsonb ->> 'payloadFields')::json END ELSE " t ".payload_fields END, "

/* The settings of the controls object $N (control_field's JSON) for an INSERT's values (columns
 * SQL_CTL_COLS), and for an UPDATE's SET (t: the table's name; a setting not in the object is
 * kept). */
#define SQL_CTL_COLS                                                                               \
    "rate_limit, retry_policy, timeout_seconds, description, payload_shape, payload_fields, "     \
    "ordered, " SQL_FILTER_COL ", batching"
#define SQL_CTL_VALUES(p)                                                                          \
    "NULLIF(" p "::jsonb -> 'rateLimit', 'null'), NULLIF(" p "::jsonb -> 'retryPolicy', 'null'), " \
    "(" p "::jsonb ->> 'timeoutSeconds')::int, " p "::jsonb ->> 'description', "                   \
    SQL_SHAPE_VALUES(p) ", coalesce((" p "::jsonb ->> 'ordered')::boolean, false), "             \
    SQL_FILTER_VALUE(p) ", NULLIF(" p "::jsonb -> 'batching', 'null')"
#define SQL_CTL_SET(p, t)                                                                          \
    "rate_limit = CASE WHEN " p "::jsonb ? 'rateLimit' "                                           \
    "  THEN NULLIF(" p "::jsonb -> 'rateLimit', 'null') ELSE " t ".rate_limit END, "               \
    "retry_policy = CASE WHEN " p "::jsonb ? 'retryPolicy' "                                       \
    "  THEN NULLIF(" p "::jsonb -> 'retryPolicy', 'null') ELSE " t ".retry_policy END, "           \
    "timeout_seconds = CASE WHEN " p "::jsonb ? 'timeoutSeconds' "                                 \
    "  THEN (" p "::jsonb ->> 'timeoutSeconds')::int ELSE " t ".timeout_seconds END, "             \
    "description = CASE WHEN " p "::jsonb ? 'description' "                                        \
    "  THEN " p "::jsonb ->> 'description' ELSE " t ".description END, "                          \
    "ordered = CASE WHEN " p "::jsonb ? 'ordered' "                                                \
    "  THEN coalesce((" p "::jsonb ->> 'ordered')::boolean, false) ELSE " t ".ordered END, "       \
    "batching = CASE WHEN " p "::jsonb ? 'batching' "                                              \
    "  THEN NULLIF(" p "::jsonb -> 'batching', 'null') ELSE " t ".batching END, "                  \
    SQL_SHAPE_SET(p, t) SQL_FILTER_SET(p, t)
/* The payload filter's part of them (decision 30): stored as given, JSON null removes it. */
#define SQL_FILTER_COL "filter"
#define SQL_FILTER_VALUE(p) "NULLIF(" p "::jsonb -> 'filter', 'null')"
#define SQL_FILTER_SET(p, t)                                                                       \
    "filter = CASE WHEN " p "::jsonb ? 'filter' "                                                  \
    "  THEN NULLIF(" p "::jsonb -> 'filter', 'null') ELSE " t ".filter END, "

/* How far past a PATCH that makes a plain subscription not plain its plain_until lies: above
 * the id of any job it got while plain (made by a broker at the trigger's acceptance, before
 * the PATCH's commit, on that broker's clock), with room for clock skew (decision 39). */
#define SUBS_PLAIN_MARGIN "10 minutes"

/* A new subscription's plain_until (migration 15, decision 39): NULL (plain) when its names $p
 * are one exact name, else the zero id (no job of it is plain). */
#define SQL_PLAIN_AT_CREATION(p)                                                                   \
    "CASE WHEN cardinality(" p "::text[]) = 1 AND strpos((" p "::text[])[1], '*') = 0 THEN NULL " \
    "ELSE '00000000-0000-0000-0000-000000000000'::uuid END"

/* ---- register ---------------------------------------------------------------------------- */

struct reg {
    struct req *r;
    /* what to upsert, copied out of the request body (it may go before the URL check ends) */
    char id[ID_LEN + 1];
    char secret[SECRET_TEXT_MAX];
    bool secret_given; /* the caller sent it: it replaces the current secret of an existing one */
    struct evnames names;             /* sorted (decision 39) */
    char tenant[TENANT_ID_MAX + 1];   /* decision 44: "" for a global subscription */
    char *names_pg;                   /* the same as a PostgreSQL array literal */
    char *url, *headers;              /* headers: compact JSON, or NULL to keep/default */
    char *controls;                   /* the settings given (control_field's JSON object) */
    /* what the upsert needs, from the row read first (the secrets are compared in plain) */
    char plain[SECRETBOX_PLAIN_MAX + 1]; /* the secret the answer shows */
    char insert_ct[SECRETBOX_TEXT_MAX];  /* g->secret sealed for g->id (a new row) */
    char update_ct[SECRETBOX_TEXT_MAX];  /* g->secret sealed for seen_id; "" to keep */
    char seen_id[ID_LEN + 1];            /* the existing row, "" if none */
    char *seen_ct;                       /* its secret column as read: the compare-and-set */
    int tries;
    struct buf resp;
    int indexing; /* HSET replies still to come (one per name) */
    const char *index_err;
    int status;  /* 201 or 200 */
    bool verify; /* "verify": true: the endpoint echoes a challenge before anything is written */
    char verified[SECRETBOX_PLAIN_MAX + 1]; /* the secret of the challenge it echoed; "" if none */
};

static void reg_lookup(struct reg *g);

/* The webhookUrl of a registration or a PATCH of a subscription of the operational events
 * (reserved) or not: 0 for an http(s) URL (its host in *host, for the SSRF check), 1 for a
 * mailto: address (e-mail alerts, for the broker's operational events only, worker/mail.c: no
 * host to resolve, so no SSRF check), -1 answered 400. */
static int check_url(struct req *r, bool reserved, const char *url, struct url_host *host)
{
    char err[256];
    bool mailto = strncmp(url, MAILTO_PREFIX, sizeof MAILTO_PREFIX - 1) == 0;
    if (mailto && !reserved) {
        http_error(r, 400, "invalid_field",
                   "a mailto: webhookUrl is accepted only for the broker's operational events "
                   "(event names starting with \"" EVENT_NAME_RESERVED "\")");
        return -1;
    }
    if (mailto ? valid_mailto(url, strlen(url), err, sizeof err) < 0
               : valid_webhook_url(url, strlen(url), host, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        return -1;
    }
    return mailto;
}
/* Class (first key) of the registration locks: pg_advisory_lock(class, hashtext), one per event
 * name or pattern and one per URL, taken in key order (no two requests wait on each other in a
 * cycle). */
#define SUBS_LOCK_CLASS "7231002"
/* $1 the names (text[]), $2 the URL: the distinct keys in order (OFFSET 0 keeps the subquery's
 * order for the calls). */
#define SUBS_LOCK_KEYS                                                                             \
    "FROM (SELECT DISTINCT hashtext(x) AS k FROM unnest($1::text[] || $2::text) x "               \
    "  ORDER BY 1 OFFSET 0) t"

/* The names of a subscription, the operational events' or not: 400 (false) for a mix, whose
 * rules (mailto: URLs, filters) would contradict each other. *reserved tells which. */
static bool names_reserved(struct req *r, const struct evnames *n, bool *reserved)
{
    *reserved = evnames_any_reserved(n);
    if (*reserved && !evnames_all_reserved(n)) {
        http_error(r, 400, "invalid_field",
                   "eventNames: the broker's operational events (names starting with \""
                   EVENT_NAME_RESERVED "\") cannot be mixed with other names in one "
                   "subscription");
        return false;
    }
    return true;
}

static void reg_free(struct reg *g)
{
    OPENSSL_cleanse(g->secret, sizeof g->secret);
    OPENSSL_cleanse(g->plain, sizeof g->plain);
    OPENSSL_cleanse(g->verified, sizeof g->verified);
    free(g->seen_ct);
    evnames_free(&g->names);
    free(g->names_pg);
    free(g->url);
    free(g->headers);
    free(g->controls);
    buf_free(&g->resp);
    free(g);
}

/* Appends the event index value of a row (SQL_SUB_COLS order): its id and filter. */
static void index_value(struct buf *v, PGresult *res, int row)
{
    bool filtered = !PQgetisnull(res, row, SQL_SUB_FILTER);
    indexval_encode_filter(v, PQgetvalue(res, row, 0),
                           filtered ? PQgetvalue(res, row, SQL_SUB_FILTER) : NULL,
                           (size_t)PQgetlength(res, row, SQL_SUB_FILTER));
}

/* Before an index entry of name[0..n) is written on rd: when it is a pattern ("<prefix>.*",
 * "*"), the mark that tells triggers to read the pattern hashes (common/keys.h), sent first on
 * the same connection so that no trigger can see the entry without the mark. */
static void index_mark_pattern(struct rds *rd, const char *name, size_t n)
{
    if (evname_kind(name, n) == EVNAME_EXACT)
        return;
    char key[KEY_MAX];
    size_t klen = key_index_patterns(key);
    const char *argv[] = {"SET", key, "1"};
    size_t lens[] = {3, klen, 1};
    if (rds_cmd(rd, NULL, NULL, 3, argv, lens) < 0)
        return; /* not connected: the entry's own HSET fails the same way */
}

static void reg_indexed(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct reg *g = priv;
    struct req *r = g->r;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        g->index_err = reply ? "Redis answered an error" : "Redis connection lost";
    if (--g->indexing > 0)
        return;
    if (g->index_err) {
        const char *why = g->index_err;
        reg_free(g);
        http_error(r, 503, "unavailable",
                   "the subscription was saved but the event index could not be updated "
                   "(%s); repeat the request",
                   why);
        return;
    }
    int status = g->status;
    struct buf resp = g->resp;
    g->resp = (struct buf){0};
    reg_free(g);
    http_reply(r, status, &resp);
}

static void reg_saved(void *priv, PGresult *res, const char *err)
{
    struct reg *g = priv;
    struct req *r = g->r;
    if (!err && PQntuples(res) == 0 && ++g->tries < SECRET_CAS_TRIES) {
        /* The row changed (or appeared) since it was read, or the event filled up meanwhile:
         * read again (reg_found then answers 409 for a full event). */
        reg_lookup(g);
        return;
    }
    if (err || PQntuples(res) != 1) {
        reg_free(g);
        if (!err)
            http_error(r, 503, "unavailable",
                       "the subscription was changed by concurrent requests; repeat the request");
        else
            http_db_error(r, res, err);
        return;
    }
    g->status = strcmp(PQgetvalue(res, 0, SQL_SUB_NCOLS), "t") == 0 ? 201 : 200;
    sub_json(&g->resp, res, 0, g->plain, NULL);
    log_info(r->id, "subscription %s %s for %s", PQgetvalue(res, 0, 0),
             g->status == 201 ? "created" : "updated", PQgetvalue(res, 0, SQL_SUB_NAMES));
    /* One HSET per name (each in its own hash: any Redis Cluster slot), pipelined; the answer
     * once all have replied. The names are the row's: the request's, sorted. */
    struct buf v = {0};
    index_value(&v, res, 0);
    int n = g->names.n;
    g->indexing = n + 1; /* held while sending */
    for (int i = 0; i < n; i++) {
        char key[KEY_MAX];
        index_mark_pattern(r->b->redis, g->names.v[i], strlen(g->names.v[i]));
        size_t klen = key_event(key, g->tenant, g->names.v[i], strlen(g->names.v[i]));
        const char *argv[] = {"HSET", key, PQgetvalue(res, 0, 2), v.data};
        size_t lens[] = {4, klen, (size_t)PQgetlength(res, 0, 2), v.len};
        if (rds_cmd(r->b->redis, reg_indexed, g, 4, argv, lens) < 0)
            reg_indexed(r->b->redis, NULL, g);
    }
    buf_free(&v);
    reg_indexed(r->b->redis, &(redisReply){.type = REDIS_REPLY_STATUS}, g);
}

/* Validates the "headers" object and writes it as compact JSON into out. */
static int parse_headers(const cJSON *h, struct buf *out, char *err, size_t errlen)
{
    if (!cJSON_IsObject(h)) {
        snprintf(err, errlen, "headers must be an object of string values");
        return -1;
    }
    if (jsonv_has_dup_keys(h)) {
        snprintf(err, errlen, "headers has the same name twice");
        return -1;
    }
    int n = 0;
    buf_addc(out, '{');
    for (const cJSON *it = h->child; it; it = it->next) {
        if (++n > HEADERS_MAX_COUNT) {
            snprintf(err, errlen, "headers may have at most %d entries", HEADERS_MAX_COUNT);
            return -1;
        }
        if (!cJSON_IsString(it)) {
            snprintf(err, errlen, "headers.%.64s must be a string", it->string);
            return -1;
        }
        if (valid_header(it->string, it->valuestring, err, errlen) < 0)
            return -1;
        if (n > 1)
            buf_addc(out, ',');
        json_escape(out, it->string, strlen(it->string));
        buf_addc(out, ':');
        json_escape(out, it->valuestring, strlen(it->valuestring));
    }
    buf_addc(out, '}');
    return 0;
}

/* The answer to one of the statements around the upsert (the lock and the unlock). Nothing to
 * do: a failure there makes the upsert fail too, or ends the session, which drops the lock. */
static void reg_lock_done(void *priv, PGresult *res, const char *err)
{
    (void)priv, (void)res;
    if (err)
        log_warn("subs", "per-event registration lock: %s", err);
}

/* With the existing row (if any) read, the upsert: a new row gets the secret sealed for its new
 * id, and is inserted only while each of its names has fewer active subscriptions than
 * MAX_SUBSCRIPTIONS_PER_EVENT and no other active subscription delivers one of them to the URL
 * (decision 39: an index hash has one field per URL); an existing one (the same names and URL)
 * is updated only if it is still the row read, with
 * the secret read (a compare-and-set: the plain secrets were compared here, and a ciphertext is
 * bound to its row's id). No row back: reg_saved reads again. */
static void reg_upsert(struct reg *g)
{
    struct req *r = g->r;
    /* The counts, the overlap check and the insert are one statement, but under READ COMMITTED
     * that statement's snapshot would miss a concurrent registration committing meanwhile
     * (another broker), so registrations sharing a name or the URL are serialised by session
     * advisory locks (one per name and one for the URL) taken by the statement before (the
     * upsert then starts with a snapshot that sees every registration that held one of them
     * before it) and released by the statement after. The three are queued together on this
     * connection, so nothing runs between them; a lost connection drops the locks with the
     * session. The lock keys are the two-int form (a space of its own, apart from the
     * one-bigint locks of the migrations and the reconciler). */
    static const char lock_sql[] =
        "SELECT count(pg_advisory_lock(" SUBS_LOCK_CLASS ", k)) " SUBS_LOCK_KEYS;
    static const char unlock_sql[] =
        "SELECT count(pg_advisory_unlock(" SUBS_LOCK_CLASS ", k)) " SUBS_LOCK_KEYS;
    /* A secret sent with a re-registration replaces the current one at once, and a previous
     * secret still in its grace period stops signing too (no grace: that is rotate-secret's
     * job); the same secret again changes nothing. Without one, the secrets are kept. */
    /* The lifecycle log (decision 29) is written by the same statement: created / updated. */
    static const char sql[] =
        "WITH ins AS (INSERT INTO subscriptions (id, event_name, event_names, names_seen, "
        "plain_until, url, secret, headers, tenant, " SQL_CTL_COLS ") "
        "SELECT $1::uuid, ($2::text[])[1], $2::text[], $2::text[], " SQL_PLAIN_AT_CREATION("$2")
        ", $3::text, "
        "$4::text, COALESCE($5::jsonb, '{}'::jsonb), NULLIF($11::text, ''), "
        SQL_CTL_VALUES("$10") " "
        "WHERE NOT EXISTS (SELECT 1 FROM subscriptions WHERE event_names && $2::text[] "
        "  AND url = $3 AND status = 'active' AND event_names <> $2::text[] "
        "  AND coalesce(tenant, '') = $11) "
        "AND (EXISTS (SELECT 1 FROM subscriptions WHERE event_names = $2::text[] AND url = $3 "
        "  AND status = 'active' AND coalesce(tenant, '') = $11) "
        "OR NOT EXISTS (SELECT 1 FROM unnest($2::text[]) n WHERE (SELECT count(*) "
        "  FROM subscriptions x WHERE x.event_names @> ARRAY[n] AND x.status = 'active' "
        "  AND coalesce(x.tenant, '') = $11) >= $9::int)) "
        "ON CONFLICT (coalesce(tenant, ''), wh_names_key(event_names), url) WHERE status = 'active' DO UPDATE SET "
        "headers = COALESCE($5::jsonb, subscriptions.headers), " SQL_CTL_SET("$10", "subscriptions")
        "secret = COALESCE($6::text, subscriptions.secret), "
        "previous_secret = CASE WHEN $6::text IS NULL THEN subscriptions.previous_secret END, "
        "previous_secret_expires_at = CASE WHEN $6::text IS NULL "
        "  THEN subscriptions.previous_secret_expires_at END, "
        "updated_at = now() "
        "WHERE subscriptions.id = $7::uuid AND subscriptions.secret = $8::text "
        "RETURNING " SQL_SUB_COLS ", (xmax = 0) AS fresh), "
        "act AS (INSERT INTO subscription_activity (subscription_id, kind, detail) "
        "  SELECT id, CASE WHEN fresh THEN 'created' ELSE 'updated' END, "
        "  CASE WHEN fresh THEN 'registered' ELSE 'registered again' END FROM ins) "
        "SELECT * FROM ins";
    char limit[24];
    snprintf(limit, sizeof limit, "%ld", r->b->cfg.max_subs_per_event);
    const char *params[] = {g->id,
                            g->names_pg,
                            g->url,
                            g->insert_ct,
                            g->headers,
                            g->update_ct[0] ? g->update_ct : NULL,
                            g->seen_id[0] ? g->seen_id : NULL,
                            g->seen_ct,
                            limit,
                            g->controls,
                            g->tenant};
    const char *lock_params[] = {g->names_pg, g->url};
    struct pg *pg = r->b->pg_api;
    if (pg_query(pg, lock_sql, 2, lock_params, NULL, NULL, 0, reg_lock_done, NULL) < 0) {
        reg_free(g);
        http_db_error(r, NULL, "not connected");
        return;
    }
    /* Queued right behind the lock on the same connection: cannot fail while it did not (the
     * connection is only dropped from the loop). The unlock is queued while g is alive. */
    if (pg_query(pg, sql, 11, params, NULL, NULL, 0, reg_saved, g) < 0) {
        reg_saved(g, NULL, "database connection lost");
        return;
    }
    if (pg_query(pg, unlock_sql, 2, lock_params, NULL, NULL, 0, reg_lock_done, NULL) < 0)
        log_warn(r->id, "cannot queue the registration unlock; the session ends with the lock");
}

/* ---- endpoint verification (decision 32) ---- */

/* The endpoint's answer to the challenge: upsert, or answer what came back and write nothing. */
static void reg_verified(void *priv, enum verify_result result, const char *detail)
{
    struct reg *g = priv;
    struct req *r = g->r;
    if (result == VERIFY_OK) {
        memcpy(g->verified, g->plain, sizeof g->plain);
        reg_upsert(g);
        return;
    }
    reg_free(g);
    if (result == VERIFY_FAILED) {
        http_error(r, 422, "verification_failed", "%s", detail);
    } else if (result == VERIFY_REFUSED) {
        http_error(r, 400, "url_not_allowed", "%s", detail);
    } else {
        if (r->ev)
            evhttp_add_header(evhttp_request_get_output_headers(r->ev), "Retry-After", "1");
        http_error(r, 503, "unavailable", "%s", detail);
    }
}

/* Sends the challenge, signed with the secret the registration will store (g->plain, decided by
 * reg_found: the given one, else the existing row's, else the generated one) and with headers
 * (JSON object, NULL for none). */
static void reg_verify(struct reg *g, const char *headers)
{
    verify_check(g->url, g->plain, headers, reg_verified, g);
}

static void reg_found(void *priv, PGresult *res, const char *err)
{
    struct reg *g = priv;
    struct req *r = g->r;
    if (err) {
        reg_free(g);
        http_db_error(r, res, err);
        return;
    }
    free(g->seen_ct);
    g->seen_ct = NULL;
    g->seen_id[0] = g->update_ct[0] = '\0';
    bool exists = !PQgetisnull(res, 0, 1);
    if (!PQgetisnull(res, 0, 4)) {
        http_error(r, 409, "url_in_use",
                   "%s already receives some of these event names through subscription %s; a "
                   "URL gets each event name or pattern from one subscription: change that one "
                   "(PATCH), or register with exactly its eventNames to update it",
                   g->url, PQgetvalue(res, 0, 4));
        goto out_free;
    }
    if (!exists && strtol(PQgetvalue(res, 0, 0), NULL, 10) >= r->b->cfg.max_subs_per_event) {
        http_error(r, 409, "too_many_subscriptions",
                   "event %s already has %ld active subscriptions, the most allowed "
                   "(MAX_SUBSCRIPTIONS_PER_EVENT); delete one first",
                   PQgetvalue(res, 0, 5), r->b->cfg.max_subs_per_event);
        goto out_free;
    }
    if (secret_seal(r, g->secret, g->id, g->insert_ct) < 0)
        goto out_free;
    memcpy(g->plain, g->secret, sizeof g->secret);
    if (exists) {
        snprintf(g->seen_id, sizeof g->seen_id, "%s", PQgetvalue(res, 0, 1));
        g->seen_ct = xstrdup(PQgetvalue(res, 0, 2));
        char current[SECRETBOX_PLAIN_MAX + 1];
        if (secret_open(r, g->seen_ct, g->seen_id, current) < 0)
            goto out_free;
        if (g->secret_given && strcmp(current, g->secret) != 0) {
            if (secret_seal(r, g->secret, g->seen_id, g->update_ct) < 0) {
                OPENSSL_cleanse(current, sizeof current);
                goto out_free;
            }
        } else {
            memcpy(g->plain, current, sizeof current);
        }
        OPENSSL_cleanse(current, sizeof current);
    }
    if (g->verify && strcmp(g->verified, g->plain) != 0) {
        /* Not yet verified, or a compare-and-set retry (reg_saved) found another secret to
         * keep: the stored secret is always the one that signed the echoed challenge. The
         * headers sent are those the row will have: those given, else the current row's. */
        reg_verify(g, g->headers ? g->headers : exists ? PQgetvalue(res, 0, 3) : NULL);
        return;
    }
    reg_upsert(g);
    return;
out_free:
    reg_free(g);
}

/* Reads, within the registration's tenant ($3, "" for global: decision 44, so nothing of another
 * tenant shows), the largest number of active subscriptions of one of the names (and that
 * name), the active row of the same names and URL if any: id, stored secret and headers (NULL
 * when none), and another active subscription that delivers one of the names to the URL (NULL
 * when none). */
static void reg_lookup(struct reg *g)
{
    struct req *r = g->r;
    static const char sql[] =
        "WITH c AS (SELECT n, (SELECT count(*) FROM subscriptions x WHERE x.event_names @> "
        "  ARRAY[n] AND x.status = 'active' AND coalesce(x.tenant, '') = $3) AS k "
        "  FROM unnest($1::text[]) n ORDER BY k DESC LIMIT 1) "
        "SELECT (SELECT k FROM c), s.id::text, s.secret, s.headers::text, "
        "(SELECT min(o.id::text) FROM subscriptions o WHERE o.event_names && $1::text[] "
        "  AND o.url = $2 AND o.status = 'active' AND o.event_names <> $1::text[] "
        "  AND coalesce(o.tenant, '') = $3), "
        "(SELECT n FROM c) FROM (SELECT 1) one LEFT JOIN subscriptions s "
        "ON s.event_names = $1::text[] AND s.url = $2 AND s.status = 'active' "
        "AND coalesce(s.tenant, '') = $3";
    const char *params[] = {g->names_pg, g->url, g->tenant};
    if (pg_query(r->b->pg_api, sql, 3, params, NULL, NULL, 0, reg_found, g) < 0) {
        reg_free(g);
        http_db_error(r, NULL, "not connected");
    }
}

/* Answers a URL the SSRF guard did not allow: refused (400), or its lookups are full (503
 * with Retry-After). */
static void guard_refused(struct req *r, enum urlguard_verdict verdict, const char *reason)
{
    if (verdict == URLGUARD_REFUSED) {
        http_error(r, 400, "url_not_allowed", "%s", reason);
        return;
    }
    if (r->ev)
        evhttp_add_header(evhttp_request_get_output_headers(r->ev), "Retry-After", "1");
    http_error(r, 503, "unavailable", "%s", reason);
}

/* The SSRF guard's verdict on the URL: refuse, or upsert. */
static void reg_checked(void *priv, enum urlguard_verdict verdict, const char *reason)
{
    struct reg *g = priv;
    struct req *r = g->r;
    if (verdict != URLGUARD_ALLOWED) {
        reg_free(g);
        guard_refused(r, verdict, reason);
        return;
    }
    reg_lookup(g);
}

/* The tenant of a new subscription (decision 44) into out (TENANT_ID_MAX + 1 bytes, "" for a
 * global one): the body's "tenant" (a string, or null for global) for an admin key, which may
 * name any; a key limited to a tenant registers in its own, and naming another is a 403. The
 * operational events stay global. -1 after replying. */
static int reg_tenant(struct req *r, const cJSON *given, bool reserved, char *out)
{
    const char *scope = req_tenant_scope(r);
    if (given && !cJSON_IsNull(given) &&
        (!cJSON_IsString(given) ||
         !valid_tenant(given->valuestring, strlen(given->valuestring)))) {
        http_error(r, 400, "invalid_field",
                   "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -, or null for a global "
                   "subscription",
                   TENANT_ID_MAX);
        return -1;
    }
    const char *want = given && cJSON_IsString(given) ? given->valuestring : "";
    if (scope && given && strcmp(want, scope) != 0) {
        http_error(r, 403, "forbidden",
                   "this API key registers subscriptions of its own tenant only; leave tenant "
                   "out");
        return -1;
    }
    if (scope)
        want = scope;
    if (reserved && *want) {
        http_error(r, 400, "invalid_field",
                   "tenant: the broker's operational events (names starting with \""
                   EVENT_NAME_RESERVED "\") are global; subscribe to them without a tenant");
        return -1;
    }
    snprintf(out, TENANT_ID_MAX + 1, "%s", want);
    return 0;
}

void subs_register(struct req *r)
{
    char err[256];
    cJSON *doc = http_body_object(r);
    if (!doc)
        return;
    struct buf headers = {0}, ctl = {0};
    struct url_host host;
    struct reg *g = NULL;
    const cJSON *name = NULL, *names = NULL, *url = NULL, *hdrs = NULL, *given = NULL,
                *verify = NULL, *tenant = NULL;
    char tenant_id[TENANT_ID_MAX + 1];
    struct evnames evn = {0};
    bool reserved;
    buf_addc(&ctl, '{');
    for (const cJSON *it = doc->child; it; it = it->next) {
        int c = control_field(r, it, &ctl);
        if (c < 0)
            goto out_free;
        if (c > 0)
            continue;
        if (strcmp(it->string, "eventName") == 0)
            name = it;
        else if (strcmp(it->string, "eventNames") == 0)
            names = it;
        else if (strcmp(it->string, "webhookUrl") == 0)
            url = it;
        else if (strcmp(it->string, "headers") == 0)
            hdrs = it;
        else if (strcmp(it->string, "secret") == 0)
            given = it;
        else if (strcmp(it->string, "verify") == 0)
            verify = it;
        else if (strcmp(it->string, "tenant") == 0)
            tenant = it;
        else {
            http_error(r, 400, "invalid_field",
                       "unknown field \"%.64s\" (expected eventNames, eventName, webhookUrl, "
                       "headers, secret, verify, tenant, rateLimit, retryPolicy, "
                       "timeoutSeconds, description, payload, payloadFields, ordered, filter, "
                       "batching)",
                       it->string);
            goto out_free;
        }
    }
    if (evnames_parse(names, name, &evn, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        goto out_free;
    }
    if (!names_reserved(r, &evn, &reserved))
        goto out_free;
    if (reg_tenant(r, tenant, reserved, tenant_id) < 0)
        goto out_free;
    if (!cJSON_IsString(url)) {
        http_error(r, 400, "invalid_field", "webhookUrl is required and must be a string");
        goto out_free;
    }
    int mailto = check_url(r, reserved, url->valuestring, &host);
    if (mailto < 0 || !filter_allowed(r, reserved, doc))
        goto out_free;
    if (verify && !cJSON_IsBool(verify)) {
        http_error(r, 400, "invalid_field", "verify must be true or false");
        goto out_free;
    }
    if (mailto && cJSON_IsTrue(verify)) {
        http_error(r, 400, "invalid_field",
                   "verify: a mailto: webhookUrl cannot echo a challenge; leave verify out");
        goto out_free;
    }
    if (hdrs && !cJSON_IsNull(hdrs) && parse_headers(hdrs, &headers, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_field", "%s", err);
        goto out_free;
    }
    g = xcalloc(1, sizeof *g);
    if (secret_take(r, given, g->secret) < 0)
        goto out_free;
    g->r = r;
    g->secret_given = given != NULL;
    g->verify = cJSON_IsTrue(verify);
    memcpy(g->tenant, tenant_id, sizeof tenant_id);
    id_new(g->id);
    struct buf arr = {0};
    evnames_pg_array(&arr, evn.v, evn.n);
    g->names_pg = buf_steal(&arr, NULL);
    g->names = evn;
    evn = (struct evnames){0};
    g->url = xstrdup(url->valuestring);
    g->headers = headers.data ? xstrdup(headers.data) : NULL;
    buf_addc(&ctl, '}');
    g->controls = xstrdup(ctl.data);
    if (mailto)
        reg_lookup(g);
    else
        urlguard_check(&host, reg_checked, g);
    g = NULL;
out_free:
    if (g)
        reg_free(g);
    evnames_free(&evn);
    buf_free(&headers);
    buf_free(&ctl);
    cJSON_Delete(doc);
}

/* ---- list -------------------------------------------------------------------------------- */

/* One page of a listing: the query parameters, and the event name of a per-event listing. */
struct list {
    struct req *r;
    struct page page;
    bool by_event;
};

/* Rows: one per subscription of the page (SQL_SUB_COLS) plus the total count after them; a
 * page past the end is one row of NULLs with the count. */
static void list_done(void *priv, PGresult *res, const char *err)
{
    struct list *l = priv;
    struct req *r = l->r;
    struct page page = l->page;
    bool by_event = l->by_event;
    free(l);
    if (err || PQntuples(res) < 1) {
        http_db_error(r, res, err ? err : "no rows");
        return;
    }
    struct buf b = {0};
    buf_addc(&b, '{');
    if (by_event) {
        buf_adds(&b, "\"eventName\":");
        json_escape(&b, r->seg[0], strlen(r->seg[0]));
        buf_addc(&b, ',');
    }
    buf_adds(&b, "\"webhooks\":[");
    int n = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 1))
            continue; /* the count-only row */
        if (n++)
            buf_addc(&b, ',');
        sub_json(&b, res, i, NULL, NULL);
    }
    buf_addc(&b, ']');
    paging_json(&b, PQgetvalue(res, 0, SQL_SUB_NCOLS), &page);
    buf_addc(&b, '}');
    http_reply(r, 200, &b);
}

/* The tenant a listing shows (decision 44) into *out (owned, caller frees; NULL: every
 * subscription): a key limited to a tenant lists its own (naming another in ?tenant= is a
 * 403); an admin key lists all, or with ?tenant=<t> that tenant's, with ?tenant= (empty) the
 * global ones. -1 after replying. */
static int list_tenant(struct req *r, char **out)
{
    const char *scope = req_tenant_scope(r);
    char *t = http_query_param(r, "tenant");
    if (t && *t && !valid_tenant(t, strlen(t))) {
        http_error(r, 400, "invalid_field",
                   "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -, or empty for the "
                   "global subscriptions",
                   TENANT_ID_MAX);
        free(t);
        return -1;
    }
    if (scope && t && strcmp(t, scope) != 0) {
        http_error(r, 403, "forbidden", "this API key lists the subscriptions of its own tenant "
                                        "only; leave tenant out");
        free(t);
        return -1;
    }
    if (scope && !t)
        t = xstrdup(scope);
    *out = t;
    return 0;
}

/* Runs a listing statement with $1 page size, $2 offset, by event $3 the entries whose
 * subscriptions are listed (a text[]): for an event name, those that match it (the name, its
 * prefix patterns, "*": the subscriptions that receive it); for a pattern, the pattern itself;
 * and last ($3, or $4 by event) the tenant shown (SQL_IN_SCOPE, list_tenant). */
static void list_run(struct req *r, const char *sql, bool by_event)
{
    struct list *l = xcalloc(1, sizeof *l);
    char *tenant = NULL;
    l->r = r;
    l->by_event = by_event;
    if (paging_parse(r, &l->page) < 0 || list_tenant(r, &tenant) < 0) {
        free(l);
        return;
    }
    struct buf arr = {0};
    if (by_event) {
        char keys[EVNAMES_KEYS_MAX][EVNAME_SIZE];
        char *kp[EVNAMES_KEYS_MAX];
        const char *name = r->seg[0];
        int nk = 1;
        if (evname_kind(name, strlen(name)) == EVNAME_EXACT)
            nk = evname_keys(name, strlen(name), keys);
        else
            snprintf(keys[0], sizeof keys[0], "%s", name);
        for (int i = 0; i < nk; i++)
            kp[i] = keys[i];
        evnames_pg_array(&arr, kp, nk);
    }
    const char *params[] = {l->page.size_text, l->page.offset_text, by_event ? arr.data : tenant,
                            tenant};
    int rc = pg_query(r->b->pg_api, sql, by_event ? 4 : 3, params, NULL, NULL, 0, list_done, l);
    buf_free(&arr);
    free(tenant);
    if (rc < 0) {
        free(l);
        http_db_error(r, NULL, "not connected");
    }
}

void subs_list(struct req *r)
{
    static const char sql[] =
        "WITH t AS (SELECT count(*) AS n FROM subscriptions WHERE status = 'active' "
        "AND " SQL_IN_SCOPE("$3") ") "
        "SELECT s.*, t.n FROM t LEFT JOIN LATERAL (SELECT " SQL_SUB_COLS
        " FROM subscriptions WHERE status = 'active' AND " SQL_IN_SCOPE("$3")
        " ORDER BY created_at, id LIMIT $1 OFFSET $2) s ON true";
    list_run(r, sql, false);
}

/* The path's event name: an event name or a pattern (decision 39). */
static bool check_name(struct req *r)
{
    if (evname_kind(r->seg[0], strlen(r->seg[0])) == EVNAME_INVALID) {
        http_error(r, 400, "invalid_field",
                   "event name must be 1 to %d characters of A-Z a-z 0-9 . _ : -, or a pattern "
                   "ending in .* or *",
                   EVENT_NAME_MAX);
        return false;
    }
    return true;
}

void subs_list_event(struct req *r)
{
    if (!check_name(r))
        return;
    static const char sql[] =
        "WITH t AS (SELECT count(*) AS n FROM subscriptions WHERE event_names && $3::text[] "
        "AND status = 'active' AND " SQL_IN_SCOPE("$4") ") "
        "SELECT s.*, t.n FROM t LEFT JOIN LATERAL (SELECT " SQL_SUB_COLS
        " FROM subscriptions WHERE event_names && $3::text[] AND status = 'active' "
        "AND " SQL_IN_SCOPE("$4") " ORDER BY created_at, id LIMIT $1 OFFSET $2) s ON true";
    list_run(r, sql, true);
}

/* ---- get / delete ------------------------------------------------------------------------ */

static bool check_name_id(struct req *r)
{
    if (!check_name(r))
        return false;
    if (!id_valid(r->seg[1], strlen(r->seg[1]))) {
        http_error(r, 404, "not_found", "no subscription %.64s for event %s", r->seg[1],
                   r->seg[0]);
        return false;
    }
    char norm[ID_LEN + 1];
    id_normalize(r->seg[1], norm);
    memcpy(r->seg[1], norm, sizeof norm);
    return true;
}

static void get_done(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (!one_sub(r, res, err))
        return;
    char plain[SECRETBOX_PLAIN_MAX + 1];
    if (secret_open(r, PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 0), plain) < 0)
        return;
    struct buf b = {0};
    sub_json(&b, res, 0, plain, NULL);
    OPENSSL_cleanse(plain, sizeof plain);
    http_reply(r, 200, &b);
}

void subs_get(struct req *r)
{
    if (!check_name_id(r))
        return;
    static const char sql[] = "SELECT " SQL_SUB_COLS " FROM subscriptions WHERE id = $1 "
                              "AND $2 = ANY(event_names) AND status = 'active' "
                              "AND " SQL_IN_SCOPE("$3");
    const char *params[] = {r->seg[1], r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 3, params, NULL, NULL, 0, get_done, r) < 0)
        http_db_error(r, NULL, "not connected");
}

struct del {
    struct req *r;
    struct buf resp;
    int pending; /* HDEL replies still to come */
    const char *err;
};

static void del_released(void *priv)
{
    struct del *d = priv;
    struct req *r = d->r;
    struct buf resp = d->resp;
    free(d);
    http_reply(r, 200, &resp);
}

static void del_unindexed(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct del *d = priv;
    struct req *r = d->r;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        d->err = reply ? "Redis answered an error" : "Redis connection lost";
    if (--d->pending > 0)
        return;
    if (d->err) {
        /* PostgreSQL says deleted: the reconciler removes the stale index entries, and workers
         * cancel any job created for it meanwhile. */
        log_warn(r->id, "subscription deleted but the event index was not updated: %s", d->err);
    }
    /* Jobs held while it was paused go back to the stream, where the workers cancel them
     * (else they would wait for the reconciler). */
    pause_apply(r->b, r->id, r->seg[1], false, -1, del_released, d);
}

static void del_done(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (!one_sub(r, res, err))
        return;
    struct del *d = xcalloc(1, sizeof *d);
    d->r = r;
    sub_json(&d->resp, res, 0, NULL, NULL);
    log_info(r->id, "subscription %s deleted", r->seg[1]);
    /* The URL's field of every name's hash, pipelined (a field with another subscription's
     * value cannot be there: a URL gets each name from one subscription). */
    cJSON *names = cJSON_Parse(PQgetvalue(res, 0, SQL_SUB_NAMES));
    d->pending = 1; /* held while sending */
    for (const cJSON *it = names ? names->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it))
            continue;
        char key[KEY_MAX];
        size_t klen = key_event(key, row_tenant(res, 0), it->valuestring, strlen(it->valuestring));
        const char *argv[] = {"HDEL", key, PQgetvalue(res, 0, 2)};
        size_t lens[] = {4, klen, (size_t)PQgetlength(res, 0, 2)};
        d->pending++;
        if (rds_cmd(r->b->redis, del_unindexed, d, 3, argv, lens) < 0)
            del_unindexed(r->b->redis, NULL, d);
    }
    cJSON_Delete(names);
    del_unindexed(r->b->redis, &(redisReply){.type = REDIS_REPLY_STATUS}, d);
}

void subs_delete(struct req *r)
{
    if (!check_name_id(r))
        return;
    /* A deleted subscription never signs again: its secrets go with it (the row stays). */
    static const char sql[] = "WITH d AS (UPDATE subscriptions SET status = 'deleted', "
                              "deleted_at = now(), secret = NULL, previous_secret = NULL, "
                              "previous_secret_expires_at = NULL, "
                              "updated_at = now() WHERE id = $1 AND $2 = ANY(event_names) "
                              "AND status = 'active' AND " SQL_IN_SCOPE("$3") " "
                              "RETURNING " SQL_SUB_COLS "), "
                              "act AS (INSERT INTO subscription_activity (subscription_id, kind) "
                              "  SELECT id, 'deleted' FROM d) "
                              "SELECT * FROM d";
    const char *params[] = {r->seg[1], r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 3, params, NULL, NULL, 0, del_done, r) < 0)
        http_db_error(r, NULL, "not connected");
}

/* ---- PATCH ------------------------------------------------------------------------------- */

/* A change of a subscription's settings or delivery state, copied out of the body (it may go
 * before the URL check ends). */
struct patch {
    struct req *r;
    char *url;         /* the new webhookUrl, or NULL to keep */
    char *headers;     /* compact JSON, or NULL to keep */
    char *controls;    /* the settings given (control_field's JSON object) */
    char *names_pg;    /* the new event names (PostgreSQL array literal), or NULL to keep */
    const char *state; /* "active", "paused" or NULL to keep (a literal) */
    bool filter_given; /* the filter changes: the index entry is rewritten */
    bool unorder;      /* "ordered" set false or null: its waiting jobs are released */
    char *tenant_given; /* "tenant" in the body ("" for null), or NULL: it must be the current */
    char tenant[TENANT_ID_MAX + 1]; /* the subscription's ("" global), for its index keys */
    char sub[ID_LEN + 1];
    char *old_url;     /* the URL before the update (index entry to move) */
    struct buf value;  /* the index value after the update */
    char *new_url;     /* the URL after it */
    cJSON *old_names, *new_names; /* the event names before and after (JSON arrays) */
    int pending;       /* index scripts still to answer */
    const char *index_err;
    struct buf resp;
};

static void patch_free(struct patch *p)
{
    free(p->url);
    free(p->headers);
    free(p->controls);
    free(p->old_url);
    free(p->new_url);
    free(p->names_pg);
    free(p->tenant_given);
    cJSON_Delete(p->old_names);
    cJSON_Delete(p->new_names);
    buf_free(&p->value);
    buf_free(&p->resp);
    free(p);
}

static void patch_reply(struct patch *p)
{
    struct req *r = p->r;
    struct buf resp = p->resp;
    p->resp = (struct buf){0};
    patch_free(p);
    http_reply(r, 200, &resp);
}

/* The new URL is in the event index (or not, after a Redis failure: as for a registration,
 * repeating the request writes it). */
static void patch_indexed(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct patch *p = priv;
    struct req *r = p->r;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        p->index_err = reply ? "Redis answered an error" : "Redis connection lost";
    if (--p->pending > 0)
        return;
    if (p->index_err) {
        const char *why = p->index_err;
        patch_free(p);
        http_error(r, 503, "unavailable",
                   "the subscription was saved but the event index could not be updated "
                   "(%s); repeat the request",
                   why);
        return;
    }
    patch_reply(p);
}

static bool names_have(const cJSON *names, const char *name)
{
    for (const cJSON *it = names ? names->child : NULL; it; it = it->next)
        if (cJSON_IsString(it) && strcmp(it->valuestring, name) == 0)
            return true;
    return false;
}

/* In one name's hash, the index entry moves from the old URL (only if it still names this
 * subscription: a new registration may have taken that URL meanwhile; its value starts with the
 * same {"id":"..." whatever filter it carries) to the new one, with the new value (a changed
 * filter). An empty old URL: the name is new (nothing to remove); an empty new URL: the name
 * was removed (nothing to write). */
static const char move_lua[] =
    "if ARGV[1] ~= '' and ARGV[1] ~= ARGV[2] then local old = redis.call('HGET', KEYS[1], ARGV[1]) "
    "local id = string.match(ARGV[3], '^{\"id\":\"[^\"]+\"') "
    "if old and id and string.sub(old, 1, #id) == id then "
    "redis.call('HDEL', KEYS[1], ARGV[1]) end end "
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end return 1";

/* move_lua for one name: in old and/or new names. */
static void patch_move(struct patch *p, const char *name, bool in_old, bool in_new)
{
    struct req *r = p->r;
    char key[KEY_MAX];
    size_t klen = key_event(key, p->tenant, name, strlen(name));
    const char *from = in_old ? p->old_url : "", *to = in_new ? p->new_url : "";
    if (in_new)
        index_mark_pattern(r->b->redis, name, strlen(name));
    const char *argv[] = {"EVAL", move_lua, "1", key, from, to, p->value.data};
    size_t lens[] = {4, sizeof move_lua - 1, 1, klen, strlen(from), strlen(to), p->value.len};
    p->pending++;
    if (rds_cmd(r->b->redis, patch_indexed, p, 7, argv, lens) < 0)
        patch_indexed(r->b->redis, NULL, p);
}

/* After the delivery state (if any) is in Redis: the index when the URL or the filter was
 * given, then the answer. */
static void patch_paused(void *priv)
{
    struct patch *p = priv;
    struct req *r = p->r;
    if (!p->url && !p->filter_given && !p->names_pg) {
        patch_reply(p);
        return;
    }
    /* every name before and after: pipelined, one script per hash */
    p->pending = 1; /* held while sending */
    for (const cJSON *it = p->new_names ? p->new_names->child : NULL; it; it = it->next)
        if (cJSON_IsString(it))
            patch_move(p, it->valuestring, names_have(p->old_names, it->valuestring), true);
    for (const cJSON *it = p->old_names ? p->old_names->child : NULL; it; it = it->next)
        if (cJSON_IsString(it) && !names_have(p->new_names, it->valuestring))
            patch_move(p, it->valuestring, true, false);
    patch_indexed(r->b->redis, &(redisReply){.type = REDIS_REPLY_STATUS}, p);
}

/* Row: SQL_SUB_COLS, the URL before, the version (updated_at in microseconds), whether it is
 * disabled; the SQL_SUB_COLS part NULL when the update was refused (a pause of a disabled
 * subscription); no row: no such subscription. */
static void patch_done(void *priv, PGresult *res, const char *err)
{
    struct patch *p = priv;
    struct req *r = p->r;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (err && state && strcmp(state, "23505") == 0) {
        http_error(r, 409, "url_in_use",
                   "another subscription of event %s already delivers to %s; delete it or "
                   "choose another URL",
                   r->seg[0], p->url);
        goto out_free;
    }
    if (!one_sub(r, res, err))
        goto out_free;
    if (PQgetisnull(res, 0, 0) && strcmp(PQgetvalue(res, 0, SQL_SUB_NCOLS + 6), "t") == 0) {
        http_error(r, 400, "invalid_field",
                   "tenant is fixed when a subscription is registered and cannot change; "
                   "register a new subscription in the other tenant and delete this one");
        goto out_free;
    }
    if (PQgetisnull(res, 0, 0) && strcmp(PQgetvalue(res, 0, SQL_SUB_NCOLS + 4), "t") == 0) {
        http_error(r, 409, "url_in_use",
                   "another subscription already receives some of these event names at this "
                   "webhookUrl; a URL gets each event name or pattern from one subscription");
        goto out_free;
    }
    if (PQgetisnull(res, 0, 0) && strcmp(PQgetvalue(res, 0, SQL_SUB_NCOLS + 5), "t") == 0) {
        http_error(r, 409, "too_many_subscriptions",
                   "one of the new event names already has %ld active subscriptions, the most "
                   "allowed (MAX_SUBSCRIPTIONS_PER_EVENT); delete one first",
                   r->b->cfg.max_subs_per_event);
        goto out_free;
    }
    if (PQgetisnull(res, 0, 0)) {
        http_error(r, 409, "subscription_disabled",
                   "subscription %s is disabled (see disabledReason); set \"status\": "
                   "\"active\" first (that resumes delivery), then pause it",
                   r->seg[1]);
        goto out_free;
    }
    memcpy(p->sub, PQgetvalue(res, 0, 0), ID_LEN);
    p->sub[ID_LEN] = '\0';
    snprintf(p->tenant, sizeof p->tenant, "%s", row_tenant(res, 0));
    p->old_url = xstrdup(PQgetvalue(res, 0, SQL_SUB_NCOLS));
    p->new_url = xstrdup(PQgetvalue(res, 0, 2));
    p->old_names = cJSON_Parse(PQgetvalue(res, 0, SQL_SUB_NCOLS + 2));
    p->new_names = cJSON_Parse(PQgetvalue(res, 0, SQL_SUB_NAMES));
    index_value(&p->value, res, 0);
    long long version = strtoll(PQgetvalue(res, 0, SQL_SUB_NCOLS + 1), NULL, 10);
    char plain[SECRETBOX_PLAIN_MAX + 1], e[256];
    bool opened = secretbox_open(&r->b->secrets, PQgetvalue(res, 0, 3), p->sub, plain,
                                 sizeof plain, e, sizeof e) == 0;
    if (!opened)
        log_error(r->id, "subscription %s: the stored secret cannot be decrypted: %s", p->sub, e);
    sub_json(&p->resp, res, 0, opened ? plain : NULL, NULL);
    OPENSSL_cleanse(plain, sizeof plain);
    log_info(r->id, "subscription %s changed%s%s", p->sub, p->state ? ": status " : "",
             p->state ? p->state : "");
    if (p->state)
        pause_apply(r->b, r->id, p->sub, strcmp(p->state, "paused") == 0, version, patch_paused,
                    p);
    else if (p->unorder && PQgetisnull(res, 0, 10))
        /* no longer ordered (decision 33): the jobs waiting for their turn share the held zset;
         * released (ctl untouched), they are delivered as any others. A paused one keeps them
         * held until its resume releases them. */
        pause_apply(r->b, r->id, p->sub, false, -1, patch_paused, p);
    else
        patch_paused(p);
    return;
out_free:
    patch_free(p);
}

/* One statement: the row locked and read (its URL and whether it is disabled), then updated
 * unless that is a pause of a disabled subscription. "active" clears the delivery state and
 * the health a worker recorded; "paused" keeps the first pause time. updated_at is the clock
 * at the update (after the row lock), the version Redis compares (common/held.h). */
static void patch_update(struct patch *p)
{
    struct req *r = p->r;
    static const char sql[] =
        "WITH o0 AS (SELECT id AS o_id, url AS o_url, disabled_at IS NOT NULL AS o_disabled, "
        "  paused_at IS NOT NULL AS o_paused, disabled_reason AS o_reason, "
        "  event_names AS o_names, tenant AS o_tenant "
        "  FROM subscriptions WHERE id = $1 AND $2 = ANY(event_names) AND status = 'active' "
        "  AND " SQL_IN_SCOPE("$9") " FOR UPDATE), "
        /* decision 39: a URL gets each name or pattern from one active subscription (of its
         * tenant, decision 44) */
        "o AS (SELECT o0.*, EXISTS (SELECT 1 FROM subscriptions x WHERE x.status = 'active' "
        "  AND x.id <> o0.o_id AND x.url = COALESCE($3::text, o0.o_url) "
        "  AND x.tenant IS NOT DISTINCT FROM o0.o_tenant "
        "  AND x.event_names && COALESCE($7::text[], o0.o_names)) AS o_conflict, "
        /* an entry it did not list, already at MAX_SUBSCRIPTIONS_PER_EVENT in its tenant */
        "  EXISTS (SELECT 1 FROM unnest($7::text[]) n WHERE NOT n = ANY(o0.o_names) "
        "  AND (SELECT count(*) FROM subscriptions x WHERE x.event_names @> ARRAY[n] "
        "  AND x.status = 'active' AND x.tenant IS NOT DISTINCT FROM o0.o_tenant) >= $8::int) "
        "  AS o_full, "
        /* decision 44: the tenant is fixed; naming the current one is allowed */
        "  ($10::text IS NOT NULL AND coalesce(o0.o_tenant, '') <> $10::text) AS o_fixed "
        "  FROM o0), "
        "u AS (UPDATE subscriptions s SET url = COALESCE($3::text, s.url), "
        "  event_names = COALESCE($7::text[], s.event_names), "
        "  names_seen = CASE WHEN $7::text[] IS NULL THEN s.names_seen ELSE ARRAY(SELECT "
        "    DISTINCT n FROM unnest(s.names_seen || $7::text[]) n ORDER BY 1) END, "
        "  plain_until = CASE WHEN s.plain_until IS NOT NULL OR $7::text[] IS NULL "
        "    OR $7::text[] = ARRAY[s.event_name] THEN s.plain_until "
        "    ELSE wh_uuid_at(clock_timestamp() + interval '" SUBS_PLAIN_MARGIN "') END, "
        "  headers = COALESCE($4::jsonb, s.headers), " SQL_CTL_SET("$5", "s")
        "  paused_at = CASE $6::text WHEN 'active' THEN NULL "
        "    WHEN 'paused' THEN COALESCE(s.paused_at, now()) ELSE s.paused_at END, "
        "  disabled_at = CASE WHEN $6::text = 'active' THEN NULL ELSE s.disabled_at END, "
        "  disabled_reason = CASE WHEN $6::text = 'active' THEN NULL ELSE s.disabled_reason END, "
        "  failures = CASE WHEN $6::text = 'active' THEN 0 ELSE s.failures END, "
        "  failing_since = CASE WHEN $6::text = 'active' THEN NULL ELSE s.failing_since END, "
        "  circuit_open_until = CASE WHEN $6::text = 'active' THEN NULL "
        "    ELSE s.circuit_open_until END, "
        "  circuit_cooldown_s = CASE WHEN $6::text = 'active' THEN NULL "
        "    ELSE s.circuit_cooldown_s END, "
        "  slow_until = CASE WHEN $6::text = 'active' THEN NULL ELSE s.slow_until END, "
        "  updated_at = clock_timestamp() "
        "  FROM o WHERE s.id = o.o_id "
        "  AND NOT (coalesce($6::text, '') = 'paused' AND o.o_disabled) AND NOT o.o_conflict "
        "  AND NOT o.o_full AND NOT o.o_fixed "
        "  RETURNING " SQL_SUB_COLS ", o.o_url, "
        "  (extract(epoch FROM s.updated_at) * 1000000)::bigint, "
        "  array_to_json(o.o_names)::text), "
        /* the lifecycle log (decision 29): paused, resumed, enabled, updated */
        "act AS (INSERT INTO subscription_activity (subscription_id, kind, detail) "
        "  SELECT u.id, k.kind, k.detail FROM u CROSS JOIN o, LATERAL (VALUES "
        "  (CASE WHEN $6::text = 'paused' AND NOT o.o_paused THEN 'paused' END, NULL), "
        "  (CASE WHEN $6::text = 'active' AND o.o_disabled THEN 'enabled' "
        "    WHEN $6::text = 'active' AND o.o_paused THEN 'resumed' END, "
        "    CASE WHEN o.o_disabled THEN 'was disabled: ' || o.o_reason END), "
        "  (CASE WHEN $3::text IS NOT NULL OR $4::jsonb IS NOT NULL OR $5::jsonb <> '{}' "
        "    OR $7::text[] IS NOT NULL "
        "    THEN 'updated' END, concat_ws(', ', CASE WHEN $7::text[] IS NOT NULL "
        "    THEN 'eventNames' END, CASE WHEN $3::text IS NOT NULL THEN 'url' END, "
        "    CASE WHEN $4::jsonb IS NOT NULL THEN 'headers' END, "
        "    CASE WHEN $5::jsonb <> '{}' THEN 'settings' END))) k(kind, detail) "
        "  WHERE k.kind IS NOT NULL) "
        "SELECT u.*, o.o_disabled, o.o_conflict, o.o_full, o.o_fixed FROM o LEFT JOIN u ON true";
    char limit[24];
    snprintf(limit, sizeof limit, "%ld", r->b->cfg.max_subs_per_event);
    const char *params[] = {r->seg[1], r->seg[0], p->url,      p->headers, p->controls,
                            p->state,  p->names_pg, limit, req_tenant_scope(r),
                            p->tenant_given};
    /* A change of the names or the URL holds the registration locks of the names and URL given
     * (as a registration does; SUBS_LOCK_KEYS), so a registration cannot slip the same name
     * and URL in between the overlap check and the update. */
    struct pg *pg = r->b->pg_api;
    static const char lock_sql[] =
        "SELECT count(pg_advisory_lock(" SUBS_LOCK_CLASS ", k)) " SUBS_LOCK_KEYS;
    static const char unlock_sql[] =
        "SELECT count(pg_advisory_unlock(" SUBS_LOCK_CLASS ", k)) " SUBS_LOCK_KEYS;
    const char *lock_params[] = {p->names_pg ? p->names_pg : "{}", p->url};
    bool lock = p->names_pg || p->url;
    if (lock && pg_query(pg, lock_sql, 2, lock_params, NULL, NULL, 0, reg_lock_done, NULL) < 0) {
        patch_free(p);
        http_db_error(r, NULL, "not connected");
        return;
    }
    if (pg_query(pg, sql, 10, params, NULL, NULL, 0, patch_done, p) < 0) {
        if (!lock) {
            patch_free(p);
            http_db_error(r, NULL, "not connected");
            return;
        }
        patch_done(p, NULL, "database connection lost");
        return;
    }
    if (lock && pg_query(pg, unlock_sql, 2, lock_params, NULL, NULL, 0, reg_lock_done, NULL) < 0)
        log_warn(r->id, "cannot queue the PATCH unlock; the session ends with the lock");
}

/* The SSRF guard's verdict on a new URL: refuse, or update. */
static void patch_checked(void *priv, enum urlguard_verdict verdict, const char *reason)
{
    struct patch *p = priv;
    struct req *r = p->r;
    if (verdict != URLGUARD_ALLOWED) {
        patch_free(p);
        guard_refused(r, verdict, reason);
        return;
    }
    patch_update(p);
}

void subs_patch(struct req *r)
{
    char err[256];
    if (!check_name_id(r))
        return;
    cJSON *doc = http_body_object(r);
    if (!doc)
        return;
    struct buf headers = {0}, ctl = {0};
    struct url_host host;
    int mailto = 0;
    struct patch *p = xcalloc(1, sizeof *p);
    p->r = r;
    /* the subscription's kind, from the path's name (one of its names) */
    bool reserved = event_name_reserved(r->seg[0], strlen(r->seg[0]));
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "eventName");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(doc, "eventNames");
    if (name || names) {
        struct evnames evn;
        bool now_reserved;
        if (evnames_parse(names, name, &evn, err, sizeof err) < 0) {
            http_error(r, 400, "invalid_field", "%s", err);
            goto out_free;
        }
        bool ok = names_reserved(r, &evn, &now_reserved);
        if (ok && now_reserved != reserved) {
            http_error(r, 400, "invalid_field",
                       "eventNames: a subscription of the broker's operational events (names "
                       "starting with \"" EVENT_NAME_RESERVED "\") cannot become one of other "
                       "events, nor the reverse; register a new one");
            ok = false;
        }
        if (ok) {
            struct buf arr = {0};
            evnames_pg_array(&arr, evn.v, evn.n);
            p->names_pg = buf_steal(&arr, NULL);
        }
        evnames_free(&evn);
        if (!ok)
            goto out_free;
    }
    buf_addc(&ctl, '{');
    for (const cJSON *it = doc->child; it; it = it->next) {
        int c = control_field(r, it, &ctl);
        if (c < 0)
            goto out_free;
        p->filter_given |= c > 0 && strcmp(it->string, "filter") == 0;
        if (c > 0)
            continue;
        if (strcmp(it->string, "webhookUrl") == 0) {
            if (!cJSON_IsString(it)) {
                http_error(r, 400, "invalid_field", "webhookUrl must be a string");
                goto out_free;
            }
            mailto = check_url(r, reserved, it->valuestring, &host);
            if (mailto < 0)
                goto out_free;
            p->url = xstrdup(it->valuestring);
        } else if (strcmp(it->string, "headers") == 0) {
            if (cJSON_IsNull(it)) {
                buf_adds(&headers, "{}");
            } else if (parse_headers(it, &headers, err, sizeof err) < 0) {
                http_error(r, 400, "invalid_field", "%s", err);
                goto out_free;
            }
        } else if (strcmp(it->string, "status") == 0) {
            const char *v = cJSON_IsString(it) ? it->valuestring : "";
            if (strcmp(v, "disabled") == 0) {
                http_error(r, 400, "invalid_field",
                           "status \"disabled\" is set by the broker only (after failing "
                           "deliveries); use \"paused\" to stop delivering");
                goto out_free;
            }
            if (strcmp(v, "active") != 0 && strcmp(v, "paused") != 0) {
                http_error(r, 400, "invalid_field", "status must be \"active\" or \"paused\"");
                goto out_free;
            }
            p->state = strcmp(v, "active") == 0 ? "active" : "paused";
        } else if (strcmp(it->string, "eventNames") == 0 || strcmp(it->string, "eventName") == 0) {
            continue; /* read above */
        } else if (strcmp(it->string, "tenant") == 0) {
            /* decision 44: fixed at registration; the same value again is accepted */
            if (!cJSON_IsNull(it) &&
                (!cJSON_IsString(it) || !valid_tenant(it->valuestring, strlen(it->valuestring)))) {
                http_error(r, 400, "invalid_field",
                           "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -, or null; and "
                           "it cannot change after registration",
                           TENANT_ID_MAX);
                goto out_free;
            }
            free(p->tenant_given);
            p->tenant_given = xstrdup(cJSON_IsString(it) ? it->valuestring : "");
        } else if (strcmp(it->string, "verify") == 0) {
            http_error(r, 400, "invalid_field",
                       "verify is accepted at registration only: register the new webhookUrl "
                       "with POST /api/v0/webhooks and \"verify\": true, then delete the old one");
            goto out_free;
        } else {
            http_error(r, 400, "invalid_field",
                       "unknown field \"%.64s\" (expected eventNames, eventName, webhookUrl, "
                       "headers, status, tenant, rateLimit, retryPolicy, timeoutSeconds, "
                       "description, payload, payloadFields, ordered, filter, batching)",
                       it->string);
            goto out_free;
        }
    }
    if (!filter_allowed(r, reserved, doc))
        goto out_free;
    buf_addc(&ctl, '}');
    p->controls = xstrdup(ctl.data);
    p->headers = headers.data ? xstrdup(headers.data) : NULL;
    const cJSON *ord = cJSON_GetObjectItemCaseSensitive(doc, "ordered");
    p->unorder = ord && !cJSON_IsTrue(ord);
    if (p->url && !mailto)
        urlguard_check(&host, patch_checked, p);
    else
        patch_update(p);
    p = NULL;
out_free:
    if (p)
        patch_free(p);
    buf_free(&headers);
    buf_free(&ctl);
    cJSON_Delete(doc);
}

/* ---- rotate-secret ----------------------------------------------------------------------- */

#define GRACE_DEFAULT_S 86400L /* 24 h */
#define GRACE_MAX_S 604800L    /* 7 days */

/* The optional body {"secret","gracePeriodSeconds"}: the new secret into secret (SECRET_TEXT_MAX
 * bytes; generated when not given) and the grace period into grace. Replies and returns -1 when
 * the body is invalid. */
static int rotate_parse(struct req *r, char *secret, long *grace)
{
    *grace = GRACE_DEFAULT_S;
    const cJSON *given = NULL, *g = NULL;
    cJSON *doc = NULL;
    int ret = -1;
    if (r->body_len > 0) {
        if (!(doc = http_body_object(r)))
            return -1;
        for (const cJSON *it = doc->child; it; it = it->next) {
            if (strcmp(it->string, "secret") == 0)
                given = it;
            else if (strcmp(it->string, "gracePeriodSeconds") == 0)
                g = it;
            else {
                http_error(r, 400, "invalid_field",
                           "unknown field \"%.64s\" (expected secret, gracePeriodSeconds)",
                           it->string);
                goto out_free;
            }
        }
    }
    if (g) {
        double d = cJSON_IsNumber(g) ? g->valuedouble : -1;
        if (!(d >= 0 && d <= (double)GRACE_MAX_S) || d != (double)(long)d) {
            http_error(r, 400, "invalid_field",
                       "gracePeriodSeconds must be a whole number of seconds from 0 to %ld",
                       GRACE_MAX_S);
            goto out_free;
        }
        *grace = (long)d;
    }
    ret = secret_take(r, given, secret);
out_free:
    cJSON_Delete(doc);
    return ret;
}

struct rot {
    struct req *r;
    char secret[SECRET_TEXT_MAX];    /* the new secret, plain */
    char new_ct[SECRETBOX_TEXT_MAX]; /* sealed; "" when it is the current one already */
    char grace[24];
    char *seen_ct; /* the secret column as read: the compare-and-set */
    int tries;
};

static void rot_free(struct rot *t)
{
    OPENSSL_cleanse(t->secret, sizeof t->secret);
    free(t->seen_ct);
    free(t);
}

static void rotate_lookup(struct rot *t);

static void rotate_done(void *priv, PGresult *res, const char *err)
{
    struct rot *t = priv;
    struct req *r = t->r;
    if (!err && PQntuples(res) == 0 && ++t->tries < SECRET_CAS_TRIES) {
        rotate_lookup(t); /* changed or deleted since it was read: look again */
        return;
    }
    if (!err && PQntuples(res) == 0) {
        rot_free(t);
        http_error(r, 503, "unavailable",
                   "the subscription was changed by concurrent requests; repeat the request");
        return;
    }
    if (!one_sub(r, res, err)) {
        rot_free(t);
        return;
    }
    struct buf b = {0};
    sub_json_open(&b, res, 0, t->secret, NULL);
    prev_expiry_json(&b, res, 0);
    buf_addc(&b, '}');
    rot_free(t);
    if (PQgetisnull(res, 0, 8))
        log_info(r->id, "subscription %s: secret rotated, the previous one no longer signs",
                 r->seg[1]);
    else
        log_info(r->id, "subscription %s: secret rotated, the previous one signs until %s",
                 r->seg[1], PQgetvalue(res, 0, 8));
    http_reply(r, 200, &b);
}

/* With the current secret read and compared in plain, the update: only if the row still has
 * the secret read (else rotate_done reads again). */
static void rotate_found(void *priv, PGresult *res, const char *err)
{
    struct rot *t = priv;
    struct req *r = t->r;
    if (!one_sub(r, res, err))
        goto out_free;
    char current[SECRETBOX_PLAIN_MAX + 1];
    if (secret_open(r, PQgetvalue(res, 0, 0), r->seg[1], current) < 0)
        goto out_free;
    bool same = strcmp(current, t->secret) == 0;
    OPENSSL_cleanse(current, sizeof current);
    t->new_ct[0] = '\0';
    if (!same && secret_seal(r, t->secret, r->seg[1], t->new_ct) < 0)
        goto out_free;
    free(t->seen_ct);
    t->seen_ct = xstrdup(PQgetvalue(res, 0, 0));
    /* The current secret becomes the previous one (an older previous one is dropped: at most
     * two sign), unless there is no grace; rotating to the current secret ($5 NULL) changes
     * neither. Every SET expression reads the row as it was. */
    static const char sql[] =
        "UPDATE subscriptions SET "
        "previous_secret = CASE WHEN $5::text IS NULL THEN previous_secret "
        "  WHEN $3::int > 0 THEN secret END, "
        "previous_secret_expires_at = CASE WHEN $5::text IS NULL THEN previous_secret_expires_at "
        "  WHEN $3::int > 0 THEN now() + $3::int * interval '1 second' END, "
        "secret = COALESCE($5::text, secret), updated_at = now() "
        "WHERE id = $1 AND $2 = ANY(event_names) AND status = 'active' AND secret = $4 "
        "AND " SQL_IN_SCOPE("$6") " RETURNING " SQL_SUB_COLS;
    const char *params[] = {r->seg[1], r->seg[0], t->grace, t->seen_ct,
                            t->new_ct[0] ? t->new_ct : NULL, req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 6, params, NULL, NULL, 0, rotate_done, t) < 0) {
        http_db_error(r, NULL, "not connected");
        goto out_free;
    }
    return;
out_free:
    rot_free(t);
}

static void rotate_lookup(struct rot *t)
{
    struct req *r = t->r;
    static const char sql[] = "SELECT secret FROM subscriptions WHERE id = $1 "
                              "AND $2 = ANY(event_names) AND status = 'active' "
                              "AND " SQL_IN_SCOPE("$3");
    const char *params[] = {r->seg[1], r->seg[0], req_tenant_scope(r)};
    if (pg_query(r->b->pg_api, sql, 3, params, NULL, NULL, 0, rotate_found, t) < 0) {
        rot_free(t);
        http_db_error(r, NULL, "not connected");
    }
}

void subs_rotate_secret(struct req *r)
{
    if (!check_name_id(r))
        return;
    struct rot *t = xcalloc(1, sizeof *t);
    long grace_s;
    t->r = r;
    if (rotate_parse(r, t->secret, &grace_s) < 0) {
        rot_free(t);
        return;
    }
    snprintf(t->grace, sizeof t->grace, "%ld", grace_s);
    rotate_lookup(t);
}

/* ---- the event index --------------------------------------------------------------------- */

/* Rebuilding the index from PostgreSQL when the ready mark is missing (decision 4), in keyset
 * pages of INDEX_REBUILD_PAGE (name or pattern, URL) pairs of active subscriptions ordered by
 * (name, URL): one HSET per name
 * per page (a single key: any Redis Cluster slot), the next page read once every HSET of the
 * page has answered. The ready mark is set last by a script that sets it only if the token
 * written to wh:{<ready>}:rebuild before the first page is still there: a FLUSHALL (or a
 * restart that lost data) at any point of the rebuild removes the token, so the mark can
 * never cover an index missing entries written before it. One rebuild at a time per broker; a
 * rebuild started by another broker replaces the token, and only the last one started marks. */
static struct {
    bool busy, failed, last_page;
    struct broker *b;
    char token[ID_LEN + 1];
    char *after_tenant, *after_name, *after_url; /* keyset cursor: the previous page's last */
    long written, pages;
    int pending; /* HSET replies outstanding for the current page */
} ix;

static const char mark_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], '1') "
    "redis.call('DEL', KEYS[1]) return 1 end return 0";

static void rebuild_end(void)
{
    free(ix.after_tenant);
    free(ix.after_name);
    free(ix.after_url);
    ix.after_tenant = ix.after_name = ix.after_url = NULL;
    ix.busy = false;
}

static void rebuild_fail(const char *why)
{
    log_warn("index",
             "rebuilding the event index failed after %ld entries: %s; it stays "
             "unmarked (triggers fan out from PostgreSQL) until a rebuild completes",
             ix.written, why);
    rebuild_end();
}

static void rebuild_marked(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd, (void)priv;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        rebuild_fail(reply && reply->str ? reply->str : "Redis connection lost");
        return;
    }
    if (reply->integer == 1)
        log_info("index", "event index rebuilt from PostgreSQL: %ld subscriptions in %ld pages",
                 ix.written, ix.pages);
    else
        log_warn("index", "event index rebuild ended without the ready mark: its token is gone "
                          "(Redis emptied meanwhile, or another rebuild started); the next "
                          "trigger starts again");
    rebuild_end();
}

static void page_fetch(void);

/* Every HSET of a page answered: the next page, the mark, or the end. */
static void page_done(void)
{
    if (ix.failed) {
        rebuild_fail("an index write failed");
        return;
    }
    if (!ix.last_page) {
        page_fetch();
        return;
    }
    char tkey[KEY_MAX], rkey[KEY_MAX];
    size_t tlen = key_index_rebuild(tkey), rlen = key_index_ready(rkey);
    const char *argv[] = {"EVAL", mark_lua, "2", tkey, rkey, ix.token};
    size_t lens[] = {4, sizeof mark_lua - 1, 1, tlen, rlen, ID_LEN};
    if (rds_cmd(ix.b->redis, rebuild_marked, NULL, 6, argv, lens) < 0)
        rebuild_fail("Redis connection lost");
}

static void page_written(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd, (void)priv;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        ix.failed = true;
    if (--ix.pending == 0)
        page_done();
}

/* One HSET key url value ... for rows [from, to) of one event name of one tenant (id, event
 * name, URL, filter, tenant: "" for global). false when not sent. */
static bool page_send_event(PGresult *res, int from, int to)
{
    char key[KEY_MAX];
    struct buf *vals = xcalloc((size_t)(to - from), sizeof *vals);
    struct rargs a = {0};
    index_mark_pattern(ix.b->redis, PQgetvalue(res, from, 1), (size_t)PQgetlength(res, from, 1));
    rargs_adds(&a, "HSET");
    rargs_add(&a, key,
              key_event(key, PQgetvalue(res, from, 4), PQgetvalue(res, from, 1),
                        (size_t)PQgetlength(res, from, 1)));
    for (int i = from; i < to; i++) {
        struct buf *v = &vals[i - from];
        indexval_encode_filter(v, PQgetvalue(res, i, 0),
                               PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
                               (size_t)PQgetlength(res, i, 3));
        rargs_add(&a, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
        rargs_add(&a, v->data, v->len);
    }
    int rc = rargs_send(&a, ix.b->redis, page_written, NULL);
    rargs_free(&a);
    for (int i = from; i < to; i++)
        buf_free(&vals[i - from]);
    free(vals);
    if (rc == 0)
        ix.pending++;
    return rc == 0;
}

static void page_loaded(void *priv, PGresult *res, const char *err)
{
    (void)priv;
    if (err) {
        rebuild_fail(err);
        return;
    }
    int n = PQntuples(res);
    ix.last_page = n < ix.b->cfg.index_rebuild_page;
    ix.pages++;
    if (n > 0) {
        free(ix.after_tenant);
        free(ix.after_name);
        free(ix.after_url);
        ix.after_tenant = xstrdup(PQgetvalue(res, n - 1, 4));
        ix.after_name = xstrdup(PQgetvalue(res, n - 1, 1));
        ix.after_url = xstrdup(PQgetvalue(res, n - 1, 2));
    }
    ix.pending = 1; /* held while sending, so a reply cannot end the page early */
    for (int from = 0; from < n && !ix.failed;) {
        int to = from + 1;
        while (to < n && strcmp(PQgetvalue(res, to, 1), PQgetvalue(res, from, 1)) == 0 &&
               strcmp(PQgetvalue(res, to, 4), PQgetvalue(res, from, 4)) == 0)
            to++;
        if (!page_send_event(res, from, to))
            ix.failed = true;
        else
            ix.written += to - from;
        from = to;
    }
    log_debug("index", "event index rebuild: page %ld of %d subscriptions sent (%ld in all)",
              ix.pages, n, ix.written);
    if (--ix.pending == 0)
        page_done();
}

static void page_fetch(void)
{
    /* One row per (tenant, name or pattern, URL) of the active subscriptions (decision 39: a
     * URL has each name from one subscription of a tenant, so the triple is a key; decision
     * 44: "" for global). The triples are sorted for every page: the rebuild is rare and
     * subscriptions are few next to jobs. */
    static const char first_sql[] =
        "SELECT s.id, n.name, s.url, s.filter::text, coalesce(s.tenant, '') FROM subscriptions s "
        "CROSS JOIN LATERAL unnest(s.event_names) n(name) WHERE s.status = 'active' "
        "ORDER BY coalesce(s.tenant, ''), n.name, s.url LIMIT $1";
    static const char next_sql[] =
        "SELECT s.id, n.name, s.url, s.filter::text, coalesce(s.tenant, '') FROM subscriptions s "
        "CROSS JOIN LATERAL unnest(s.event_names) n(name) WHERE s.status = 'active' "
        "AND (coalesce(s.tenant, ''), n.name, s.url) > ($4, $2, $3) "
        "ORDER BY coalesce(s.tenant, ''), n.name, s.url LIMIT $1";
    char limit[24];
    snprintf(limit, sizeof limit, "%ld", ix.b->cfg.index_rebuild_page);
    const char *params[] = {limit, ix.after_name, ix.after_url, ix.after_tenant};
    bool first = ix.after_name == NULL;
    if (pg_query(ix.b->pg_api, first ? first_sql : next_sql, first ? 1 : 4, params, NULL, NULL, 0,
                 page_loaded, NULL) < 0)
        rebuild_fail("the database is unavailable");
}

static void token_set(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd, (void)priv;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        ix.failed = true; /* seen when the first page is done */
}

static void index_checked(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd, (void)priv;
    if (!reply || reply->type != REDIS_REPLY_INTEGER || reply->integer == 1) {
        ix.busy = false;
        return;
    }
    log_info("index", "the Redis event index is not marked complete; rebuilding it");
    /* The token goes first on this connection, so it is in Redis before any entry. */
    id_new(ix.token);
    ix.failed = ix.last_page = false;
    ix.written = ix.pages = 0;
    char tkey[KEY_MAX];
    size_t tlen = key_index_rebuild(tkey);
    const char *argv[] = {"SET", tkey, ix.token};
    size_t lens[] = {3, tlen, ID_LEN};
    if (rds_cmd(ix.b->redis, token_set, NULL, 3, argv, lens) < 0) {
        ix.busy = false;
        return;
    }
    page_fetch();
}

void subs_index_redis_lost(void)
{
    if (ix.busy)
        ix.failed = true; /* seen before anything else is sent: at the page's end */
}

void subs_index_ensure(struct broker *b)
{
    if (ix.busy || !rds_up(b->redis) || !pg_up(b->pg_api))
        return;
    char key[KEY_MAX];
    size_t klen = key_index_ready(key);
    const char *argv[] = {"EXISTS", key};
    size_t lens[] = {6, klen};
    ix.b = b;
    ix.busy = true;
    if (rds_cmd(b->redis, index_checked, NULL, 2, argv, lens) < 0)
        ix.busy = false;
}
