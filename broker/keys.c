/* API keys made through the API (issue 13, docs/decisions.md 45): POST /api/v0/keys makes one
 * (the key is in that answer only; PostgreSQL keeps its SHA-256), GET lists them, DELETE
 * revokes one (at once on this broker, within a tick on the others: auth.c reloads), and
 * GET /api/v0/whoami tells any key its own roles and tenant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "api.h"
#include "codec.h"
#include "ids.h"
#include "log.h"
#include "valid.h"

#define KEY_PREFIX "whk_"
#define KEY_RANDOM_BYTES 32
#define KEY_SHOWN 12   /* the characters kept in clear for recognising a key: "whk_" + 8 */
#define KEY_NAME_MAX 200
#define KEYS_LIST_MAX "1000" /* the listing's cap: keys are for services, not per user */

/* The columns every answer shows, in this order. */
#define KEY_COLS                                                                              \
    "id, prefix, name, array_to_string(roles, ','), tenant, "                                 \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "          \
    "to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Appends one key object (the columns of KEY_COLS from row i), the key itself when not NULL. */
static void key_json(struct buf *b, PGresult *res, int i, const char *key)
{
    buf_printf(b, "{\"id\":\"%s\"", PQgetvalue(res, i, 0));
    if (key) {
        buf_adds(b, ",\"key\":");
        json_escape(b, key, strlen(key));
    }
    http_col_str(b, "prefix", res, i, 1);
    http_col_str(b, "name", res, i, 2);
    buf_adds(b, ",\"roles\":");
    auth_roles_json(b, auth_roles_list(PQgetvalue(res, i, 3)));
    http_col_str(b, "tenant", res, i, 4);
    http_col_str(b, "createdAt", res, i, 5);
    http_col_str(b, "revokedAt", res, i, 6);
    buf_addc(b, '}');
}

struct made {
    struct req *r;
    char key[sizeof KEY_PREFIX + 2 * KEY_RANDOM_BYTES];
    unsigned char sha[SHA256_DIGEST_LENGTH];
    struct principal who;
};

static void made(void *priv, PGresult *res, const char *err)
{
    struct made *m = priv;
    struct req *r = m->r;
    if (err) {
        http_db_error(r, res, err);
        goto out;
    }
    auth_key_put(m->sha, &m->who);
    /* The key itself is never logged: its id and shown prefix are enough to find it. */
    log_info(r->id, "API key %s made (%s...)", m->who.key_id, PQgetvalue(res, 0, 1));
    struct buf b = {0};
    key_json(&b, res, 0, m->key);
    http_reply(r, 201, &b);
out:
    OPENSSL_cleanse(m->key, sizeof m->key);
    free(m);
}

void keys_create(struct req *r)
{
    cJSON *doc = http_body_object(r);
    if (!doc)
        return;
    unsigned roles = 0;
    const cJSON *rl = NULL, *tn = NULL, *nm = NULL;
    for (const cJSON *it = doc->child; it; it = it->next) {
        if (strcmp(it->string, "roles") == 0)
            rl = it;
        else if (strcmp(it->string, "tenant") == 0)
            tn = it;
        else if (strcmp(it->string, "name") == 0)
            nm = it;
        else {
            http_error(r, 400, "invalid_field",
                       "unknown field \"%.64s\" (expected roles, tenant, name)", it->string);
            goto out_free;
        }
    }
    if (!rl) {
        http_error(r, 400, "missing_field",
                   "roles is required: a list of one or more of \"admin\", \"producer\", "
                   "\"tenant\"");
        goto out_free;
    }
    if (!cJSON_IsArray(rl) || cJSON_GetArraySize(rl) < 1) {
        http_error(r, 400, "invalid_field",
                   "roles must be a non-empty list of \"admin\", \"producer\", \"tenant\"");
        goto out_free;
    }
    for (const cJSON *e = rl->child; e; e = e->next) {
        unsigned bit = cJSON_IsString(e) ? auth_roles_parse(e->valuestring,
                                                             strlen(e->valuestring))
                                         : 0;
        if (!bit) {
            http_error(r, 400, "invalid_field",
                       "roles: each must be \"admin\", \"producer\" or \"tenant\"");
            goto out_free;
        }
        if (roles & bit) {
            http_error(r, 400, "invalid_field", "roles: \"%s\" is listed twice", e->valuestring);
            goto out_free;
        }
        roles |= bit;
    }
    const char *tenant = NULL;
    if (tn && !cJSON_IsNull(tn)) {
        if (!cJSON_IsString(tn) || !valid_tenant(tn->valuestring, strlen(tn->valuestring))) {
            http_error(r, 400, "invalid_field",
                       "tenant must be 1 to %d characters of A-Z a-z 0-9 _ -", TENANT_MAX);
            goto out_free;
        }
        tenant = tn->valuestring;
    }
    if ((roles & ROLE_ADMIN) && (roles != ROLE_ADMIN || tenant)) {
        http_error(r, 400, "invalid_field",
                   "an admin key can do everything: give it the role \"admin\" alone and no "
                   "tenant");
        goto out_free;
    }
    if ((roles & ROLE_TENANT) && !tenant) {
        http_error(r, 400, "missing_field", "a key with the role \"tenant\" needs a tenant");
        goto out_free;
    }
    const char *name = NULL;
    if (nm && !cJSON_IsNull(nm)) {
        /* Counted in characters, as the OpenAPI document's maxLength is (the body is valid
         * UTF-8: http_body_object checked it); a UTF-8 continuation byte starts none. */
        size_t n = cJSON_IsString(nm) ? strlen(nm->valuestring) : 0, chars = 0;
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            unsigned char c = (unsigned char)nm->valuestring[i];
            ok = c >= 0x20 && c != 0x7f;
            chars += (c & 0xc0) != 0x80;
        }
        ok = ok && chars >= 1 && chars <= KEY_NAME_MAX;
        if (!ok) {
            http_error(r, 400, "invalid_field",
                       "name must be a string of 1 to %d characters without control characters",
                       KEY_NAME_MAX);
            goto out_free;
        }
        name = nm->valuestring;
    }

    struct made *m = xcalloc(1, sizeof *m);
    m->r = r;
    unsigned char rnd[KEY_RANDOM_BYTES];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        free(m);
        http_error(r, 500, "internal", "the random number generator failed");
        goto out_free;
    }
    memcpy(m->key, KEY_PREFIX, sizeof KEY_PREFIX - 1);
    hex_encode(rnd, sizeof rnd, m->key + sizeof KEY_PREFIX - 1);
    OPENSSL_cleanse(rnd, sizeof rnd);
    SHA256((const unsigned char *)m->key, strlen(m->key), m->sha);
    id_new(m->who.key_id);
    m->who.roles = roles;
    snprintf(m->who.tenant, sizeof m->who.tenant, "%s", tenant ? tenant : "");

    char hex[2 * SHA256_DIGEST_LENGTH + 1], shown[KEY_SHOWN + 1];
    hex_encode(m->sha, sizeof m->sha, hex);
    snprintf(shown, sizeof shown, "%s", m->key);
    struct buf arr = {0};
    pgarr_begin(&arr);
    for (unsigned bit = ROLE_ADMIN; bit <= ROLE_TENANT; bit <<= 1)
        if (roles & bit)
            pgarr_add(&arr, auth_role_name(bit), strlen(auth_role_name(bit)));
    pgarr_end(&arr);
    static const char sql[] = "INSERT INTO api_keys (id, sha256, prefix, name, roles, tenant) "
                              "VALUES ($1, decode($2, 'hex'), $3, $4, $5::text[], $6) "
                              "RETURNING " KEY_COLS;
    const char *params[] = {m->who.key_id, hex, shown, name, arr.data, tenant};
    if (pg_query(r->b->pg_api, sql, 6, params, NULL, NULL, 0, made, m) < 0) {
        OPENSSL_cleanse(m->key, sizeof m->key);
        free(m);
        http_db_error(r, NULL, "not connected");
    }
    buf_free(&arr);
