/* webhookctl jobs, recover: finding jobs and sending finished ones again (GET /api/v0/jobs,
 * GET /api/v0/jobs/ID, POST /api/v0/jobs/ID/retry, POST and GET
 * /api/v0/webhooks/EVENT/ID/recover). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "body.h"
#include "cli.h"
#include "table.h"

static const struct opt list_opts[] = {
    {"status", "STATUS", 0, "queued, retrying, delivered, dead or cancelled"},
    {"event", "NAME", 0, "the jobs of events of this name"},
    {"subscription", "ID", 0, "the jobs of this subscription"},
    {"since", "TIME", 0, "made at or after this RFC 3339 time"},
    {"until", "TIME", 0, "made before this RFC 3339 time"},
    {"limit", "N", 0, "jobs per page, 1..500 (default 50)"},
    {"cursor", "NEXT", 0, "the page after the one that gave this cursor"},
    {"all", NULL, 0, "follow the cursor to the last page (with --json: one document)"},
    {NULL, NULL, 0, NULL},
};
static const struct opt recover_opts[] = {
    {"since", "TIME", 0, "the window's start, RFC 3339 (required)"},
    {"until", "TIME", 0, "the window's end (default: now); at most 14 days after --since"},
    {NULL, NULL, 0, NULL},
};

static const struct col job_cols[] = {
    {"ID", "id"},
    {"EVENT", "eventName"},
    {"STATUS", "status"},
    {"ATTEMPTS", "attempts"},
    {"CODE", "lastStatusCode"},
    {"CREATED", "createdAt"},
    {"URL", "url"},
    {"ERROR", "lastError"},
    {NULL, NULL},
};
static const struct col attempt_cols[] = {
    {"ATTEMPT", "attempt"}, {"STARTED", "startedAt"}, {"MS", "durationMs"},
    {"CODE", "statusCode"}, {"ERROR", "error"},       {"RESPONSE", "responseExcerpt"},
    {NULL, NULL},
};

static int run_list(struct cli *c, const struct args *a)
{
    static const char *const params[][2] = {
        {"status", "status"}, {"event", "event"}, {"subscription", "subscription"},
        {"since", "since"},   {"until", "until"}, {"limit", "limit"}};
    bool all = args_has(a, "all"), json = c->json;
    char *cursor = args_get(a, "cursor") ? xstrdup(args_get(a, "cursor")) : NULL;
    cJSON *rows = cJSON_CreateArray();
    int rc;
    if (all)
        c->json = false; /* pages are parsed and merged, then printed as one document */
    for (;;) {
        struct buf p = {0};
        buf_adds(&p, "/api/v0/jobs");
        for (size_t k = 0; k < sizeof params / sizeof params[0]; k++)
            api_query(&p, params[k][1], args_get(a, params[k][0]));
        api_query(&p, "cursor", cursor);
        struct api_call call = {.method = "GET", .path = p.data};
        cJSON *j;
        rc = api_do(c, &call, &j, NULL);
        buf_free(&p);
        free(cursor);
        cursor = NULL;
        if (rc != EXIT_OK || !j)
            break;
        cJSON *item;
        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, "jobs"))
        {
            cJSON_AddItemToArray(rows, cJSON_Duplicate(item, true));
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "next");
        if (cJSON_IsString(next))
            cursor = xstrdup(next->valuestring);
        cJSON_Delete(j);
        if (!all || !cursor)
            break;
    }
    c->json = json;
    if (rc == EXIT_OK && (all || !json)) {
        if (json) {
            cJSON *doc = cJSON_CreateObject();
            cJSON_AddItemToObject(doc, "jobs", rows);
            cJSON_AddNullToObject(doc, "next");
            rows = NULL;
            char *s = cJSON_PrintUnformatted(doc);
            puts(s);
            free(s);
            cJSON_Delete(doc);
        } else {
            table_print(stdout, rows, job_cols);
            if (cursor)
                fprintf(stderr, "more: --cursor %s (or --all)\n", cursor);
        }
    }
    free(cursor);
    cJSON_Delete(rows);
    return rc;
}

