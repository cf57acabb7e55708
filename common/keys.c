/* Redis key names, the one place that formats them. Keys of one partition share the hash tag
 * "{p}" so one MULTI or Lua script may touch them together (Redis Cluster ready). */
#include "keys.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "valid.h"

static char prefix[65] = "wh:";
static bool cluster; /* keys_set_cluster: the event index carries the ready mark's hash tag */

int keys_set_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n > 64 || strchr(p, '{') || strchr(p, '}'))
        return -1;
    memcpy(prefix, p, n + 1);
    return 0;
}

void keys_set_cluster(bool on)
{
    cluster = on;
}

/* snprintf's result as the key's length (truncated keys keep KEY_MAX - 1 bytes). */
static size_t fmt(int n)
{
    if (n < 0)
        return 0;
    return (size_t)n >= KEY_MAX ? KEY_MAX - 1 : (size_t)n;
}

size_t key_event(char *out, const char *tenant, const char *name, size_t namelen)
{
    if (cluster && tenant && *tenant)
        return fmt(snprintf(out, KEY_MAX, "{%sindex-ready}:event:@%s:%.*s", prefix, tenant,
                            (int)namelen, name));
    if (cluster)
        return fmt(
            snprintf(out, KEY_MAX, "{%sindex-ready}:event:%.*s", prefix, (int)namelen, name));
    if (tenant && *tenant)
        return fmt(snprintf(out, KEY_MAX, "%sevent:@%s:%.*s", prefix, tenant, (int)namelen, name));
    return fmt(snprintf(out, KEY_MAX, "%sevent:%.*s", prefix, (int)namelen, name));
}

int key_event_parse(const char *key, size_t klen, char *tenant, const char **name, size_t *namelen)
{
    char head[KEY_MAX];
    size_t hlen = key_event(head, NULL, "", 0);
    if (klen < hlen || memcmp(key, head, hlen) != 0)
        return -1;
    const char *p = key + hlen, *end = key + klen;
    tenant[0] = '\0';
    if (p < end && *p == '@') {
        const char *colon = memchr(p + 1, ':', (size_t)(end - p - 1));
        size_t tlen = colon ? (size_t)(colon - p - 1) : 0;
        if (!colon || !valid_tenant(p + 1, tlen))
            return -1;
        memcpy(tenant, p + 1, tlen);
        tenant[tlen] = '\0';
        p = colon + 1;
    }
    *name = p;
    *namelen = (size_t)(end - p);
    return 0;
}

size_t key_index_ready(char *out)
{
    if (cluster) /* same slot; not the mark of the untagged index of before (keys.h) */
        return fmt(snprintf(out, KEY_MAX, "{%sindex-ready}:ready", prefix));
    return fmt(snprintf(out, KEY_MAX, "%sindex-ready", prefix));
}

size_t key_index_rebuild(char *out)
{
    return fmt(snprintf(out, KEY_MAX, "{%sindex-ready}:rebuild", prefix));
}

size_t key_index_patterns(char *out)
{
    return fmt(snprintf(out, KEY_MAX, "{%sindex-ready}:patterns", prefix));
}

size_t key_jobs(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:jobs", prefix, part));
}

size_t key_retry(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:retry", prefix, part));
}

size_t key_live(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:live", prefix, part));
}

size_t key_dead(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:dead", prefix, part));
}

size_t key_payload(char *out, unsigned part, const char *event_id)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:payload:%s", prefix, part, event_id));
}

size_t key_ctl(char *out, unsigned part, const char *sub_id)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:ctl:%s", prefix, part, sub_id));
}

size_t key_held(char *out, unsigned part, const char *sub_id)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:held:%s", prefix, part, sub_id));
}

size_t key_held_subs(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:held-subs", prefix, part));
}

size_t key_rate(char *out, unsigned part, const char *sub_id)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:rate:%s", prefix, part, sub_id));
}

size_t key_batch_pend(char *out, unsigned part, const char *sub_id)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:batch-pend:%s", prefix, part, sub_id));
}

size_t key_batch_subs(char *out, unsigned part)
{
    return fmt(snprintf(out, KEY_MAX, "%s{%u}:batch-subs", prefix, part));
}
