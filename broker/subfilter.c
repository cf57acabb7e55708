/* The fan-out's cache of compiled subscription filters and the one payload parse per trigger. */
#include "subfilter.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "filter.h"
#include "log.h"
#include "mem.h"
#include "ttlcache.h"

/* Entries are checked against the text on every use, so the TTL only bounds how long a
 * deleted subscription's filter stays; the count bounds memory (each at most a few KiB). */
#define SUBFILTER_CACHE_MAX 4096
#define SUBFILTER_CACHE_TTL_MS 60000

struct compiled {
    char *text; /* the filter text it was compiled from */
    size_t len;
    struct filter *f; /* NULL: the text is not a valid filter */
};

static struct ttlcache *cache;

static void compiled_drop(void *v)
{
    struct compiled *c = v;
    filter_free(c->f);
    free(c->text);
    free(c);
}

/* The compiled filter of sub for text, borrowed until the next call (NULL when invalid). */
static const struct compiled *compiled_get(const char *sub, const char *text, size_t len,
                                           const char *rid)
{
    int64_t now = clock_mono_ms();
    if (!cache)
        cache = ttlcache_new(SUBFILTER_CACHE_MAX, SUBFILTER_CACHE_TTL_MS, compiled_drop);
    struct compiled *c = ttlcache_get(cache, sub, now);
    if (c && c->len == len && memcmp(c->text, text, len) == 0)
        return c;
    char err[256];
    c = xcalloc(1, sizeof *c);
    c->text = xstrndup(text, len);
    c->len = len;
    c->f = filter_parse(text, len, err, sizeof err);
    if (!c->f)
        log_warn(rid,
                 "subscription %.36s has a filter that cannot be read (%s): it matches "
                 "nothing until it is replaced",
                 sub, err);
    ttlcache_put(cache, sub, c, now);
    return c;
}

bool subfilter_match(struct subfilter_payload *pl, const char *sub, const char *text, size_t len,
                     const char *rid)
{
    const struct compiled *c = compiled_get(sub, text, len, rid);
    if (!c->f)
        return false;
    if (!pl->parsed) {
        pl->parsed = true;
        pl->doc = cJSON_ParseWithLength(pl->p, pl->n);
        if (!pl->doc)
            log_warn(rid, "the payload could not be parsed for the subscription filters: "
                          "filtered subscriptions get no job");
    }
    return pl->doc && filter_match(c->f, pl->doc);
}

void subfilter_payload_done(struct subfilter_payload *pl)
{
    cJSON_Delete(pl->doc);
    pl->doc = NULL;
}

void subfilter_free(void)
{
    ttlcache_free(cache);
    cache = NULL;
}
