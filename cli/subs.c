/* webhookctl subs: subscriptions (POST, GET, PATCH, DELETE /api/v0/webhooks...,
 * rotate-secret): create, list, get, update, pause, resume, rotate-secret, delete. */
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "body.h"
#include "cli.h"
#include "table.h"

#define OPT_DATA                                                                                   \
    {                                                                                              \
        "data", "JSON", 0, "the request body: JSON text, @FILE or - (stdin); flags win"            \
    }
#define OPTS_SETTINGS                                                                              \
    {"url", "URL", 0, "webhookUrl: where deliveries go"},                                          \
        {"header", "NAME=VALUE", OPT_REPEAT, "a custom header sent with every delivery"},          \
        {"rate-limit", "N/s|N/Ss|none", 0,                                                         \
         "rateLimit: N a second, or N per S seconds (100/60s), none: no limit"},                   \
        {"retry-schedule", "S1,S2,...", 0, "retryPolicy: the delays before each retry, seconds"},  \
        {"timeout-seconds", "N", 0, "timeoutSeconds: the whole-attempt timeout, 1..30"},           \
        {"description", "TEXT", 0, "description: free text for people"},                           \
        {"payload", "raw|envelope", 0, "payload: the body delivered (raw or the envelope)"},       \
        {"payload-fields", "JSON", 0, "payloadFields: constant fields merged into each body"},     \
        {"batch", "N/Ss|none", 0,                                                                  \
         "batching: up to N jobs per request, sent at the latest S seconds after the first"},     \
    {                                                                                              \
        "filter", "JSON", 0, "filter: the payload filter (docs/api.md \"Payload filters\")"        \
    }

#define OPT_EVENTS(what)                                                                           \
    {                                                                                              \
        "event", "NAME", OPT_REPEAT,                                                               \
            "eventNames: an event name, a pattern (order.* or *); repeat it or separate with "     \
            "commas for several" what                                                              \
    }

static const struct opt create_opts[] = {
    OPT_EVENTS(" (required)"),
    OPTS_SETTINGS,
    {"secret", "whsec_...", 0, "secret: the signing secret (generated when left out)"},
    {"verify", NULL, 0, "verify: the endpoint must echo a signed challenge first"},
    {"tenant", "ID", 0, "tenant: the tenant it belongs to (fixed; default: global)"},
    OPT_DATA,
    {NULL, NULL, 0, NULL},
};
static const struct opt update_opts[] = {
    OPT_EVENTS(" (replaces them)"), OPTS_SETTINGS, OPT_DATA, {NULL, NULL, 0, NULL}};
static const struct opt list_opts[] = {
    {"event", "NAME", 0, "only this event's subscriptions"},
    {"tenant", "ID", 0, "only this tenant's subscriptions (\"\": the global ones)"},
    {"page-size", "N", 0, "subscriptions per page, 1..500 (default 50)"},
    {"offset", "N", 0, "skip this many (default 0)"},
    {"all", NULL, 0, "every page (one table; with --json one document)"},
    {NULL, NULL, 0, NULL},
};
static const struct opt rotate_opts[] = {
    {"grace", "SECONDS", 0,
     "gracePeriodSeconds: the old secret keeps signing this long "
     "(0..604800, default 86400)"},
    {"secret", "whsec_...", 0, "the new secret (generated when left out)"},
    {NULL, NULL, 0, NULL},
};

static const struct col list_cols[] = {
    {"ID", "id"},
    {"EVENT", "eventName"},
    {"STATUS", "status"},
    {"TENANT", "tenant"},
    {"URL", "webhookUrl"},
    {"DESCRIPTION", "description"},
    {"CREATED", "createdAt"},
    {NULL, NULL},
};

/* Path /api/v0/webhooks/<event>/<id>[/<suffix>]; caller frees. */
static char *sub_path(const char *event, const char *id, const char *suffix)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/webhooks");
    api_seg(&p, event);
    api_seg(&p, id);
    if (suffix) {
        buf_addc(&p, '/');
        buf_adds(&p, suffix);
    }
    return buf_steal(&p, NULL);
}

