/* POST /api/v0/trigger-event/<name>[?tenant=<t>]: validates the payload and an Idempotency-Key,
 * fans out through the Redis event index of the event's tenant, or the global one (decision 44;
 * the name's hash, one per prefix pattern that can match it and the one of "*"; PostgreSQL
 * when the index is not marked complete), one job per subscription,
 * skipping the subscriptions whose payload filter does not match, and hands the event to the
 * group commit. */
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
#include "evnames.h"
#include "ids.h"
#include "indexval.h"
#include "jsonv.h"
#include "keys.h"
#include "log.h"
#include "subfilter.h"
#include "valid.h"

/* One subscription found in the index (or PostgreSQL) whose filter matched: owned URL. */
struct hit {
    char id[ID_LEN + 1];
    char *url;
};

/* The state of one trigger between its pipelined Redis commands: MGET of the ready mark and
 * the patterns mark with the HGETALL of the name's own entry; then, only when some pattern was
 * ever indexed (the patterns mark), a second pipeline with one HGETALL per pattern entry that
 * can match the name (decision 39: a prefix pattern per dot, "*"). Each command's callback
 * holds a reference, and the last one released frees it, whatever order or path (reply,
 * disconnect, a send that failed) they take. The last HGETALL's callback does the fan-out
 * (replies come in order on one connection). r and e are owned until then; NULL when the
 * trigger was answered already. */
struct fanout {
    int refs;
    int hgetalls;  /* HGETALL replies still to come */
    bool patterns; /* the patterns mark was set: the pattern entries are read too */
    bool second;   /* the pattern entries' HGETALLs were sent */
    bool failed;  /* one of them was not an array */
    const char *err;
    struct req *r;
    struct event_rec *e;
    bool index_ready;
    struct subfilter_payload pl;
    struct hit *hits;
    size_t nhits, cap;
};

static void fanout_unref(struct fanout *f)
{
    if (--f->refs > 0)
        return;
    for (size_t i = 0; i < f->nhits; i++)
        free(f->hits[i].url);
    free(f->hits);
    subfilter_payload_done(&f->pl);
    free(f);
}

/* A job for subscription sub (a normalised id) to url, which the job takes over. */
static void add_job(struct broker *b, struct event_rec *e, const char *sub, char *url)
{
    struct job_rec *jr = &e->jobs[e->njobs++];
    id_new(jr->id);
    memcpy(jr->sub, sub, ID_LEN + 1);
    jr->url = url;
    jr->part = id_partition(jr->sub, (uint32_t)b->cfg.partitions);
}

static void add_hit(struct fanout *f, const char *sub, const char *url, size_t urllen)
{
    if (f->nhits == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 16;
        f->hits = xrealloc(f->hits, f->cap * sizeof *f->hits);
    }
    struct hit *h = &f->hits[f->nhits++];
    id_normalize(sub, h->id);
    h->url = xstrndup(url, urllen);
}

static int cmp_hit(const void *a, const void *b)
{
    return memcmp(((const struct hit *)a)->id, ((const struct hit *)b)->id, ID_LEN);
}

/* One job per subscription (a subscription listing two entries that match, "order.*" and
 * "order.item.*", is in two hashes), then the commit. Takes over f's r and e. */
static void fanout_commit(struct fanout *f)
{
    struct event_rec *e = f->e;
    if (f->nhits > 1)
        qsort(f->hits, f->nhits, sizeof *f->hits, cmp_hit);
    e->jobs = xcalloc(f->nhits + 1, sizeof *e->jobs);
    for (size_t i = 0; i < f->nhits; i++) {
        if (i && memcmp(f->hits[i].id, f->hits[i - 1].id, ID_LEN) == 0)
            continue;
        add_job(f->r->b, e, f->hits[i].id, f->hits[i].url);
        f->hits[i].url = NULL; /* the job's now */
    }
    f->r = NULL;
    f->e = NULL;
    commit_submit(e->r->b, e);
}

