/* webhookctl keys, whoami: API keys with roles (POST, GET /api/v0/keys, DELETE
 * /api/v0/keys/ID) and the roles and tenant of the key in use (GET /api/v0/whoami). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "body.h"
#include "cli.h"
#include "table.h"

static const struct opt create_opts[] = {
    {"role", "ROLE", OPT_REPEAT, "admin, producer or tenant (required; repeat it, or ROLE,ROLE)"},
    {"tenant", "TENANT", 0, "the tenant the key is limited to (needed by the role tenant)"},
    {"name", "TEXT", 0, "a name for people: what the key is for"},
    {NULL, NULL, 0, NULL},
};

static const struct col key_cols[] = {
    {"ID", "id"},
    {"PREFIX", "prefix"},
    {"ROLES", "roles"},
    {"TENANT", "tenant"},
    {"CREATED", "createdAt"},
    {"REVOKED", "revokedAt"},
    {"NAME", "name"},
    {NULL, NULL},
};

static int run_create(struct cli *c, const struct args *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *roles = cJSON_AddArrayToObject(o, "roles");
    int rc = EXIT_OK, i = 0;
    const char *v;
    while ((v = args_next(a, "role", &i))) {
        /* "--role tenant,producer" as well as "--role tenant --role producer" */
        while (*v) {
            size_t n = strcspn(v, ",");
            if (n) {
                char *r = strndup(v, n);
                cJSON_AddItemToArray(roles, cJSON_CreateString(r));
                free(r);
            }
            v += n + (v[n] == ',');
        }
    }
    if (cJSON_GetArraySize(roles) == 0) {
        rc = cli_usage_error("keys create needs --role (admin, producer or tenant)");
        goto out;
    }
    if ((v = args_get(a, "tenant")))
        cJSON_AddStringToObject(o, "tenant", v);
    if ((v = args_get(a, "name")))
        cJSON_AddStringToObject(o, "name", v);
    struct buf body = {0};
    body_print(o, &body);
    struct api_call call = {
        .method = "POST", .path = "/api/v0/keys", .body = body.data, .body_len = body.len};
    rc = api_show(c, &call);
    buf_free(&body);
    if (rc == EXIT_OK)
        fprintf(stderr,
                "%s: the key is shown this once (the broker keeps only its SHA-256): "
                "store it now\n",
                c->prog);
out:
    cJSON_Delete(o);
    return rc;
}

static int run_list(struct cli *c, const struct args *a)
{
    (void)a;
    struct api_call call = {.method = "GET", .path = "/api/v0/keys"};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc != EXIT_OK || !j)
        return rc;
    /* The roles as "producer,tenant" rather than a JSON array: one word per cell. */
    cJSON *rows = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(j, "keys"), true);
    cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        struct buf r = {0};
        const cJSON *role;
        cJSON_ArrayForEach(role, cJSON_GetObjectItemCaseSensitive(row, "roles"))
        {
            if (r.len)
                buf_addc(&r, ',');
            if (cJSON_IsString(role))
                buf_adds(&r, role->valuestring);
        }
        buf_addc(&r, '\0');
        body_set(row, "roles", cJSON_CreateString(r.data));
        buf_free(&r);
    }
    table_print(stdout, rows, key_cols);
    cJSON_Delete(rows);
    cJSON_Delete(j);
    return rc;
}

static int run_revoke(struct cli *c, const struct args *a)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/keys");
    api_seg(&p, a->pos[0]);
    struct api_call call = {.method = "DELETE", .path = p.data};
    int rc = api_show(c, &call);
    buf_free(&p);
    return rc;
}

static int run_whoami(struct cli *c, const struct args *a)
{
    (void)a;
    struct api_call call = {.method = "GET", .path = "/api/v0/whoami"};
    return api_show(c, &call);
}

const struct cmd keys_cmds[] = {
    {"keys", "create", "", 0, 0, create_opts,
     "Make an API key with roles and a tenant (POST /api/v0/keys; admin keys only).",
     "The key (whk_ and 64 hex digits) is printed this once: the broker keeps only its\n"
     "SHA-256. Roles: admin (everything; alone, no tenant), producer (triggers; only its\n"
     "tenant's subscriptions when it has one), tenant (its tenant's subscriptions and their\n"
     "deliveries; needs --tenant).\n\n"
     "  webhookctl keys create --role tenant --role producer --tenant acme --name \"acme app\"",
     run_create, false},
    {"keys", "list", "", 0, 0, NULL,
     "List the API keys, oldest first, revoked ones too (never the keys themselves).", NULL,
     run_list, false},
    {"keys", "revoke", "ID", 1, 1, NULL,
     "Revoke a key: refused at once by this broker, within a second by the others.",
     "Revoking a revoked key changes nothing (its first revocation time is kept).", run_revoke,
     false},
    {NULL, "whoami", "", 0, 0, NULL,
     "Show the roles and tenant of the key in use (GET /api/v0/whoami).",
     "keyId is - for a key of the broker's WEBHOOK_API_KEYS (an admin key).", run_whoami, false},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, false},
};