/* "N/<per>" with N > 0: N, and per pointing after the slash; false otherwise. */
static bool count_per(const char *s, long *n, const char **per)
{
    char *end;
    *n = strtol(s, &end, 10);
    if (end == s || *end != '/' || *n <= 0)
        return false;
    *per = end + 1;
    return true;
}

/* Seconds from "60" or "60s" (more than 0); -1 otherwise. */
static long seconds_of(const char *s)
{
    char *end;
    long secs = strtol(s, &end, 10);
    if (end == s || secs <= 0 || (*end && strcmp(end, "s") != 0))
        return -1;
    return secs;
}

static bool is_none(const char *s)
{
    return strcmp(s, "none") == 0 || strcmp(s, "null") == 0;
}

/* rateLimit from "10/s", "100/60s", "100/60", "5/m", "5/h" or "none". */
static cJSON *rate_limit(const char *s)
{
    if (is_none(s))
        return cJSON_CreateNull();
    long n, secs;
    const char *per;
    if (!count_per(s, &n, &per))
        return NULL;
    if (strcmp(per, "s") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "perSecond", (double)n);
        return o;
    } else if (strcmp(per, "m") == 0 || strcmp(per, "min") == 0) {
        secs = 60;
    } else if (strcmp(per, "h") == 0) {
        secs = 3600;
    } else if ((secs = seconds_of(per)) < 0) {
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "max", (double)n);
    cJSON_AddNumberToObject(o, "periodSeconds", (double)secs);
    return o;
}

/* batching from "100/5s" or "100/5" (maxSize/maxIntervalSeconds) or "none"; the broker checks
 * the ranges. */
static cJSON *batching(const char *s)
{
    if (is_none(s))
        return cJSON_CreateNull();
    long n, secs;
    const char *per;
    if (!count_per(s, &n, &per) || (secs = seconds_of(per)) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "maxSize", (double)n);
    cJSON_AddNumberToObject(o, "maxIntervalSeconds", (double)secs);
    return o;
}

static cJSON *retry_schedule(const char *s)
{
    if (strcmp(s, "none") == 0 || strcmp(s, "null") == 0 || strcmp(s, "default") == 0)
        return cJSON_CreateNull();
    cJSON *arr = cJSON_CreateArray();
    while (*s) {
        char *end;
        double d = strtod(s, &end);
        if (end == s || (*end && *end != ',')) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(d));
        s = *end ? end + 1 : end;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "schedule", arr);
    return o;
}

static const char *const body_flags[] = {
    "event",           "url",         "header",  "rate-limit",     "retry-schedule",
    "timeout-seconds", "description", "payload", "payload-fields", "filter",
    "secret",          "verify",      "batch",   NULL};

/* The body of create / update: --data as sent when no other flag is given; otherwise --data
 * (or {}) with the flags' fields set over it. 0, or EXIT_USAGE with the reason printed. */
