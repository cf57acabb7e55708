/* Operational events: the jobs the outcome commit created for broker.* events, put in Redis the
 * way the broker enqueues a trigger's jobs (payload, partition stream, live set). */
#include "opevents.h"

#include <cJSON.h>
#include <string.h>

#include "ids.h"
#include "jobmsg.h"
#include "keys.h"
#include "log.h"
#include "valid.h"
#include "worker.h"

struct newjob {
    const char *job, *event, *sub, *url, *name, *data;
    unsigned part;
};

static void enqueued(struct rds *r, redisReply *reply, void *priv)
{
    (void)r, (void)priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        log_warn("opevents",
                 "enqueue of operational event jobs failed (%s): they stay queued in "
                 "PostgreSQL for the reconciler",
                 reply && reply->str ? reply->str : "Redis connection lost");
}

static const char *field(const cJSON *o, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* One element of the array, checked: every field present, ids well formed. */
static bool newjob_read(const cJSON *o, struct newjob *nj)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "p");
    nj->job = field(o, "j");
    nj->event = field(o, "e");
    nj->sub = field(o, "s");
    nj->url = field(o, "u");
    nj->name = field(o, "n");
    nj->data = field(o, "d");
    if (!nj->job || !nj->event || !nj->sub || !nj->url || !nj->name || !nj->data ||
        !cJSON_IsNumber(p) || p->valuedouble < 0 || p->valuedouble >= (double)W.cfg.partitions ||
        !id_valid(nj->job, strlen(nj->job)) || !id_valid(nj->event, strlen(nj->event)) ||
        !id_valid(nj->sub, strlen(nj->sub)) || strlen(nj->name) > EVENT_NAME_MAX)
        return false;
    nj->part = (unsigned)p->valuedouble;
    return true;
}

void opevents_enqueue(const char *json, size_t n)
{
    cJSON *doc = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsArray(doc)) {
        log_warn("opevents", "unreadable list of operational event jobs; the reconciler will "
                             "enqueue them");
        cJSON_Delete(doc);
        return;
    }
    size_t count = (size_t)cJSON_GetArraySize(doc);
    struct newjob *jobs = xcalloc(count ? count : 1, sizeof *jobs);
    size_t k = 0;
    for (const cJSON *o = doc->child; o; o = o->next) {
        if (newjob_read(o, &jobs[k]))
            k++;
        else
            log_warn("opevents", "malformed operational event job skipped (the reconciler will "
                                 "enqueue it)");
    }
    struct rargs a = {0};
    struct buf msg = {0};
    char key[KEY_MAX], jobs_key[KEY_MAX], live_key[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        size_t np = 0;
        for (size_t i = 0; i < k; i++)
            np += jobs[i].part == p;
        if (np == 0)
            continue;
        size_t jl = key_jobs(jobs_key, p), ll = key_live(live_key, p);
        rargs_adds(&a, "MULTI");
        bool ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
        for (size_t i = 0; ok && i < k; i++) {
            struct newjob *nj = &jobs[i];
            if (nj->part != p)
                continue;
            size_t kl = key_payload(key, p, nj->event);
            rargs_adds(&a, "SET");
            rargs_add(&a, key, kl);
            rargs_adds(&a, nj->data);
            rargs_adds(&a, "EX");
            rargs_addll(&a, W.cfg.payload_ttl);
            ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
            struct job_msg m = {.attempt = 1, .url = (char *)nj->url};
            memcpy(m.job, nj->job, ID_LEN);
            memcpy(m.event, nj->event, ID_LEN);
            memcpy(m.sub, nj->sub, ID_LEN);
            memcpy(m.name, nj->name, strlen(nj->name));
            buf_reset(&msg);
            jobmsg_encode(&m, &msg);
            rargs_adds(&a, "XADD");
            rargs_add(&a, jobs_key, jl);
            rargs_adds(&a, "*");
            rargs_adds(&a, KEYS_STREAM_FIELD);
            rargs_add(&a, msg.data, msg.len);
            ok = ok && rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
        }
        if (ok) {
            rargs_adds(&a, "SADD");
            rargs_add(&a, live_key, ll);
            for (size_t i = 0; i < k; i++)
                if (jobs[i].part == p)
                    rargs_add(&a, jobs[i].job, ID_LEN);
            ok = rargs_send(&a, W.rd_cmd, NULL, NULL) == 0;
        }
        rargs_adds(&a, "EXEC");
        if (!ok || rargs_send(&a, W.rd_cmd, enqueued, NULL) < 0)
            log_warn("opevents",
                     "Redis is unavailable: %zu operational event jobs stay queued in "
                     "PostgreSQL for the reconciler",
                     np);
        rargs_reset(&a);
    }
    for (size_t i = 0; i < k; i++)
        log_sub(LOG_INFO, jobs[i].sub, "operational event %s (%s) queued as job %s", jobs[i].event,
                jobs[i].name, jobs[i].job);
    rargs_free(&a);
    buf_free(&msg);
    free(jobs);
    cJSON_Delete(doc);
}
