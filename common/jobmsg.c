/* The job message: one compact JSON document per delivery attempt to run, the same bytes in the
 * job stream (field "d"), the retry set (member) and the dead-letter stream. */
#include "jobmsg.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "valid.h"

void jobmsg_encode(const struct job_msg *m, struct buf *b)
{
    buf_printf(b, "{\"j\":\"%s\",\"e\":\"%s\",\"s\":\"%s\",\"n\":\"%s\",\"u\":", m->job, m->event,
               m->sub, m->name);
    json_escape(b, m->url, strlen(m->url));
    if (m->rslot > 0)
        buf_printf(b, ",\"a\":%d,\"r\":%lld}", m->attempt, (long long)m->rslot);
    else
        buf_printf(b, ",\"a\":%d}", m->attempt);
}

static int get_id(const cJSON *o, const char *k, char *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v) || !id_valid(v->valuestring, strlen(v->valuestring)))
        return -1;
    id_normalize(v->valuestring, out);
    return 0;
}

int jobmsg_decode(const char *p, size_t n, struct job_msg *m)
{
    memset(m, 0, sizeof *m);
    cJSON *o = cJSON_ParseWithLength(p, n);
    int rc = -1;
    if (!o)
        return -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "n");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "u");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(o, "a");
    const cJSON *slot = cJSON_GetObjectItemCaseSensitive(o, "r"); /* optional */
    if (get_id(o, "j", m->job) < 0 || get_id(o, "e", m->event) < 0 || get_id(o, "s", m->sub) < 0)
        goto out_free;
    if (!cJSON_IsString(name) || !valid_event_name(name->valuestring, strlen(name->valuestring)))
        goto out_free;
    if (!cJSON_IsString(url) || !cJSON_IsNumber(att) || att->valuedouble < 1 ||
        att->valuedouble > 1000)
        goto out_free;
    /* a reservation is a time in ms: positive, below 2^53 (exact in a double) */
    if (slot && (!cJSON_IsNumber(slot) || !(slot->valuedouble >= 1) ||
                 slot->valuedouble > 9007199254740991.0))
        goto out_free;
    memcpy(m->name, name->valuestring, strlen(name->valuestring) + 1);
    m->url = xstrdup(url->valuestring);
    m->attempt = (int)att->valuedouble;
    m->rslot = slot ? (int64_t)slot->valuedouble : 0;
    rc = 0;
out_free:
    cJSON_Delete(o);
    return rc;
}

void jobmsg_clear(struct job_msg *m)
{
    free(m->url);
    m->url = NULL;
}