static int sub_body(const struct args *a, bool create, struct buf *out)
{
    char err[256];
    const char *data = args_get(a, "data");
    bool flags = false;
    for (const char *const *f = body_flags; *f; f++)
        flags |= args_has(a, *f);
    if (data && !flags) {
        if (body_read(data, out, err, sizeof err) < 0)
            return cli_usage_error("%s", err);
        return EXIT_OK;
    }
    cJSON *o = data ? body_object(data, err, sizeof err) : cJSON_CreateObject();
    if (!o)
        return cli_usage_error("%s", err);
    int rc = EXIT_OK;
    const char *v;
    if (args_has(a, "event")) { /* eventNames: every --event, split at commas */
        cJSON *names = cJSON_CreateArray();
        int i = 0;
        while ((v = args_next(a, "event", &i))) {
            for (const char *p = v;;) {
                const char *comma = strchr(p, ',');
                size_t n = comma ? (size_t)(comma - p) : strlen(p);
                char *one = xstrndup(p, n);
                cJSON_AddItemToArray(names, cJSON_CreateString(one));
                free(one);
                if (!comma)
                    break;
                p = comma + 1;
            }
        }
        cJSON_DeleteItemFromObjectCaseSensitive(o, "eventName");
        body_set(o, "eventNames", names);
    }
    if ((v = args_get(a, "url")))
        body_set(o, "webhookUrl", cJSON_CreateString(v));
    if (args_has(a, "header")) {
        cJSON *h = cJSON_CreateObject();
        int i = 0;
        while ((v = args_next(a, "header", &i))) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v) {
                cJSON_Delete(h);
                rc = cli_usage_error("--header must be NAME=VALUE, not \"%s\"", v);
                goto out;
            }
            char *name = xstrndup(v, (size_t)(eq - v));
            body_set(h, name, cJSON_CreateString(eq + 1));
            free(name);
        }
        body_set(o, "headers", h);
    }
    if ((v = args_get(a, "rate-limit"))) {
        cJSON *r = rate_limit(v);
        if (!r) {
            rc = cli_usage_error("--rate-limit must be N/s, N/Ss (e.g. 100/60s), N/m, N/h or "
                                 "none, not \"%s\"",
                                 v);
            goto out;
        }
        body_set(o, "rateLimit", r);
    }
    if ((v = args_get(a, "retry-schedule"))) {
        cJSON *r = retry_schedule(v);
        if (!r) {
            rc = cli_usage_error("--retry-schedule must be seconds separated by commas "
                                 "(1,5,30) or none, not \"%s\"",
                                 v);
            goto out;
        }
        body_set(o, "retryPolicy", r);
    }
    if ((v = args_get(a, "batch"))) {
        cJSON *r = batching(v);
        if (!r) {
            rc = cli_usage_error("--batch must be N/Ss (up to N jobs a request, at most S "
                                 "seconds; e.g. 100/5s) or none, not \"%s\"",
                                 v);
            goto out;
        }
        body_set(o, "batching", r);
    }
    struct {
        const char *flag, *field;
        cJSON *(*conv)(const char *, const char *, char *, size_t);
    } conv[] = {{"timeout-seconds", "timeoutSeconds", body_number},
                {"payload-fields", "payloadFields", body_json_value},
                {"filter", "filter", body_json_value}};
    for (size_t k = 0; k < sizeof conv / sizeof conv[0]; k++) {
        if (!(v = args_get(a, conv[k].flag)))
            continue;
        cJSON *j = strcmp(v, "none") == 0 ? cJSON_CreateNull()
                                          : conv[k].conv(conv[k].flag, v, err, sizeof err);
        if (!j) {
            rc = cli_usage_error("%s", err);
            goto out;
        }
        body_set(o, conv[k].field, j);
    }
    if ((v = args_get(a, "description")))
        body_set(o, "description", cJSON_CreateString(v));
    if ((v = args_get(a, "payload")))
        body_set(o, "payload", cJSON_CreateString(v));
    if ((v = args_get(a, "secret")))
        body_set(o, "secret", cJSON_CreateString(v));
    if (args_has(a, "verify"))
        body_set(o, "verify", cJSON_CreateTrue());
    if ((v = args_get(a, "tenant")))
        body_set(o, "tenant", cJSON_CreateString(v));
    if (create && ((!cJSON_GetObjectItemCaseSensitive(o, "eventName") &&
                    !cJSON_GetObjectItemCaseSensitive(o, "eventNames")) ||
                   !cJSON_GetObjectItemCaseSensitive(o, "webhookUrl"))) {
        rc = cli_usage_error("subs create needs --event and --url (or both in --data)");
        goto out;
    }
    body_print(o, out);
out:
    cJSON_Delete(o);
    return rc;
}

/* Sends a call whose answer is one subscription and prints it. */
static int show_sub(struct cli *c, const char *method, const char *path, const struct buf *body)
{
    struct api_call call = {.method = method,
                            .path = path,
                            .body = body ? body->data : NULL,
                            .body_len = body ? body->len : 0};
    cJSON *j;
    long status;
    int rc = api_do(c, &call, &j, &status);
    if (rc == EXIT_OK && j) {
        table_kv(stdout, j, NULL);
        if (strcmp(method, "POST") == 0 && status == 200 && strcmp(path, "/api/v0/webhooks") == 0)
            fprintf(stderr,
                    "%s: these event names and URL were already registered: the existing "
                    "subscription was updated (HTTP 200)\n",
                    c->prog);
    }
    cJSON_Delete(j);
    return rc;
}

