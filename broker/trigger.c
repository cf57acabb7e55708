/* POST /api/v0/trigger-event/<name>: validates the payload and an Idempotency-Key, fans out
 * through the Redis event index (PostgreSQL when the index is not marked complete), skipping
 * the subscriptions whose payload filter does not match, and hands the event to the group
 * commit. */
#include <cJSON.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <strings.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "codec.h"
#include "commit.h"
#include "ids.h"
#include "indexval.h"
#include "jsonv.h"
#include "keys.h"
#include "log.h"
#include "subfilter.h"
#include "valid.h"

/* The state of one trigger between its two pipelined Redis commands. Each command's callback
 * holds a reference, and the last one released frees it, whatever order or path (reply,
 * disconnect, a send that failed) the two take. from_index owns the request and the event;
 * when it cannot be sent, the trigger answers at once and r and e are NULL for index_state. */
struct fanout {
    int refs;
    struct req *r;
    struct event_rec *e;
    bool index_ready;
};

static void fanout_unref(struct fanout *f)
{
    if (--f->refs == 0)
        free(f);
}

static void add_job(struct broker *b, struct event_rec *e, const char *sub, size_t sublen,
                    const char *url, size_t urllen)
{
    if (sublen != ID_LEN || !id_valid(sub, sublen))
        return;
    struct job_rec *jr = &e->jobs[e->njobs++];
    id_new(jr->id);
    id_normalize(sub, jr->sub);
    jr->url = xstrndup(url, urllen);
    jr->part = id_partition(jr->sub, (uint32_t)b->cfg.partitions);
}

static void from_db(void *priv, PGresult *res, const char *err)
{
    struct fanout *f = priv;
    struct req *r = f->r;
    struct event_rec *e = f->e;
    fanout_unref(f);
    if (err) {
        event_rec_free(e);
        http_db_error(r, res, err);
        return;
    }
    int n = PQntuples(res);
    e->jobs = xcalloc((size_t)n + 1, sizeof *e->jobs);
    struct subfilter_payload pl = {.p = e->payload, .n = e->payload_len};
    for (int i = 0; i < n; i++) {
        if (!PQgetisnull(res, i, 2) &&
            (PQgetlength(res, i, 0) != ID_LEN ||
             !subfilter_match(&pl, PQgetvalue(res, i, 0), PQgetvalue(res, i, 2),
                              (size_t)PQgetlength(res, i, 2), r->id)))
            continue;
        add_job(r->b, e, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0),
                PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
    }
    subfilter_payload_done(&pl);
    commit_submit(r->b, e);
}

static void from_index(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct fanout *f = priv;
    struct req *r = f->r;
    struct event_rec *e = f->e;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        fanout_unref(f);
        event_rec_free(e);
        http_error(r, 503, "unavailable", "Redis is unavailable (%s); the event was not accepted",
                   reply && reply->str ? reply->str : "connection lost");
        return;
    }
    if (!f->index_ready) {
        /* Redis lost the index (restart, FLUSHALL): fan out from the truth meanwhile. */
        subs_index_ensure(r->b);
        static const char sql[] =
            "SELECT id, url, filter::text FROM subscriptions WHERE event_name = $1 "
            "AND status = 'active'";
        const char *params[] = {e->name};
        /* from_db takes over this callback's reference */
        if (pg_query(r->b->pg_api, sql, 1, params, NULL, NULL, 0, from_db, f) < 0) {
            fanout_unref(f);
            event_rec_free(e);
            http_db_error(r, NULL, "not connected");
        }
        return;
    }
    fanout_unref(f);
    size_t n = reply->elements / 2;
    e->jobs = xcalloc(n + 1, sizeof *e->jobs);
    struct subfilter_payload pl = {.p = e->payload, .n = e->payload_len};
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        redisReply *url = reply->element[i], *val = reply->element[i + 1];
        if (url->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        struct indexval iv;
        if (!indexval_decode(val->str, val->len, &iv)) {
            log_warn(r->id, "ignoring a malformed event index entry for %s", e->name);
            continue;
        }
        if (iv.filter && !subfilter_match(&pl, iv.id, iv.filter, iv.filter_len, r->id))
            continue;
        add_job(r->b, e, iv.id, ID_LEN, url->str, url->len);
    }
    subfilter_payload_done(&pl);
    commit_submit(r->b, e);
}