static char *job_path(const char *id, const char *suffix)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/jobs");
    api_seg(&p, id);
    if (suffix)
        buf_adds(&p, suffix);
    return buf_steal(&p, NULL);
}

static int run_get(struct cli *c, const struct args *a)
{
    char *path = job_path(a->pos[0], NULL);
    struct api_call call = {.method = "GET", .path = path};
    cJSON *j;
    int rc = api_do(c, &call, &j, NULL);
    if (rc == EXIT_OK && j) {
        static const char *const skip[] = {"attemptLog", NULL};
        table_kv(stdout, j, skip);
        printf("\n");
        table_print(stdout, cJSON_GetObjectItemCaseSensitive(j, "attemptLog"), attempt_cols);
    }
    cJSON_Delete(j);
    free(path);
    return rc;
}

static int run_retry(struct cli *c, const struct args *a)
{
    char *path = job_path(a->pos[0], "/retry");
    struct api_call call = {.method = "POST", .path = path};
    int rc = api_show(c, &call);
    free(path);
    return rc;
}

static char *recover_path(const char *event, const char *id, const char *rid)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/webhooks");
    api_seg(&p, event);
    api_seg(&p, id);
    buf_adds(&p, "/recover");
    if (rid)
        api_seg(&p, rid);
    return buf_steal(&p, NULL);
}

static int run_recover(struct cli *c, const struct args *a)
{
    const char *since = args_get(a, "since"), *until = args_get(a, "until");
    if (!since)
        return cli_usage_error("recover needs --since TIME (RFC 3339, e.g. 2026-12-01T00:00:00Z)");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "since", since);
    if (until)
        cJSON_AddStringToObject(o, "until", until);
    struct buf body = {0};
    body_print(o, &body);
    cJSON_Delete(o);
    char *path = recover_path(a->pos[0], a->pos[1], NULL);
    struct api_call call = {
        .method = "POST", .path = path, .body = body.data, .body_len = body.len};
    int rc = api_show(c, &call);
    free(path);
    buf_free(&body);
    return rc;
}

static int run_recover_status(struct cli *c, const struct args *a)
{
    char *path = recover_path(a->pos[0], a->pos[1], a->pos[2]);
    struct api_call call = {.method = "GET", .path = path};
    int rc = api_show(c, &call);
    free(path);
    return rc;
}

const struct cmd jobs_cmds[] = {
    {"jobs", "list", "", 0, 0, list_opts, "Find jobs, newest first (GET /api/v0/jobs).",
     "Filters combine. Dead letters: webhookctl jobs list --status dead. The cursor of the\n"
     "next page is printed on stderr.",
     run_list, false},
    {"jobs", "get", "JOB_ID", 1, 1, NULL, "Show one job and its attempt log (GET /api/v0/jobs/ID).",
     NULL, run_get, false},
    {"jobs", "retry", "JOB_ID", 1, 1, NULL,
     "Send a dead, cancelled or delivered job again (POST /api/v0/jobs/ID/retry).", NULL, run_retry,
     false},
    {"recover", "start", "EVENT ID", 2, 2, recover_opts,
     "Re-send a subscription's dead jobs of a time window, in the background (POST\n"
     "      /api/v0/webhooks/EVENT/ID/recover); \"start\" may be left out.",
     "  webhookctl recover book.created 0193... --since 2026-12-01T00:00:00Z\n"
     "Follow it with: webhookctl recover status EVENT ID RECOVERY_ID",
     run_recover, true},
    {"recover", "status", "EVENT ID RECOVERY_ID", 3, 3, NULL,
     "Show a recovery's progress (GET /api/v0/webhooks/EVENT/ID/recover/RID).", NULL,
     run_recover_status, false},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, false},
};
