/* Reconciling the Redis event index (wh:event:<name or pattern>, decision 39, and a tenant's
 * wh:event:@<tenant>:<name or pattern>, decision 44) with the active subscriptions in
 * PostgreSQL, in bounded steps: every index key found by SCAN is checked against the
 * subscriptions of its tenant listing that name or pattern (stale entries are removed by compare-and-delete, only when their id is
 * confirmed inactive), then the active subscriptions are read in keyset pages and missing or
 * outdated entries (another id, or not the filter PostgreSQL has) are written (HMGET per page).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evnames.h"
#include "indexval.h"
#include "keys.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "recon.h"
#include "valid.h"

static const char cas_hdel_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
    "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/* Writes the entry of subscription id of tenant ("" global) with its filter text (NULL: none). */
static int write_entry(struct recon *r, const char *tenant, const char *name, const char *url,
                       const char *id, const char *filter)
{
    r->n.index_fixed++;
    log_info("index", "writing %s%s%s -> %s to the event index", *tenant ? tenant : "",
             *tenant ? ":" : "", name, url);
    if (r->cfg.dry_run)
        return 0;
    char key[KEY_MAX];
    if (evname_kind(name, strlen(name)) != EVNAME_EXACT) {
        /* the mark that makes triggers read the pattern hashes, before the entry */
        size_t mlen = key_index_patterns(key);
        const char *margv[] = {"SET", key, "1"};
        size_t mlens[] = {3, mlen, 1};
        redisReply *mrep = recon_redis(r, 3, margv, mlens);
        if (!mrep)
            return -1;
        freeReplyObject(mrep);
    }
    size_t klen = key_event(key, tenant, name, strlen(name));
    struct buf v = {0};
    indexval_encode_filter(&v, id, filter, filter ? strlen(filter) : 0);
    const char *argv[] = {"HSET", key, url, v.data};
    size_t lens[] = {4, klen, strlen(url), v.len};
    redisReply *rep = recon_redis(r, 4, argv, lens);
    buf_free(&v);
    freeReplyObject(rep);
    return rep ? 0 : -1;
}

/* Whether an entry's filter is the one PostgreSQL has (the text of the jsonb column, as every
 * writer of the index takes it). */
static bool same_filter(const struct indexval *iv, const char *filter)
{
    if (!iv->filter || !filter)
        return !iv->filter && !filter;
    return iv->filter_len == strlen(filter) && memcmp(iv->filter, filter, iv->filter_len) == 0;
}

/* An entry whose event name + URL has no active subscription in PostgreSQL. */
static int drop_stale(struct recon *r, const char *key, size_t klen, const redisReply *field,
                      const redisReply *value)
{
    struct indexval iv;
    if (indexval_decode(value->str, value->len, &iv)) { /* a malformed value is simply stale */
        const char *params[] = {iv.id};
        PGresult *res = recon_sql(
            r, "SELECT 1 FROM subscriptions WHERE id = $1::uuid AND status = 'active'", 1, params);
        if (!res)
            return -1;
        bool active = PQntuples(res) > 0;
        PQclear(res);
        if (active)
            return 0; /* registered after our read: keep it */
    }
    r->n.index_fixed++;
    log_info("index", "removing stale entry %s from %s", field->str, key);
    if (r->cfg.dry_run)
        return 0;
    const char *argv[] = {"EVAL", cas_hdel_lua, "1", key, field->str, value->str};
    size_t lens[] = {4, strlen(cas_hdel_lua), 1, klen, field->len, value->len};
    redisReply *rep = recon_redis(r, 6, argv, lens);
    freeReplyObject(rep);
    return rep ? 0 : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Redis -> PostgreSQL: the entries of one index key against its event's subscriptions of its
 * tenant (decision 44). A key whose tenant part is malformed has no subscription: each entry
 * is then kept only while its id is an active subscription (drop_stale). */
static int check_key(struct recon *r, const char *key, size_t klen)
{
    char tenant[TENANT_ID_MAX + 1], name[KEY_MAX];
    const char *np;
    size_t nlen;
    if (key_event_parse(key, klen, tenant, &np, &nlen) < 0) {
        snprintf(tenant, sizeof tenant, "%s", "?"); /* matches no subscription */
        np = "";
        nlen = 0;
    }
    snprintf(name, sizeof name, "%.*s", (int)nlen, np);
    const char *params[] = {name, tenant};
    PGresult *res = recon_sql(
        r,
        "SELECT url FROM subscriptions WHERE event_names @> ARRAY[$1::text] "
        "AND status = 'active' AND coalesce(tenant, '') = $2",
        2, params);
    if (!res)
        return -1;
    size_t n = (size_t)PQntuples(res);
    const char **urls = xcalloc(n + 1, sizeof *urls);
    for (size_t i = 0; i < n; i++)
        urls[i] = PQgetvalue(res, (int)i, 0);
    qsort(urls, n, sizeof *urls, cmp_str); /* byte order, whatever the database collation */
    const char *argv[] = {"HGETALL", key};
    size_t lens[] = {7, klen};
    redisReply *rep = recon_redis(r, 2, argv, lens);
    int rc = rep ? 0 : -1;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements && rc == 0;
         i += 2) {
        const redisReply *f = rep->element[i], *val = rep->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        const char *probe = f->str;
        if (!bsearch(&probe, urls, n, sizeof *urls, cmp_str))
            rc = drop_stale(r, key, klen, f, val);
    }
    freeReplyObject(rep);
    free(urls);
    PQclear(res);
    return rc;
}