out_free:
    cJSON_Delete(doc);
}

static void listed(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    struct buf b = {0};
    buf_adds(&b, "{\"keys\":[");
    for (int i = 0; i < PQntuples(res); i++) {
        if (i)
            buf_addc(&b, ',');
        key_json(&b, res, i, NULL);
    }
    buf_adds(&b, "]}");
    http_reply(r, 200, &b);
}

void keys_list(struct req *r)
{
    /* By id: ids are time-ordered (UUID v7), and the primary key's index gives that order
     * (ORDER BY created_at needs a sort of a sequential scan, which the daemons' set-up,
     * enable_seqscan = off, prices so high that PostgreSQL JIT-compiles it: a second). */
    static const char sql[] = "SELECT " KEY_COLS " FROM api_keys ORDER BY id LIMIT " KEYS_LIST_MAX;
    if (pg_query(r->b->pg_api, sql, 0, NULL, NULL, NULL, 0, listed, r) < 0)
        http_db_error(r, NULL, "not connected");
}

static void revoked(void *priv, PGresult *res, const char *err)
{
    struct req *r = priv;
    if (err) {
        http_db_error(r, res, err);
        return;
    }
    if (PQntuples(res) != 1) {
        http_error(r, 404, "not_found", "no API key %s", r->seg[0]);
        return;
    }
    auth_key_drop(PQgetvalue(res, 0, 0));
    log_info(r->id, "API key %s revoked", PQgetvalue(res, 0, 0));
    struct buf b = {0};
    key_json(&b, res, 0, NULL);
    http_reply(r, 200, &b);
}

void keys_revoke(struct req *r)
{
    if (strncmp(r->seg[0], KEY_PREFIX, sizeof KEY_PREFIX - 1) == 0) {
        /* A key where its id belongs: not repeated in the answer (nor in the log line of
         * http_error). */
        http_error(r, 404, "not_found",
                   "that is an API key, not a key id: revoke by id (GET /api/v0/keys lists them)");
        return;
    }
    if (!id_valid(r->seg[0], strlen(r->seg[0]))) {
        http_error(r, 404, "not_found", "no API key %.64s (ids are UUIDs)", r->seg[0]);
        return;
    }
    char id[ID_LEN + 1];
    id_normalize(r->seg[0], id);
    /* Revoking twice answers the key as it was revoked the first time. */
    static const char sql[] = "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                              "WHERE id = $1 RETURNING " KEY_COLS;
    const char *params[] = {id};
    if (pg_query(r->b->pg_api, sql, 1, params, NULL, NULL, 0, revoked, r) < 0)
        http_db_error(r, NULL, "not connected");
}

void keys_whoami(struct req *r)
{
    struct buf b = {0};
    buf_adds(&b, "{\"roles\":");
    auth_roles_json(&b, r->who.roles);
    buf_adds(&b, ",\"tenant\":");
    if (r->who.tenant[0])
        json_escape(&b, r->who.tenant, strlen(r->who.tenant));
    else
        buf_adds(&b, "null");
    buf_adds(&b, ",\"keyId\":");
    if (r->who.key_id[0])
        buf_printf(&b, "\"%s\"", r->who.key_id);
    else
        buf_adds(&b, "null");
    buf_addc(&b, '}');
    http_reply(r, 200, &b);
}
