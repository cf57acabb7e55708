/* webhookctl trigger, events show, replay: events (POST /api/v0/trigger-event/EVENT,
 * GET /api/v0/events/ID, POST /api/v0/events/ID/replay). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "body.h"
#include "cli.h"
#include "table.h"

static const struct opt trigger_opts[] = {
    {"data", "JSON", 0,
     "the payload: JSON text, @FILE or - (stdin); sent byte for byte "
     "(default {})"},
    {"idempotency-key", "KEY", 0, "Idempotency-Key: a repeat within 24 h creates nothing"},
    {"tenant", "ID", 0, "only this tenant's subscriptions receive it (default: the global ones)"},
    {NULL, NULL, 0, NULL},
};
static const struct opt show_opts[] = {
    {"page-size", "N", 0, "jobs per page, 1..500 (default 50)"},
    {"offset", "N", 0, "skip this many jobs (default 0)"},
    {NULL, NULL, 0, NULL},
};
static const struct opt replay_opts[] = {
    {"subscription", "ID", OPT_REPEAT, "only this subscription (default: every live one)"},
    {NULL, NULL, 0, NULL},
};

static const struct col event_jobs_cols[] = {
    {"JOB", "id"},
    {"SUBSCRIPTION", "subscriptionId"},
    {"STATUS", "status"},
    {"ATTEMPTS", "attempts"},
    {"CODE", "lastStatusCode"},
    {"URL", "webhookUrl"},
    {"ERROR", "lastError"},
    {NULL, NULL},
};
static const struct col replay_cols[] = {
    {"JOB", "id"}, {"SUBSCRIPTION", "subscriptionId"}, {"URL", "webhookUrl"}, {NULL, NULL}};

static int run_trigger(struct cli *c, const struct args *a)
{
    char err[256];
    struct buf body = {0}, path = {0};
    int rc;
    const char *data = args_get(a, "data"), *key = args_get(a, "idempotency-key");
    for (const char *k = key; k && *k; k++)
        if ((unsigned char)*k < 0x20 || *k == 0x7f) {
            rc = cli_usage_error("--idempotency-key must be printable ASCII");
            goto out;
        }
    if (body_read(data ? data : "{}", &body, err, sizeof err) < 0) {
        rc = cli_usage_error("%s", err);
        goto out;
    }
    buf_adds(&path, "/api/v0/trigger-event");
    api_seg(&path, a->pos[0]);
    if (args_get(a, "tenant"))
        api_query(&path, "tenant", args_get(a, "tenant"));
    struct api_call call = {.method = "POST",
                            .path = path.data,
                            .body = body.data,
                            .body_len = body.len,
                            .idem_key = key};
    rc = api_show(c, &call);
out:
    buf_free(&body);
    buf_free(&path);
    return rc;
}

static int run_show(struct cli *c, const struct args *a)
{
    struct buf path = {0};
    buf_adds(&path, "/api/v0/events");
    api_seg(&path, a->pos[0]);
    api_query(&path, "page_size", args_get(a, "page-size"));
    api_query(&path, "offset", args_get(a, "offset"));
    struct api_call call = {.method = "GET", .path = path.data};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j) {
        /* payloadRaw: the bytes as triggered, rather than payload as re-printed by cJSON */
        static const char *const skip[] = {"jobs", "payload", NULL};
        table_kv(stdout, j, skip);
        printf("\n");
        table_print(stdout, cJSON_GetObjectItemCaseSensitive(j, "jobs"), event_jobs_cols);
    }
    cJSON_Delete(j);
    buf_free(&path);
    return rc;
}

static int run_replay(struct cli *c, const struct args *a)
{
    struct buf path = {0}, body = {0};
    buf_adds(&path, "/api/v0/events");
    api_seg(&path, a->pos[0]);
    buf_adds(&path, "/replay");
    if (args_has(a, "subscription")) {
        cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "subscriptionIds");
        const char *v;
        int i = 0;
        while ((v = args_next(a, "subscription", &i)))
            cJSON_AddItemToArray(ids, cJSON_CreateString(v));
        body_print(o, &body);
        cJSON_Delete(o);
    }
    struct api_call call = {
        .method = "POST", .path = path.data, .body = body.data, .body_len = body.len};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j) {
        static const char *const skip[] = {"jobs", NULL};
        table_kv(stdout, j, skip);
        printf("\n");
        table_print(stdout, cJSON_GetObjectItemCaseSensitive(j, "jobs"), replay_cols);
    }
    cJSON_Delete(j);
    buf_free(&path);
    buf_free(&body);
    return rc;
}

const struct cmd events_cmds[] = {
    {NULL, "trigger", "EVENT", 1, 1, trigger_opts,
     "Trigger an event: one job per matching subscription (POST /api/v0/trigger-event/EVENT).",
     "  webhookctl trigger book.created --data '{\"id\":42}' --idempotency-key order-42\n"
     "  webhookctl trigger book.created --data @payload.json",
     run_trigger, false},
    {"events", "show", "EVENT_ID", 1, 1, show_opts,
     "Show an event, its payload and its jobs (GET /api/v0/events/ID).", NULL, run_show, false},
    {NULL, "replay", "EVENT_ID", 1, 1, replay_opts,
     "Send an event again as new jobs (POST /api/v0/events/ID/replay).",
     "Without --subscription: every live subscription of the event's name (whose filter, if\n"
     "any, matches the payload).",
     run_replay, false},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, false},
};