static void from_db(void *priv, PGresult *res, const char *err)
{
    struct fanout *f = priv;
    struct req *r = f->r;
    if (err) {
        event_rec_free(f->e);
        f->e = NULL;
        f->r = NULL;
        fanout_unref(f);
        http_db_error(r, res, err);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetlength(res, i, 0) != ID_LEN || !id_valid(PQgetvalue(res, i, 0), ID_LEN))
            continue;
        if (!PQgetisnull(res, i, 2) &&
            !subfilter_match(&f->pl, PQgetvalue(res, i, 0), PQgetvalue(res, i, 2),
                             (size_t)PQgetlength(res, i, 2), r->id))
            continue;
        add_hit(f, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
    }
    fanout_commit(f);
    fanout_unref(f);
}

/* Redis lost the index (restart, FLUSHALL): fan out from the truth meanwhile, through the
 * subscriptions whose names hold one of the name's entries (the GIN index on event_names). */
static void fanout_from_db(struct fanout *f)
{
    struct req *r = f->r;
    struct event_rec *e = f->e;
    subs_index_ensure(r->b);
    static const char sql[] = "SELECT id, url, filter::text FROM subscriptions "
                              "WHERE event_names && $1::text[] AND status = 'active' "
                              "AND coalesce(tenant, '') = $2";
    char keys[EVNAMES_KEYS_MAX][EVNAME_SIZE];
    char *kp[EVNAMES_KEYS_MAX];
    int nk = evname_keys(e->name, strlen(e->name), keys);
    for (int i = 0; i < nk; i++)
        kp[i] = keys[i];
    struct buf arr = {0};
    evnames_pg_array(&arr, kp, nk);
    const char *params[] = {arr.data, e->tenant};
    f->refs++; /* from_db's */
    int rc = pg_query(r->b->pg_api, sql, 2, params, NULL, NULL, 0, from_db, f);
    buf_free(&arr);
    if (rc < 0) {
        f->refs--;
        event_rec_free(e);
        f->r = NULL;
        f->e = NULL;
        http_db_error(r, NULL, "not connected");
    }
}

static void from_index(struct rds *rd, redisReply *reply, void *priv);

/* The second pipeline: one HGETALL per pattern entry that can match the name (all the entries
 * evname_keys gives after the name itself). 0, or -1 when one could not be sent (those sent
 * find the trigger answered). */
static int read_patterns(struct rds *rd, struct fanout *f)
{
    char keys[EVNAMES_KEYS_MAX][EVNAME_SIZE];
    int nk = evname_keys(f->e->name, strlen(f->e->name), keys);
    for (int i = 1; i < nk; i++) {
        char key[KEY_MAX];
        size_t klen = key_event(key, f->e->tenant, keys[i], strlen(keys[i]));
        const char *hg[] = {"HGETALL", key};
        size_t hgl[] = {7, klen};
        f->refs++;
        f->hgetalls++;
        if (rds_cmd(rd, from_index, f, 2, hg, hgl) < 0) {
            f->refs--;
            f->hgetalls--;
            return -1;
        }
    }
    return 0;
}

static void from_index(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct fanout *f = priv;
    struct req *r = f->r;
    f->hgetalls--;
    if (!r) { /* answered already */
        fanout_unref(f);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        f->failed = true;
        if (!f->err)
            f->err = reply && reply->str ? "Redis answered an error" : "connection lost";
    } else if (f->index_ready) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            redisReply *url = reply->element[i], *val = reply->element[i + 1];
            if (url->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
                continue;
            struct indexval iv;
            if (!indexval_decode(val->str, val->len, &iv)) {
                log_warn(r->id, "ignoring a malformed event index entry for %s", f->e->name);
                continue;
            }
            if (iv.filter && !subfilter_match(&f->pl, iv.id, iv.filter, iv.filter_len, r->id))
                continue;
            add_hit(f, iv.id, url->str, url->len);
        }
    }
    if (f->hgetalls > 0) {
        fanout_unref(f);
        return;
    }
    if (!f->failed && f->index_ready && f->patterns && !f->second) {
        f->second = true;
        if (read_patterns(rd, f) < 0) {
            f->failed = true;
            f->err = "connection lost";
        } else if (f->hgetalls > 0) {
            fanout_unref(f);
            return;
        } /* else: no pattern can match the name */
    }
    if (f->failed) {
        event_rec_free(f->e);
        f->e = NULL;
        f->r = NULL;
        http_error(r, 503, "unavailable", "Redis is unavailable (%s); the event was not accepted",
                   f->err);
    } else if (!f->index_ready) {
        fanout_from_db(f);
    } else {
        fanout_commit(f);
    }
    fanout_unref(f);
}

