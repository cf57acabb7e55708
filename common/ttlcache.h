/* A bounded cache of reference-counted values keyed by id (ID_LEN text bytes): entries expire
 * ttl_ms after they were put, are swept periodically, and the oldest goes when a put would
 * exceed the maximum count. Single-threaded. */
#ifndef WH_TTLCACHE_H
#define WH_TTLCACHE_H

#include <stddef.h>
#include <stdint.h>

struct ttlcache;

/* Called with a value the cache lets go of (expired, evicted, replaced, freed): drops the
 * cache's reference. */
typedef void ttlcache_drop_fn(void *value);

/* max_entries >= 1; ttl_ms >= 0 (an entry is stale once now - put time > ttl_ms). */
struct ttlcache *ttlcache_new(size_t max_entries, int64_t ttl_ms, ttlcache_drop_fn *drop);

/* The value cached for id (ID_LEN bytes), borrowed: valid until the next call on the cache
 * (take a reference of your own to keep it). NULL when absent or stale (a stale entry is
 * removed then). */
void *ttlcache_get(struct ttlcache *c, const char *id, int64_t now);

/* Caches value for id as of now, taking over one reference the caller holds for the cache. An
 * entry for the same id is replaced; when the cache is full the entry put longest ago goes
 * (counted as an eviction). */
void ttlcache_put(struct ttlcache *c, const char *id, void *value, int64_t now);

/* Removes every stale entry; returns how many. O(removed): entries are kept in put order. */
size_t ttlcache_sweep(struct ttlcache *c, int64_t now);

size_t ttlcache_count(const struct ttlcache *c);
/* Evictions because of max_entries since the cache was made. */
uint64_t ttlcache_evictions(const struct ttlcache *c);

/* Drops every value and frees the cache (NULL is fine). */
void ttlcache_free(struct ttlcache *c);

#endif
