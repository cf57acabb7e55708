/* Reconciling the Redis event index (wh:event:<name>) with the active subscriptions in
 * PostgreSQL: missing or outdated entries are written, stale ones removed only when their
 * subscription id is confirmed inactive and the entry is unchanged (compare-and-delete). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"
#include "mem.h"
#include "recon.h"

struct entry {
    const char *name, *url, *id;
    bool seen;
};

static const char cas_hdel_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
    "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->url, y->url);
}

static void index_value(struct buf *b, const char *id)
{
    buf_reset(b);
    buf_printf(b, "{\"id\":\"%s\",\"status\":\"active\"}", id);
}

static int write_entry(struct recon *r, const char *key, size_t klen, const struct entry *e,
                       struct buf *v)
{
    r->n.index_fixed++;
    log_info("index", "adding %s -> %s to the event index", e->name, e->url);
    if (r->cfg.dry_run)
        return 0;
    index_value(v, e->id);
    const char *argv[] = {"HSET", key, e->url, v->data};
    size_t lens[] = {4, klen, strlen(e->url), v->len};
    redisReply *rep = recon_redis(r, 4, argv, lens);
    freeReplyObject(rep);
    return rep ? 0 : -1;
}

/* A field whose subscription PostgreSQL does not list as active under this name and URL. */
static int drop_stale(struct recon *r, const char *key, size_t klen, const redisReply *field,
                      const redisReply *value)
{
    const char *p = strstr(value->str, "\"id\":\"");
    char id[37] = "";
    if (p && strlen(p + 6) >= 36)
        memcpy(id, p + 6, 36);
    if (id[0]) {
        const char *params[] = {id};
        PGresult *res = recon_sql(
            r, "SELECT 1 FROM subscriptions WHERE id = $1::uuid AND status = 'active'", 1, params);
        if (!res)
            return -1;
        bool active = PQntuples(res) > 0;
        PQclear(res);
        if (active)
            return 0; /* registered after our snapshot: keep it */
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

static int check_key(struct recon *r, const char *key, size_t klen, size_t prefix_len,
                     struct entry *entries, size_t n, struct buf *v)
{
    const char *name = key + prefix_len;
    const char *argv[] = {"HGETALL", key};
    size_t lens[] = {7, klen};
    redisReply *rep = recon_redis(r, 2, argv, lens);
    if (!rep)
        return -1;
    int rc = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements && rc == 0; i += 2) {
        const redisReply *f = rep->element[i], *val = rep->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        struct entry probe = {.name = name, .url = f->str};
        struct entry *e = bsearch(&probe, entries, n, sizeof *entries, cmp_entry);
        if (!e) {
            rc = drop_stale(r, key, klen, f, val);
            continue;
        }
        e->seen = true;
        if (!strstr(val->str, e->id))
            rc = write_entry(r, key, klen, e, v);
    }
    freeReplyObject(rep);
    return rc;
}

int recon_index(struct recon *r)
{
    PGresult *res = recon_sql(
        r, "SELECT id::text, event_name, url FROM subscriptions WHERE status = 'active'", 0, NULL);
    if (!res)
        return -1;
    size_t n = (size_t)PQntuples(res);
    struct entry *entries = xcalloc(n + 1, sizeof *entries);
    for (size_t i = 0; i < n; i++) {
        entries[i].id = PQgetvalue(res, (int)i, 0);
        entries[i].name = PQgetvalue(res, (int)i, 1);
        entries[i].url = PQgetvalue(res, (int)i, 2);
    }
    qsort(entries, n, sizeof *entries, cmp_entry);

    char prefix[KEY_MAX], pattern[2 * KEY_MAX];
    size_t plen = key_event(prefix, "", 0);
    size_t k = 0;
    for (size_t i = 0; i < plen; i++) { /* glob-escape the prefix */
        if (strchr("*?[]\\", prefix[i]))
            pattern[k++] = '\\';
        pattern[k++] = prefix[i];
    }
    pattern[k++] = '*';
    pattern[k] = '\0';

    struct buf v = {0};
    int rc = 0;
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "500"};
        size_t lens[] = {4, strlen(cursor), 5, k, 5, 3};
        redisReply *rep = recon_redis(r, 6, argv, lens);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            freeReplyObject(rep);
            rc = -1;
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        const redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements && rc == 0; i++)
            rc = check_key(r, keys->element[i]->str, keys->element[i]->len, plen, entries, n, &v);
        freeReplyObject(rep);
    } while (rc == 0 && strcmp(cursor, "0") != 0);

    for (size_t i = 0; i < n && rc == 0; i++) {
        if (entries[i].seen)
            continue;
        char key[KEY_MAX];
        size_t klen = key_event(key, entries[i].name, strlen(entries[i].name));
        rc = write_entry(r, key, klen, &entries[i], &v);
    }
    buf_free(&v);
    free(entries);
    PQclear(res);
    return rc;
}
