/* API keys of the management and trigger API: WEBHOOK_API_KEYS (admin keys, compared in
 * constant time) and the keys of the api_keys table (looked up by the SHA-256 of the presented
 * key, a copy of the table kept in memory and reloaded over a connection of its own when it
 * changes), giving the principal (roles, tenant) of a presented Authorization header. Used by
 * conn.c (before a request's body is read) and by http.c (every /api/ request); keys.c adds
 * and drops keys it writes (docs/decisions.md 45). */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "clock.h"
#include "codec.h"
#include "log.h"
#include "mem.h"

#define API_KEYS_MAX 32
#define API_KEY_MIN 16
#define API_KEY_MAX 256

/* Each accepted key zero-padded to one byte more than the longest key, and its length: a
 * presented key is padded the same way and compared with every key over the whole width, so
 * the time taken does not depend on its content or on which key (if any) it matches. */
#define KEY_WIDTH (API_KEY_MAX + 1)
static unsigned char keys[API_KEYS_MAX][KEY_WIDTH];
static size_t key_len[API_KEYS_MAX];
static int nkeys;

int auth_load(const char *list, char *err, size_t errlen)
{
    const char *p = list;
    nkeys = 0;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0)
            break;
        if (n < API_KEY_MIN || n > API_KEY_MAX) {
            snprintf(err, errlen, "WEBHOOK_API_KEYS: each key must be %d to %d characters",
                     API_KEY_MIN, API_KEY_MAX);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i] <= ' ' || p[i] > '~') {
                snprintf(err, errlen, "WEBHOOK_API_KEYS: keys are printable ASCII without spaces");
                return -1;
            }
        }
        if (nkeys == API_KEYS_MAX) {
            snprintf(err, errlen, "WEBHOOK_API_KEYS: at most %d keys", API_KEYS_MAX);
            return -1;
        }
        memset(keys[nkeys], 0, KEY_WIDTH);
        memcpy(keys[nkeys], p, n);
        key_len[nkeys++] = n;
        p += n;
        p += strcspn(p, ",");
    }
    if (nkeys == 0) {
        snprintf(err, errlen,
                 "WEBHOOK_API_KEYS is empty: set at least one API key for the management API "
                 "(make run creates a development key in .run/api-key)");
        return -1;
    }
    return 0;
}

/* The api_keys table's keys that are not revoked, sorted by SHA-256 (bsearch). Replaced as a
 * whole by each reload; keys.c adds and drops single entries so that its own broker applies a
 * change at once (the others within a tick, AUTH_RELOAD_MS). */
struct tkey {
    unsigned char sha[SHA256_DIGEST_LENGTH];
    struct principal who;
};
static struct tkey *tkeys;
static size_t ntkeys;

/* The changes keys.c made while a reload was under way, replayed over its result: the reload
 * runs on its own connection, so its snapshot may predate a key this broker has just made or
 * revoked, and installing it as it came would undo the change until the next reload (a
 * revoked key accepted again for a tick). Emptied whenever no reload is under way. */
struct journal_op {
    bool put;
    unsigned char sha[SHA256_DIGEST_LENGTH];
    struct principal who;
};
static struct journal_op *journal;
static size_t njournal;
static bool reload_busy;

static int tkey_cmp(const void *a, const void *b)
{
    return memcmp(((const struct tkey *)a)->sha, ((const struct tkey *)b)->sha,
                  SHA256_DIGEST_LENGTH);
}

static void table_drop(const char *key_id)
{
    for (size_t i = 0; i < ntkeys; i++) {
        if (strcmp(tkeys[i].who.key_id, key_id) == 0) {
            memmove(&tkeys[i], &tkeys[i + 1], (ntkeys - i - 1) * sizeof *tkeys);
            ntkeys--;
            return;
        }
    }
}

static void table_put(const unsigned char sha[SHA256_DIGEST_LENGTH], const struct principal *who)
{
    table_drop(who->key_id);
    tkeys = xrealloc(tkeys, (ntkeys + 1) * sizeof *tkeys);
    memcpy(tkeys[ntkeys].sha, sha, SHA256_DIGEST_LENGTH);
    tkeys[ntkeys++].who = *who;
    qsort(tkeys, ntkeys, sizeof *tkeys, tkey_cmp);
}

static void journal_add(bool put, const unsigned char *sha, const struct principal *who)
{
    if (!reload_busy)
        return;
    journal = xrealloc(journal, (njournal + 1) * sizeof *journal);
    struct journal_op *op = &journal[njournal++];
    memset(op, 0, sizeof *op);
    op->put = put;
    if (sha)
        memcpy(op->sha, sha, SHA256_DIGEST_LENGTH);
    op->who = *who;
}