static int run_create(struct cli *c, const struct args *a)
{
    struct buf body = {0};
    int rc = sub_body(a, true, &body);
    if (rc == EXIT_OK)
        rc = show_sub(c, "POST", "/api/v0/webhooks", &body);
    buf_free(&body);
    return rc;
}

static int run_update(struct cli *c, const struct args *a)
{
    struct buf body = {0};
    int rc = sub_body(a, false, &body);
    if (rc == EXIT_OK) {
        char *path = sub_path(a->pos[0], a->pos[1], NULL);
        rc = show_sub(c, "PATCH", path, &body);
        free(path);
    }
    buf_free(&body);
    return rc;
}

static int set_status(struct cli *c, const struct args *a, const char *status)
{
    struct buf body = {0};
    buf_printf(&body, "{\"status\":\"%s\"}", status);
    char *path = sub_path(a->pos[0], a->pos[1], NULL);
    int rc = show_sub(c, "PATCH", path, &body);
    free(path);
    buf_free(&body);
    return rc;
}

static int run_pause(struct cli *c, const struct args *a)
{
    return set_status(c, a, "paused");
}

static int run_resume(struct cli *c, const struct args *a)
{
    return set_status(c, a, "active");
}

static int run_get(struct cli *c, const struct args *a)
{
    char *path = sub_path(a->pos[0], a->pos[1], NULL);
    int rc = show_sub(c, "GET", path, NULL);
    free(path);
    return rc;
}

static int run_delete(struct cli *c, const struct args *a)
{
    char *path = sub_path(a->pos[0], a->pos[1], NULL);
    int rc = show_sub(c, "DELETE", path, NULL);
    free(path);
    return rc;
}

static int run_rotate(struct cli *c, const struct args *a)
{
    char err[256];
    cJSON *o = cJSON_CreateObject();
    const char *v;
    int rc = EXIT_OK;
    if ((v = args_get(a, "grace"))) {
        cJSON *n = body_number("grace", v, err, sizeof err);
        if (!n) {
            rc = cli_usage_error("%s", err);
            goto out;
        }
        cJSON_AddItemToObject(o, "gracePeriodSeconds", n);
    }
    if ((v = args_get(a, "secret")))
        cJSON_AddStringToObject(o, "secret", v);
    struct buf body = {0};
    body_print(o, &body);
    char *path = sub_path(a->pos[0], a->pos[1], "rotate-secret");
    rc = show_sub(c, "POST", path, &body);
    free(path);
    buf_free(&body);
out:
    cJSON_Delete(o);
    return rc;
}

/* A positive integer option, or -1 after printing a usage error. */
static long num_opt(const struct args *a, const char *name, long def, long min)
{
    const char *v = args_get(a, name);
    if (!v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || *end || n < min) {
        cli_usage_error("--%s must be a whole number of at least %ld, not \"%s\"", name, min, v);
        return -1;
    }
    return n;
}

