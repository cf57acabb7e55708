/* API keys of the management and trigger API: WEBHOOK_API_KEYS (admin keys, compared in
 * constant time) and the keys of the api_keys table (looked up by the SHA-256 of the presented
 * key, a copy of the table kept in memory and reloaded when it changes), giving the principal
 * (roles, tenant) of a presented Authorization header. Used by conn.c (before a request's body
 * is read) and by http.c (every /api/ request); keys.c adds and drops keys it writes. */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

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

static int tkey_cmp(const void *a, const void *b)
{
    return memcmp(((const struct tkey *)a)->sha, ((const struct tkey *)b)->sha,
                  SHA256_DIGEST_LENGTH);
}

void auth_key_put(const unsigned char sha[32], const struct principal *who)
{
    auth_key_drop(who->key_id);
    tkeys = xrealloc(tkeys, (ntkeys + 1) * sizeof *tkeys);
    memcpy(tkeys[ntkeys].sha, sha, SHA256_DIGEST_LENGTH);
    tkeys[ntkeys++].who = *who;
    qsort(tkeys, ntkeys, sizeof *tkeys, tkey_cmp);
}

void auth_key_drop(const char *key_id)
{
    for (size_t i = 0; i < ntkeys; i++) {
        if (strcmp(tkeys[i].who.key_id, key_id) == 0) {
            memmove(&tkeys[i], &tkeys[i + 1], (ntkeys - i - 1) * sizeof *tkeys);
            ntkeys--;
            return;
        }
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

/* Reloading: every AUTH_RELOAD_MS the counts of keys and of revoked keys are read (rows are
 * never deleted, so any insert or revocation changes one of them, whatever the order in which
 * concurrent transactions commit); when they differ from the last load, the whole table of
 * keys not revoked is read again. One query at a time. */
#define AUTH_RELOAD_MS 250
static const char SQL_KEY_COUNTS[] = "SELECT count(*), count(revoked_at) FROM api_keys";
static const char SQL_KEYS[] =
    "SELECT encode(sha256, 'hex'), array_to_string(roles, ','), coalesce(tenant, ''), id "
    "FROM api_keys WHERE revoked_at IS NULL";
static bool reload_busy;
static char loaded_counts[48]; /* "<keys>/<revoked>" of the table last loaded; "" never */
static char seen_counts[48];
static int64_t reload_at;

static void got_keys(void *priv, PGresult *res, const char *err)
{
    (void)priv;
    reload_busy = false;
    if (err) {
        log_warn(NULL, "reloading the API keys: %s (the keys loaded before stay in use)", err);
        return;
    }
    size_t n = (size_t)PQntuples(res);
    struct tkey *t = xcalloc(n ? n : 1, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *hex = PQgetvalue(res, (int)i, 0);
        if (hex_decode(hex, strlen(hex), t[k].sha, sizeof t[k].sha) != SHA256_DIGEST_LENGTH)
            continue;
        const char *roles = PQgetvalue(res, (int)i, 1);
        while (*roles) {
            size_t l = strcspn(roles, ",");
            t[k].who.roles |= auth_roles_parse(roles, l);
            roles += l + (roles[l] == ',');
        }
        snprintf(t[k].who.tenant, sizeof t[k].who.tenant, "%s", PQgetvalue(res, (int)i, 2));
        snprintf(t[k].who.key_id, sizeof t[k].who.key_id, "%s", PQgetvalue(res, (int)i, 3));
        k += t[k].who.roles != 0;
    }
    qsort(t, k, sizeof *t, tkey_cmp);
    free(tkeys);
    tkeys = t;
    ntkeys = k;
    if (strcmp(loaded_counts, seen_counts) != 0)
        log_info(NULL, "API keys loaded: %zu in use", ntkeys);
    memcpy(loaded_counts, seen_counts, sizeof loaded_counts);
}

static void got_counts(void *priv, PGresult *res, const char *err)
{
    struct pg *pg = priv;
    if (err || PQntuples(res) != 1) {
        reload_busy = false;
        return; /* the next tick asks again */
    }
    snprintf(seen_counts, sizeof seen_counts, "%s/%s", PQgetvalue(res, 0, 0),
             PQgetvalue(res, 0, 1));
    if (strcmp(seen_counts, loaded_counts) == 0) {
        reload_busy = false;
        return;
    }
    if (pg_query_prepared(pg, "auth_keys", SQL_KEYS, 0, NULL, NULL, NULL, 0, got_keys, NULL) < 0)
        reload_busy = false;
}

void auth_tick(struct pg *pg, int64_t now_mono_ms)
{
    if (reload_busy || now_mono_ms < reload_at || !pg_up(pg))
        return;
    reload_at = now_mono_ms + AUTH_RELOAD_MS;
    reload_busy = true;
    if (pg_query_prepared(pg, "auth_key_counts", SQL_KEY_COUNTS, 0, NULL, NULL, NULL, 0,
                          got_counts, pg) < 0)
        reload_busy = false;
}

void auth_free(void)
{
    free(tkeys);
    tkeys = NULL;
    ntkeys = 0;
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