static void index_state(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct fanout *f = priv;
    f->index_ready = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    fanout_unref(f);
}

/* The request's Idempotency-Key header: 0 with *key NULL when there is none, 0 with the value,
 * or -1 when there are several (the value borrowed from the request). */
static int idem_header(struct req *r, const char **key)
{
    *key = NULL;
    if (!r->ev)
        return 0;
    struct evkeyval *kv;
    TAILQ_FOREACH (kv, evhttp_request_get_input_headers(r->ev), next) {
        if (strcasecmp(kv->key, "Idempotency-Key") != 0)
            continue;
        if (*key)
            return -1;
        *key = kv->value;
    }
    return 0;
}

/* The keyed commit's part of an event: the key and the SHA-256 of the payload. NULL when
 * OpenSSL fails; caller frees. */
static struct idem *idem_new(const char *key, const char *payload, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(payload, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return NULL;
    struct idem *id = xcalloc(1, sizeof *id);
    memcpy(id->key, key, strlen(key) + 1);
    hex_encode(md, mdlen, id->sha256);
    return id;
}

void trigger_post(struct req *r)
{
    char err[256];
    const char *name = r->seg[0];
    if (!valid_event_name(name, strlen(name))) {
        http_error(r, 400, "invalid_field",
                   "event name must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
                   EVENT_NAME_MAX);
        return;
    }
    if (event_name_reserved(name, strlen(name))) {
        http_error(r, 403, "reserved_event_name",
                   "event names starting with \"%s\" are the broker's own operational events; "
                   "they can be subscribed to but not triggered",
                   EVENT_NAME_RESERVED);
        return;
    }
    const char *idem_key;
    if (idem_header(r, &idem_key) < 0) {
        http_error(r, 400, "invalid_field", "send at most one Idempotency-Key header");
        return;
    }
    if (idem_key && !valid_idempotency_key(idem_key, strlen(idem_key))) {
        http_error(r, 400, "invalid_field",
                   "Idempotency-Key must be 1 to %d characters of printable ASCII (0x20-0x7e)",
                   IDEMPOTENCY_KEY_MAX);
        return;
    }
    if (!http_require_json_body(r))
        return;
    if (jsonv_validate(r->body, r->body_len, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_json", "%s", err);
        return;
    }
    struct broker *b = r->b;
    if (!pg_up(b->pg_commit)) {
        http_db_error(r, NULL, "not connected");
        return;
    }
    struct idem *idem = NULL;
    if (idem_key && !(idem = idem_new(idem_key, r->body, r->body_len))) {
        http_error(r, 500, "internal", "SHA-256 of the payload failed");
        return;
    }
    struct event_rec *e = xcalloc(1, sizeof *e);
    e->idem = idem;
    e->r = r;
    id_new(e->id);
    memcpy(e->name, name, strlen(name) + 1);
    e->payload = xstrndup(r->body, r->body_len);
    e->payload_len = r->body_len;
    struct fanout *f = xcalloc(1, sizeof *f);
    f->refs = 2;
    f->r = r;
    f->e = e;
    /* Two pipelined commands on one connection: replies arrive in order, so index_state has
     * run when from_index runs. */
    char ready_key[KEY_MAX], key[KEY_MAX];
    size_t rlen = key_index_ready(ready_key);
    size_t klen = key_event(key, name, strlen(name));
    const char *ex[] = {"EXISTS", ready_key};
    size_t exl[] = {6, rlen};
    const char *hg[] = {"HGETALL", key};
    size_t hgl[] = {7, klen};
    if (rds_cmd(b->redis, index_state, f, 2, ex, exl) < 0) {
        free(f); /* not connected: no callback holds it */
    } else if (rds_cmd(b->redis, from_index, f, 2, hg, hgl) == 0) {
        return;
    } else {
        /* Only the first command went out (never seen on a live connection): its callback
         * keeps the last reference and finds the request already answered. */
        f->r = NULL;
        f->e = NULL;
        fanout_unref(f);
    }
    event_rec_free(e);
    http_error(r, 503, "unavailable", "Redis is unavailable; the event was not accepted");
}
