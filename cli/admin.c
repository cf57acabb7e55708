/* webhookctl admin, status, stats, health: operating the broker (GET and PUT
 * /api/v0/admin/delivery, GET /api/v0/webhooks/EVENT/ID/status, GET /api/v0/stats,
 * GET /readyz). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "body.h"
#include "cli.h"
#include "table.h"

static const struct opt switch_opts[] = {
    {"message", "TEXT", 0, "a note for operators (at most 500 bytes, one line)"},
    {NULL, NULL, 0, NULL},
};
static const struct opt stats_opts[] = {
    {"since", "TIME", 0, "RFC 3339 time, at most 30 days back (default: 24 hours ago)"},
    {NULL, NULL, 0, NULL},
};

static const struct col health_cols[] = {
    {"ID", "id"},         {"EVENT", "eventName"},
    {"HEALTH", "health"}, {"FAILURES", "consecutiveFailures"},
    {"URL", "url"},       {"DISABLED_REASON", "disabledReason"},
    {NULL, NULL},
};
static const struct col activity_cols[] = {
    {"AT", "at"},         {"KIND", "kind"},     {"ATTEMPT", "attempt"}, {"CODE", "statusCode"},
    {"MS", "durationMs"}, {"DETAIL", "detail"}, {"ERROR", "error"},     {NULL, NULL},
};
static const struct col stats_cols[] = {
    {"EVENT", "eventName"},
    {"TRIGGERS", "triggers"},
    {"JOBS", "jobsCreated"},
    {"DELIVERED", "delivered"},
    {"DEAD", "dead"},
    {"FAILED_ATTEMPTS", "failedAttempts"},
    {"RETRIES_PENDING", "retriesPending"},
    {NULL, NULL},
};

static void print_switch(const cJSON *j)
{
    static const char *const skip[] = {"subscriptions", NULL};
    table_kv(stdout, j, skip);
    const cJSON *subs = cJSON_GetObjectItemCaseSensitive(j, "subscriptions");
    if (!subs)
        return;
    char *total = table_cell(cJSON_GetObjectItemCaseSensitive(subs, "total"));
    char *unhealthy = table_cell(cJSON_GetObjectItemCaseSensitive(subs, "unhealthy"));
    printf("subscriptions: %s active, %s unhealthy\n\n", total, unhealthy);
    free(total);
    free(unhealthy);
    table_print(stdout, cJSON_GetObjectItemCaseSensitive(subs, "listed"), health_cols);
}

static int delivery(struct cli *c, const char *status, const char *message)
{
    struct buf body = {0};
    if (status) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", status);
        if (message)
            cJSON_AddStringToObject(o, "message", message);
        body_print(o, &body);
        cJSON_Delete(o);
    }
    struct api_call call = {.method = status ? "PUT" : "GET",
                            .path = "/api/v0/admin/delivery",
                            .body = status ? body.data : NULL,
                            .body_len = body.len};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j)
        print_switch(j);
    cJSON_Delete(j);
    buf_free(&body);
    return rc;
}

static int run_admin_status(struct cli *c, const struct args *a)
{
    (void)a;
    return delivery(c, NULL, NULL);
}

static int run_online(struct cli *c, const struct args *a)
{
    return delivery(c, "online", args_get(a, "message"));
}

static int run_offline(struct cli *c, const struct args *a)
{
    return delivery(c, "offline", args_get(a, "message"));
}

static int run_status(struct cli *c, const struct args *a)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/webhooks");
    api_seg(&p, a->pos[0]);
    api_seg(&p, a->pos[1]);
    buf_adds(&p, "/status");
    struct api_call call = {.method = "GET", .path = p.data};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j) {
        static const char *const skip[] = {"recentActivity", NULL};
        table_kv(stdout, j, skip);
        printf("\n");
        table_print(stdout, cJSON_GetObjectItemCaseSensitive(j, "recentActivity"), activity_cols);
    }
    cJSON_Delete(j);
    buf_free(&p);
    return rc;
}

static int run_stats(struct cli *c, const struct args *a)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/stats");
    api_query(&p, "since", args_get(a, "since"));
    struct api_call call = {.method = "GET", .path = p.data};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j) {
        char *since = table_cell(cJSON_GetObjectItemCaseSensitive(j, "since"));
        char *until = table_cell(cJSON_GetObjectItemCaseSensitive(j, "until"));
        printf("since: %s\nuntil: %s\n\n", since, until);
        free(since);
        free(until);
        /* The events, then a TOTAL row. */
        cJSON *rows = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(j, "events"), true);
        cJSON *total = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(j, "total"), true);
        if (!rows)
            rows = cJSON_CreateArray();
        if (cJSON_IsObject(total)) {
            body_set(total, "eventName", cJSON_CreateString("TOTAL"));
            cJSON_AddItemToArray(rows, total);
        } else {
            cJSON_Delete(total);
        }
        table_print(stdout, rows, stats_cols);
        cJSON_Delete(rows);
    }
    cJSON_Delete(j);
    buf_free(&p);
    return rc;
}

/* GET /readyz (no key): 200 when Redis and PostgreSQL are reachable, 503 when one is not. */
static int run_health(struct cli *c, const struct args *a)
{
    (void)a;
    struct api_call call = {.method = "GET", .path = "/readyz", .no_auth = true};
    return api_show(c, &call);
}

const struct cmd admin_cmds[] = {
    {"admin", "status", "", 0, 0, NULL,
     "Show the delivery switch, the waiting jobs and every unhealthy subscription.", NULL,
     run_admin_status, false},
    {"admin", "offline", "", 0, 0, switch_opts,
     "Stop every delivery (triggers are still accepted; jobs wait).",
     "  webhookctl admin offline --message \"incident 42: receivers down\"", run_offline, false},
    {"admin", "online", "", 0, 0, switch_opts, "Deliver again, the backlog first.", NULL,
     run_online, false},
    {NULL, "status", "EVENT ID", 2, 2, NULL,
     "Show a subscription's health and recent activity (GET .../EVENT/ID/status).", NULL,
     run_status, false},
    {NULL, "stats", "", 0, 0, stats_opts,
     "Triggers, jobs, deliveries and failures since a time, per event (GET /api/v0/stats).", NULL,
     run_stats, false},
    {NULL, "health", "", 0, 0, NULL,
     "Is the broker up, and can it reach Redis and PostgreSQL (GET /readyz, no key needed)?",
     "Exit 0 when ready, 3 when Redis or PostgreSQL is down (503), 4 when the broker does\n"
     "not answer.",
     run_health, false},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, false},
};