void auth_key_put(const unsigned char sha[32], const struct principal *who)
{
    table_put(sha, who);
    journal_add(true, sha, who);
}

void auth_key_drop(const char *key_id)
{
    table_drop(key_id);
    struct principal who = {0};
    snprintf(who.key_id, sizeof who.key_id, "%s", key_id);
    journal_add(false, NULL, &who);
}

static struct pg *auth_pg; /* the reload's own connection (auth_start) */
static int64_t reload_at;  /* the next reload, on the monotonic clock */
static bool reload_again;  /* a tick came while a reload was under way */

/* A reload ended (installed or failed): the journal is no longer needed; a tick missed
 * meanwhile is made up for at once (auth_tick, defined below). */
static void reload_done(void)
{
    reload_busy = false;
    njournal = 0;
    if (reload_again && auth_pg) {
        reload_again = false;
        reload_at = 0;
        auth_tick(clock_mono_ms());
    }
}

unsigned auth_roles_parse(const char *s, size_t n)
{
    if (n == 5 && memcmp(s, "admin", 5) == 0)
        return ROLE_ADMIN;
    if (n == 8 && memcmp(s, "producer", 8) == 0)
        return ROLE_PRODUCER;
    if (n == 6 && memcmp(s, "tenant", 6) == 0)
        return ROLE_TENANT;
    return 0;
}

unsigned auth_roles_list(const char *csv)
{
    unsigned roles = 0;
    while (*csv) {
        size_t l = strcspn(csv, ",");
        roles |= auth_roles_parse(csv, l);
        csv += l + (csv[l] == ',');
    }
    return roles;
}

const char *auth_role_name(unsigned bit)
{
    return bit == ROLE_ADMIN ? "admin" : bit == ROLE_PRODUCER ? "producer" : "tenant";
}

void auth_roles_json(struct buf *b, unsigned roles)
{
    buf_addc(b, '[');
    const char *sep = "";
    for (unsigned bit = ROLE_ADMIN; bit <= ROLE_TENANT; bit <<= 1) {
        if (roles & bit) {
            buf_printf(b, "%s\"%s\"", sep, auth_role_name(bit));
            sep = ",";
        }
    }
    buf_addc(b, ']');
}

/* Reloading: every AUTH_RELOAD_MS one statement reads the counts of keys and of revoked keys
 * (rows are never deleted, so any insert or revocation changes one of them, whatever the order
 * in which concurrent transactions commit) and, only when they differ from the counts of the
 * last load ($1), every key not revoked, in the same snapshot: one round trip, and the counts
 * kept always describe the keys installed. When nothing changed the answer is one row of
 * counts and NULLs. One statement at a time, on a connection of the reload's own, so that a
 * slow management query on pg-api cannot hold a revocation back. */
#define AUTH_RELOAD_MS 250
static const char SQL_RELOAD[] =
    "WITH c AS (SELECT count(*)::text || '/' || count(revoked_at)::text AS counts "
    "FROM api_keys) "
    "SELECT c.counts, encode(k.sha256, 'hex'), array_to_string(k.roles, ','), "
    "coalesce(k.tenant, ''), k.id "
    "FROM c LEFT JOIN api_keys k ON k.revoked_at IS NULL AND c.counts <> $1";
static bool loaded_once;
static char loaded_counts[48]; /* "<keys>/<revoked>" of the table last loaded; "" never */

