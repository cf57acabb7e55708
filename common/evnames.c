/* A subscription's event names and patterns: validation, matching, and the index entries a
 * name is delivered through (decision 39). */
#include "evnames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum evname_kind evname_kind(const char *s, size_t n)
{
    if (n == 1 && s[0] == '*')
        return EVNAME_ALL;
    if (n > 2 && s[n - 2] == '.' && s[n - 1] == '*') {
        if (n > EVENT_NAME_MAX || !valid_event_name(s, n - 2))
            return EVNAME_INVALID;
        int dots = 0;
        for (size_t i = 0; i < n - 2; i++)
            dots += s[i] == '.';
        return dots < EVNAMES_DEPTH ? EVNAME_PREFIX : EVNAME_INVALID;
    }
    return valid_event_name(s, n) ? EVNAME_EXACT : EVNAME_INVALID;
}

bool evname_matches(const char *pat, const char *name)
{
    size_t pn = strlen(pat), nn = strlen(name);
    switch (evname_kind(pat, pn)) {
    case EVNAME_EXACT:
        return pn == nn && memcmp(pat, name, nn) == 0;
    case EVNAME_ALL:
        return !event_name_reserved(name, nn);
    case EVNAME_PREFIX: /* "p.*": name starts with "p." */
        return nn >= pn - 1 && memcmp(pat, name, pn - 1) == 0;
    default:
        return false;
    }
}

int evname_keys(const char *name, size_t n, char out[][EVNAME_SIZE])
{
    int k = 0, dots = 0;
    snprintf(out[k++], EVNAME_SIZE, "%.*s", (int)n, name);
    for (size_t i = 0; i < n && dots < EVNAMES_DEPTH; i++) {
        if (name[i] != '.')
            continue;
        dots++;
        if (i > 0)
            snprintf(out[k++], EVNAME_SIZE, "%.*s.*", (int)i, name);
    }
    if (!event_name_reserved(name, n))
        snprintf(out[k++], EVNAME_SIZE, "*");
    return k;
}

void evnames_free(struct evnames *e)
{
    for (int i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char entry_rule[] =
    "an event name (1 to 128 characters of A-Z a-z 0-9 . _ : -), a prefix pattern ending in "
    "\".*\" (at most 7 dots before it), or \"*\"";

int evnames_parse(const cJSON *arr, const cJSON *one, struct evnames *out, char *err, size_t errlen)
{
    out->n = 0;
    out->v = NULL;
    if (one && (!cJSON_IsString(one) ||
                evname_kind(one->valuestring, strlen(one->valuestring)) == EVNAME_INVALID)) {
        snprintf(err, errlen, "eventName must be %s", entry_rule);
        return -1;
    }
    if (!arr && !one) {
        snprintf(err, errlen, "eventNames (or eventName) is required");
        return -1;
    }
    if (!arr) {
        out->v = xcalloc(1, sizeof *out->v);
        out->v[out->n++] = xstrdup(one->valuestring);
        return 0;
    }
    int count = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || count < 1 || count > EVNAMES_MAX) {
        snprintf(err, errlen, "eventNames must be an array of 1 to %d entries", EVNAMES_MAX);
        return -1;
    }
    out->v = xcalloc((size_t)count, sizeof *out->v);
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) ||
            evname_kind(it->valuestring, strlen(it->valuestring)) == EVNAME_INVALID) {
            snprintf(err, errlen, "eventNames[%d] must be %s", i, entry_rule);
            goto out_fail;
        }
        out->v[out->n++] = xstrdup(it->valuestring);
    }
    qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    for (i = 1; i < out->n; i++) {
        if (strcmp(out->v[i - 1], out->v[i]) == 0) {
            snprintf(err, errlen, "eventNames lists \"%s\" twice", out->v[i]);
            goto out_fail;
        }
    }
    if (out->n > 1 && strcmp(out->v[0], "*") == 0) { /* '*' sorts before every name character */
        snprintf(err, errlen, "eventNames: \"*\" matches every event and must be the only entry");
        goto out_fail;
    }
    if (one && (out->n != 1 || strcmp(out->v[0], one->valuestring) != 0)) {
        snprintf(err, errlen,
                 "eventName and eventNames disagree: give one of them (eventName is the same "
                 "as eventNames with one entry)");
        goto out_fail;
    }
    return 0;
out_fail:
    evnames_free(out);
    return -1;
}

void evnames_pg_array(struct buf *b, char *const *names, int n)
{
    buf_addc(b, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            buf_addc(b, ',');
        buf_adds(b, names[i]);
    }
    buf_addc(b, '}');
}

bool evnames_any_reserved(const struct evnames *e)
{
    for (int i = 0; i < e->n; i++)
        if (event_name_reserved(e->v[i], strlen(e->v[i])))
            return true;
    return false;
}

bool evnames_all_reserved(const struct evnames *e)
{
    for (int i = 0; i < e->n; i++)
        if (!event_name_reserved(e->v[i], strlen(e->v[i])))
            return false;
    return e->n > 0;
}
