/* A bounded TTL cache keyed by id: a chained hash table for lookups and one doubly-linked list
 * in put order (oldest at the tail), so expiry sweeps and evictions take the tail. */
#include "ttlcache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "mem.h"

struct entry {
    struct entry *hnext;         /* hash chain */
    struct entry *newer, *older; /* put order */
    char id[ID_LEN];
    int64_t put_ms;
    void *value;
};

struct ttlcache {
    struct entry **buckets;
    uint32_t nbuckets;
    struct entry *newest, *oldest;
    size_t count, max;
    int64_t ttl_ms;
    uint64_t evictions;
    ttlcache_drop_fn *drop;
};

struct ttlcache *ttlcache_new(size_t max_entries, int64_t ttl_ms, ttlcache_drop_fn *drop)
{
    struct ttlcache *c = xcalloc(1, sizeof *c);
    c->max = max_entries ? max_entries : 1;
    c->ttl_ms = ttl_ms;
    c->drop = drop;
    /* about one entry per bucket when full, a power of two from 64 to 65536 */
    c->nbuckets = 64;
    while (c->nbuckets < c->max && c->nbuckets < 65536)
        c->nbuckets *= 2;
    c->buckets = xcalloc(c->nbuckets, sizeof *c->buckets);
    return c;
}

static struct entry **slot(struct ttlcache *c, const char *id)
{
    return &c->buckets[id_partition(id, c->nbuckets)];
}

/* Unlinks e from its chain and the put-order list, drops its value and frees it. */
static void remove_entry(struct ttlcache *c, struct entry *e)
{
    struct entry **pp = slot(c, e->id);
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    c->count--;
    c->drop(e->value);
    free(e);
}

static bool stale(const struct ttlcache *c, const struct entry *e, int64_t now)
{
    return now - e->put_ms > c->ttl_ms;
}

void *ttlcache_get(struct ttlcache *c, const char *id, int64_t now)
{
    for (struct entry *e = *slot(c, id); e; e = e->hnext) {
        if (memcmp(e->id, id, ID_LEN) != 0)
            continue;
        if (stale(c, e, now)) {
            remove_entry(c, e);
            return NULL;
        }
        return e->value;
    }
    return NULL;
}

void ttlcache_put(struct ttlcache *c, const char *id, void *value, int64_t now)
{
    for (struct entry *e = *slot(c, id); e; e = e->hnext) {
        if (memcmp(e->id, id, ID_LEN) == 0) {
            remove_entry(c, e);
            break;
        }
    }
    while (c->count >= c->max) {
        remove_entry(c, c->oldest);
        c->evictions++;
    }
    struct entry *e = xcalloc(1, sizeof *e);
    memcpy(e->id, id, ID_LEN);
    e->put_ms = now;
    e->value = value;
    struct entry **pp = slot(c, id);
    e->hnext = *pp;
    *pp = e;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->count++;
}

size_t ttlcache_sweep(struct ttlcache *c, int64_t now)
{
    size_t n = 0;
    /* put times only grow along the list (a clock going back leaves entries a little longer) */
    while (c->oldest && stale(c, c->oldest, now)) {
        remove_entry(c, c->oldest);
        n++;
    }
    return n;
}

size_t ttlcache_count(const struct ttlcache *c)
{
    return c->count;
}

uint64_t ttlcache_evictions(const struct ttlcache *c)
{
    return c->evictions;
}

void ttlcache_free(struct ttlcache *c)
{
    if (!c)
        return;
    while (c->oldest)
        remove_entry(c, c->oldest);
    free(c->buckets);
    free(c);
}