static int scan_index(struct recon *r)
{
    char prefix[KEY_MAX], pattern[2 * KEY_MAX];
    size_t plen = key_event(prefix, NULL, "", 0); /* tenants' keys are under it too */
    size_t k = 0;
    for (size_t i = 0; i < plen; i++) { /* glob-escape the prefix */
        if (strchr("*?[]\\", prefix[i]))
            pattern[k++] = '\\';
        pattern[k++] = prefix[i];
    }
    pattern[k++] = '*';
    pattern[k] = '\0';
    char cursor[32] = "0";
    int rc = 0;
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "500"};
        size_t lens[] = {4, strlen(cursor), 5, k, 5, 3};
        redisReply *rep = recon_redis(r, 6, argv, lens);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            freeReplyObject(rep);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        const redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements && rc == 0; i++)
            rc = check_key(r, keys->element[i]->str, keys->element[i]->len);
        freeReplyObject(rep);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    return rc;
}

/* PostgreSQL -> Redis: one page of active subscriptions' (name or pattern, URL) pairs (all of
 * one tenant's name or less; id, name, URL, filter, tenant: "" for global). */
static int check_page(struct recon *r, PGresult *res, int from, int to)
{
    const char *name = PQgetvalue(res, from, 1), *tenant = PQgetvalue(res, from, 4);
    char key[KEY_MAX];
    int n = to - from;
    struct rargs a = {0};
    rargs_adds(&a, "HMGET");
    rargs_add(&a, key, key_event(key, tenant, name, strlen(name)));
    for (int i = 0; i < n; i++)
        rargs_add(&a, PQgetvalue(res, from + i, 2), (size_t)PQgetlength(res, from + i, 2));
    redisReply *rep = recon_redis(r, a.argc, a.argv, a.lens);
    rargs_free(&a);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || (int)rep->elements != n) {
        freeReplyObject(rep);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const redisReply *e = rep->element[i];
        const char *id = PQgetvalue(res, from + i, 0);
        const char *filter = PQgetisnull(res, from + i, 3) ? NULL : PQgetvalue(res, from + i, 3);
        struct indexval iv;
        if (e->type == REDIS_REPLY_STRING && indexval_decode(e->str, e->len, &iv) &&
            strcmp(iv.id, id) == 0 && strcmp(iv.status, "active") == 0 && same_filter(&iv, filter))
            continue;
        rc = write_entry(r, tenant, name, PQgetvalue(res, from + i, 2), id, filter);
    }
    freeReplyObject(rep);
    return rc;
}

static int fill_missing(struct recon *r)
{
    char batch[24], after_tenant[TENANT_ID_MAX + 1] = "", after_name[160] = "",
                    after_url[4096] = "";
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    int rc = 0;
    for (;;) {
        const char *params[] = {after_name, after_url, batch, after_tenant};
        PGresult *res = recon_sql(
            r,
            "SELECT s.id::text, n.name, s.url, s.filter::text, coalesce(s.tenant, '') "
            "FROM subscriptions s "
            "CROSS JOIN LATERAL unnest(s.event_names) n(name) WHERE s.status = 'active' "
            "AND (coalesce(s.tenant, ''), n.name, s.url) > ($4, $1, $2) "
            "ORDER BY coalesce(s.tenant, ''), n.name, s.url LIMIT $3::int",
            4, params);
        if (!res) {
            rc = -1;
            break;
        }
        int n = PQntuples(res);
        for (int from = 0; from < n && rc == 0;) {
            int to = from + 1;
            while (to < n && strcmp(PQgetvalue(res, to, 1), PQgetvalue(res, from, 1)) == 0 &&
                   strcmp(PQgetvalue(res, to, 4), PQgetvalue(res, from, 4)) == 0)
                to++;
            rc = check_page(r, res, from, to);
            from = to;
        }
        if (n) {
            snprintf(after_tenant, sizeof after_tenant, "%s", PQgetvalue(res, n - 1, 4));
            snprintf(after_name, sizeof after_name, "%s", PQgetvalue(res, n - 1, 1));
            snprintf(after_url, sizeof after_url, "%s", PQgetvalue(res, n - 1, 2));
        }
        PQclear(res);
        if (rc < 0 || n < r->cfg.batch)
            break;
    }
    return rc;
}

int recon_index(struct recon *r)
{
    if (scan_index(r) < 0)
        return -1;
    return fill_missing(r);
}