static int run_list(struct cli *c, const struct args *a)
{
    long size = num_opt(a, "page-size", 0, 1), offset = num_opt(a, "offset", 0, 0);
    if (size < 0 || offset < 0)
        return EXIT_USAGE;
    const char *event = args_get(a, "event"), *tenant = args_get(a, "tenant");
    bool all = args_has(a, "all"), json = c->json;
    cJSON *rows = cJSON_CreateArray(), *last = NULL;
    int rc;
    if (all)
        c->json = false; /* pages are parsed and merged, then printed as one document */
    for (;;) {
        struct buf p = {0};
        char n[32];
        buf_adds(&p, "/api/v0/webhooks");
        if (event)
            api_seg(&p, event);
        if (tenant)
            api_query(&p, "tenant", tenant);
        if (size) {
            snprintf(n, sizeof n, "%ld", size);
            api_query(&p, "page_size", n);
        }
        if (offset) {
            snprintf(n, sizeof n, "%ld", offset);
            api_query(&p, "offset", n);
        }
        struct api_call call = {.method = "GET", .path = p.data};
        cJSON *j;
        rc = api_do(c, &call, &j, NULL);
        buf_free(&p);
        if (rc != EXIT_OK || !j)
            break;
        cJSON *page = cJSON_GetObjectItemCaseSensitive(j, "webhooks");
        cJSON *item;
        cJSON_ArrayForEach(item, page)
        {
            cJSON_AddItemToArray(rows, cJSON_Duplicate(item, true));
        }
        cJSON_Delete(last);
        last = j;
        double total = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "total"));
        int got = cJSON_GetArraySize(page);
        offset += got;
        if (!all || got == 0 || offset >= total)
            break;
    }
    c->json = json;
    if (rc == EXIT_OK && last) {
        if (json) { /* --all --json: the last page's document with every page's items */
            cJSON_ReplaceItemInObjectCaseSensitive(last, "webhooks", rows);
            body_set(last, "offset", cJSON_CreateNumber(0));
            body_set(last, "page_size", cJSON_CreateNumber(cJSON_GetArraySize(rows)));
            rows = NULL;
            char *s = cJSON_PrintUnformatted(last);
            puts(s);
            free(s);
        } else {
            table_print(stdout, rows, list_cols);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(last, "total");
            char *total = table_cell(t);
            fprintf(stderr, "%d shown of %s in all%s\n", cJSON_GetArraySize(rows), total,
                    !all && offset < cJSON_GetNumberValue(t) ? " (--offset or --all for more)"
                                                             : "");
            free(total);
        }
    }
    cJSON_Delete(rows);
    cJSON_Delete(last);
    return rc;
}

const struct cmd subs_cmds[] = {
    {"subs", "create", "", 0, 0, create_opts, "Register a subscription (POST /api/v0/webhooks).",
     "Flags set the common fields; --data gives the whole body (any field of docs/api.md), and\n"
     "flags given with it replace its fields. Registering the same event names and URL\n"
     "again updates that subscription (HTTP 200) instead of creating one (201).\n\n"
     "  webhookctl subs create --event book.created --url https://example.com/hooks \\\n"
     "      --header X-Team=books --rate-limit 10/s --retry-schedule 1,5,30\n"
     "  webhookctl subs create --event 'order.*' --event invoice.paid --url https://example.com/o",
     run_create, false},
    {"subs", "list", "", 0, 0, list_opts,
     "List subscriptions, all or one event's (GET /api/v0/webhooks[/EVENT]).",
     "The footer on stderr says how many there are in all.", run_list, false},
    {"subs", "get", "EVENT ID", 2, 2, NULL,
     "Show one subscription, with its secret (GET /api/v0/webhooks/EVENT/ID).", NULL, run_get,
     false},
    {"subs", "update", "EVENT ID", 2, 2, update_opts,
     "Change a subscription in place (PATCH /api/v0/webhooks/EVENT/ID).",
     "Only the fields given change; --header replaces all custom headers; none resets\n"
     "--rate-limit, --retry-schedule, --timeout-seconds, --payload-fields, --filter and --batch\n"
     "to the default. --data '{\"description\":null}' sends any body.",
     run_update, false},
    {"subs", "pause", "EVENT ID", 2, 2, NULL,
     "Pause deliveries; jobs wait (PATCH {\"status\":\"paused\"}).", NULL, run_pause, false},
    {"subs", "resume", "EVENT ID", 2, 2, NULL,
     "Resume deliveries, oldest waiting job first (PATCH {\"status\":\"active\"}).",
     "Also re-enables a disabled subscription.", run_resume, false},
    {"subs", "rotate-secret", "EVENT ID", 2, 2, rotate_opts,
     "Replace the signing secret; the old one keeps signing for the grace period.", NULL,
     run_rotate, false},
    {"subs", "delete", "EVENT ID", 2, 2, NULL,
     "Delete a subscription; its waiting jobs end cancelled (DELETE .../EVENT/ID).", NULL,
     run_delete, false},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, false},
};