static void index_state(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct fanout *f = priv;
    f->index_ready = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                     reply->element[0]->type == REDIS_REPLY_STRING;
    f->patterns = f->index_ready && reply->element[1]->type == REDIS_REPLY_STRING;
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

/* The keyed commit's part of an event: the key (as stored: prefixed by the tenant and 0x1f for
 * a tenant's event, decision 44) and the SHA-256 of the payload. NULL when OpenSSL fails;
 * caller frees. */
static struct idem *idem_new(const char *tenant, const char *key, const char *payload,
                             size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(payload, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return NULL;
    struct idem *id = xcalloc(1, sizeof *id);
    if (*tenant)
        snprintf(id->key, sizeof id->key, "%s\x1f%s", tenant, key);
    else
        memcpy(id->key, key, strlen(key) + 1);
    hex_encode(md, mdlen, id->sha256);
    return id;
}

/* The event's tenant (decision 44) into out (TENANT_ID_MAX + 1 bytes): the "tenant" query
 * parameter, else the key's own tenant ("" for a global event). A key limited to a tenant may
 * name only its own (403); a bad id is a 400. -1 after replying. */
static int trigger_tenant(struct req *r, char *out)
{
    char *t = http_query_param(r, "tenant");
    const char *mine = r->who.tenant;
    int rc = -1;
    if (t && !valid_tenant(t, strlen(t))) {
        http_error(r, 400, "invalid_field",
                   "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -", TENANT_ID_MAX);
        goto out_free;
    }
    if (t && *mine && strcmp(t, mine) != 0) {
        http_error(r, 403, "forbidden", "this API key triggers events of its own tenant only");
        goto out_free;
    }
    snprintf(out, TENANT_ID_MAX + 1, "%s", t ? t : mine);
    rc = 0;
out_free:
    free(t);
    return rc;
}

void trigger_post(struct req *r)
{
    char tenant[TENANT_ID_MAX + 1];
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
    if (trigger_tenant(r, tenant) < 0)
        return;
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
    if (idem_key && !(idem = idem_new(tenant, idem_key, r->body, r->body_len))) {
        http_error(r, 500, "internal", "SHA-256 of the payload failed");
        return;
    }
    struct event_rec *e = xcalloc(1, sizeof *e);
    e->idem = idem;
    e->r = r;
    id_new(e->id);
    memcpy(e->name, name, strlen(name) + 1);
    memcpy(e->tenant, tenant, sizeof tenant);
    e->payload = xstrndup(r->body, r->body_len);
    e->payload_len = r->body_len;
    struct fanout *f = xcalloc(1, sizeof *f);
    f->refs = 1; /* this function's until the commands are sent */
    f->r = r;
    f->e = e;
    f->pl = (struct subfilter_payload){.p = e->payload, .n = e->payload_len};
    /* Pipelined on one connection: replies arrive in order, so index_state has run when
     * from_index runs, which sends the pattern entries' HGETALLs when the mark says so. */
    char key[KEY_MAX], pkey[KEY_MAX];
    size_t klen = key_index_ready(key), plen = key_index_patterns(pkey);
    const char *mg[] = {"MGET", key, pkey};
    size_t mgl[] = {4, klen, plen};
    f->refs++;
    if (rds_cmd(b->redis, index_state, f, 3, mg, mgl) < 0) {
        f->refs--;
        goto out_unavailable;
    }
    f->hgetalls = 1;
    klen = key_event(key, tenant, name, strlen(name));
    const char *hg[] = {"HGETALL", key};
    size_t hgl[] = {7, klen};
    f->refs++;
    if (rds_cmd(b->redis, from_index, f, 2, hg, hgl) < 0) {
        /* The MGET went out (never seen on a live connection): its callback finds the request
         * already answered. */
        f->refs--;
        goto out_unavailable;
    }
    fanout_unref(f);
    return;
out_unavailable:
    f->r = NULL;
    f->e = NULL;
    fanout_unref(f);
    event_rec_free(e);
    http_error(r, 503, "unavailable", "Redis is unavailable; the event was not accepted");
}
