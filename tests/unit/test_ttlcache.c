/* Unit tests for common/ttlcache.c: lookups, expiry on lookup and by sweep, the bound with
 * eviction of the oldest entry, replacement, and that every value is dropped exactly once. */
#include "ttlcache.h"

#include <stdio.h>

#include "ids.h"
#include "unit.h"

#define NVALS 5000

struct val {
    int refs;
    int n;
};

static struct val vals[NVALS];
static long drops, bad_drops;

static void drop(void *v)
{
    struct val *x = v;
    drops++;
    if (--x->refs < 0)
        bad_drops++;
}

/* A valid id for n (distinct per n). */
static void id_of(int n, char *out)
{
    snprintf(out, ID_LEN + 1, "%08x-0000-7000-8000-%012x", (unsigned)n, (unsigned)n * 7u);
}

static void put(struct ttlcache *c, int n, int64_t now)
{
    char id[ID_LEN + 1];
    id_of(n, id);
    vals[n].n = n;
    vals[n].refs++; /* the cache's reference */
    ttlcache_put(c, id, &vals[n], now);
}

static struct val *get(struct ttlcache *c, int n, int64_t now)
{
    char id[ID_LEN + 1];
    id_of(n, id);
    return ttlcache_get(c, id, now);
}

static void reset(void)
{
    memset(vals, 0, sizeof vals);
    drops = bad_drops = 0;
}

static void test_get_and_expiry(void)
{
    reset();
    struct ttlcache *c = ttlcache_new(100, 1000, drop);
    put(c, 1, 0);
    put(c, 2, 500);
    CHECK(get(c, 1, 1000) == &vals[1]); /* exactly ttl old: still fresh */
    CHECK(get(c, 3, 1000) == NULL);
    CHECK(get(c, 1, 1001) == NULL); /* stale: removed on lookup */
    CHECK_EQ_INT(ttlcache_count(c), 1);
    CHECK_EQ_INT(vals[1].refs, 0);
    CHECK(get(c, 2, 1001) == &vals[2]);
    /* replacing an entry drops the old reference and restarts its ttl */
    put(c, 2, 1400);
    CHECK_EQ_INT(vals[2].refs, 1);
    CHECK_EQ_INT(ttlcache_count(c), 1);
    CHECK(get(c, 2, 2300) == &vals[2]);
    ttlcache_free(c);
    CHECK_EQ_INT(vals[2].refs, 0);
    CHECK_EQ_INT(bad_drops, 0);
}

static void test_sweep(void)
{
    reset();
    struct ttlcache *c = ttlcache_new(10000, 100, drop);
    for (int i = 0; i < 1000; i++)
        put(c, i, i); /* put at 0..999 ms */
    CHECK_EQ_INT(ttlcache_sweep(c, 100), 0);
    CHECK_EQ_INT(ttlcache_sweep(c, 600), 500); /* put at 0..499 are older than 100 ms */
    CHECK_EQ_INT(ttlcache_count(c), 500);
    CHECK(get(c, 499, 600) == NULL);
    CHECK(get(c, 500, 600) == &vals[500]);
    /* a re-put entry moves to the young end */
    put(c, 500, 1000);
    CHECK_EQ_INT(ttlcache_sweep(c, 1100), 499);
    CHECK_EQ_INT(ttlcache_count(c), 1);
    CHECK(get(c, 500, 1100) == &vals[500]);
    CHECK_EQ_INT(ttlcache_sweep(c, 5000), 1);
    CHECK_EQ_INT(ttlcache_count(c), 0);
    int held = 0;
    for (int i = 0; i < 1000; i++)
        held += vals[i].refs;
    CHECK_EQ_INT(held, 0);
    CHECK_EQ_INT(drops, 1001);
    CHECK_EQ_INT(bad_drops, 0);
    ttlcache_free(c);
}

static void test_bound(void)
{
    reset();
    struct ttlcache *c = ttlcache_new(100, 1000000, drop);
    for (int i = 0; i < NVALS; i++) {
        put(c, i, i);
        if (ttlcache_count(c) > 100)
            break;
    }
    CHECK_EQ_INT(ttlcache_count(c), 100);
    CHECK_EQ_INT(ttlcache_evictions(c), NVALS - 100);
    /* the newest 100 are the ones kept */
    CHECK(get(c, NVALS - 100 - 1, NVALS) == NULL);
    CHECK(get(c, NVALS - 100, NVALS) == &vals[NVALS - 100]);
    CHECK(get(c, NVALS - 1, NVALS) == &vals[NVALS - 1]);
    int held = 0;
    for (int i = 0; i < NVALS; i++)
        held += vals[i].refs;
    CHECK_EQ_INT(held, 100);
    /* replacing an entry of a full cache evicts nothing */
    put(c, NVALS - 1, NVALS + 1);
    CHECK_EQ_INT(ttlcache_count(c), 100);
    CHECK_EQ_INT(ttlcache_evictions(c), NVALS - 100);
    ttlcache_free(c);
    held = 0;
    for (int i = 0; i < NVALS; i++)
        held += vals[i].refs;
    CHECK_EQ_INT(held, 0);
    CHECK_EQ_INT(bad_drops, 0);
    ttlcache_free(NULL);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_get_and_expiry();
    test_sweep();
    test_bound();
    return unit_done(argv[0]);
}