static void got_reload(void *priv, PGresult *res, const char *err)
{
    (void)priv;
    if (err || PQntuples(res) < 1) {
        if (auth_pg) /* not auth_free's pg_free */
            log_warn(NULL, "reloading the API keys: %s (the keys loaded before stay in use)",
                     err ? err : "no answer");
        reload_done();
        return;
    }
    const char *counts = PQgetvalue(res, 0, 0);
    if (strcmp(counts, loaded_counts) == 0) {
        reload_done(); /* unchanged: nothing was read but the counts */
        return;
    }
    size_t n = (size_t)PQntuples(res);
    struct tkey *t = xcalloc(n, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (PQgetisnull(res, (int)i, 1))
            continue; /* no key at all: the one row of counts */
        const char *hex = PQgetvalue(res, (int)i, 1);
        if (hex_decode(hex, strlen(hex), t[k].sha, sizeof t[k].sha) != SHA256_DIGEST_LENGTH)
            continue;
        memset(&t[k].who, 0, sizeof t[k].who);
        t[k].who.roles = auth_roles_list(PQgetvalue(res, (int)i, 2));
        snprintf(t[k].who.tenant, sizeof t[k].who.tenant, "%s", PQgetvalue(res, (int)i, 3));
        snprintf(t[k].who.key_id, sizeof t[k].who.key_id, "%s", PQgetvalue(res, (int)i, 4));
        k += t[k].who.roles != 0;
    }
    qsort(t, k, sizeof *t, tkey_cmp);
    free(tkeys);
    tkeys = t;
    ntkeys = k;
    /* What this broker made or revoked while the statement ran may postdate its snapshot. */
    for (size_t i = 0; i < njournal; i++) {
        if (journal[i].put)
            table_put(journal[i].sha, &journal[i].who);
        else
            table_drop(journal[i].who.key_id);
    }
    snprintf(loaded_counts, sizeof loaded_counts, "%s", counts);
    loaded_once = true;
    log_info(NULL, "API keys loaded: %zu in use", ntkeys);
    reload_done(); /* last: it may send the next statement, with loaded_counts */
}

void auth_tick(int64_t now_mono_ms)
{
    if (!auth_pg || now_mono_ms < reload_at || !pg_up(auth_pg))
        return;
    if (reload_busy) {
        /* The statement under way may have taken its snapshot before a change now committed:
         * ask again as soon as it answers rather than a whole period later. */
        reload_again = true;
        return;
    }
    reload_at = now_mono_ms + AUTH_RELOAD_MS;
    reload_again = false;
    reload_busy = true;
    const char *params[] = {loaded_counts};
    if (pg_query_prepared(auth_pg, "auth_reload", SQL_RELOAD, 1, params, NULL, NULL, 0, got_reload,
                          NULL) < 0)
        reload_done();
}

static void on_auth_pg_state(struct pg *p, bool up, void *arg)
{
    (void)p, (void)arg;
    if (up)
        auth_tick(clock_mono_ms()); /* the first load, or the changes missed while down */
}

void auth_start(struct event_base *base, const char *conninfo, const char *setup_sql)
{
    /* The daemons' set-up ends with enable_seqscan = off, which prices the count's sequential
     * scan at 1e10: over jit_above_cost, so PostgreSQL JIT-compiled the statement every time
     * (measured: 0.7 to 2 s of CPU per reload, 4 ms without). This connection runs only the
     * reload: sequential scans as usual, no JIT. */
    char *setup = xasprintf("%s SET enable_seqscan = on; SET jit = off;", setup_sql);
    auth_pg = pg_new(base, conninfo, "pg-auth", setup, on_auth_pg_state, NULL);
    free(setup);
}

bool auth_ready(void)
{
    return loaded_once;
}

void auth_free(void)
{
    struct pg *p = auth_pg;
    auth_pg = NULL;
    if (p)
        pg_free(p); /* a reload's callbacks run now, with an error */
    free(tkeys);
    tkeys = NULL;
    ntkeys = 0;
    free(journal);
    journal = NULL;
    njournal = 0;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

bool auth_check(const char *value, size_t n, struct principal *who)
{
    if (who)
        memset(who, 0, sizeof *who);
    while (n > 0 && blank(value[0]))
        value++, n--;
    while (n > 0 && blank(value[n - 1]))
        n--;
    if (n < 7 || strncasecmp(value, "Bearer ", 7) != 0)
        return false;
    const char *key = value + 7;
    n -= 7;
    while (n > 0 && *key == ' ')
        key++, n--;
    if (n > KEY_WIDTH)
        n = KEY_WIDTH; /* too long for any key: its first KEY_WIDTH bytes cannot match */
    unsigned char given[KEY_WIDTH] = {0};
    memcpy(given, key, n);
    /* Every key is compared, whether or not an earlier one matched. */
    int ok = 0;
    for (int i = 0; i < nkeys; i++)
        ok |= (CRYPTO_memcmp(given, keys[i], KEY_WIDTH) == 0) & (n == key_len[i]);
    if (ok) {
        if (who)
            who->roles = ROLE_ADMIN;
        return true;
    }
    if (ntkeys == 0 || n >= KEY_WIDTH)
        return false;
    struct tkey want;
    SHA256(given, n, want.sha);
    const struct tkey *t = bsearch(&want, tkeys, ntkeys, sizeof *tkeys, tkey_cmp);
    if (!t)
        return false;
    if (who)
        *who = t->who;
    return true;
}
