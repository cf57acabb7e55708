/* Redis key names, the one place that formats them. Keys of one partition share the hash tag
 * "{p}" so one MULTI or Lua script may touch them together (Redis Cluster ready). */
#ifndef WH_KEYS_H
#define WH_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define KEY_MAX 512
#define KEYS_GROUP "workers"
#define KEYS_STREAM_FIELD "d"

/* Sets the prefix (default "wh:"); at most 64 bytes. 0 or -1. */
int keys_set_prefix(const char *prefix) __attribute__((warn_unused_result));

/* Redis Cluster mode (set at start-up when REDIS_URL is redis-cluster://, common/cfg.c): the
 * event index keys carry the ready mark's hash tag, {wh:index-ready}:event:<name> and
 * {wh:index-ready}:event:@<tenant>:<name>, so the whole index lives in the ready mark's slot
 * and a master that loses its data loses the index and the mark together (decision 48). The
 * mark itself is then {wh:index-ready}:ready (same slot): a cluster that still holds the mark of
 * the untagged index of before (wh:index-ready) is not trusted over the empty tagged index,
 * so upgraded brokers rebuild. Off: the keys below, byte for byte. */
void keys_set_cluster(bool on);

/* Each writes a NUL-terminated key into out (KEY_MAX bytes) and returns its length. */
/* hash url -> subscription JSON (decision 39) of one event name or pattern: wh:event:<name> for
 * global subscriptions (tenant NULL or ""), wh:event:@<tenant>:<name> for a tenant's (decision
 * 44: '@' is not in the event-name charset and ':' not in the tenant's, so the two never meet
 * and the split is unambiguous). */
size_t key_event(char *out, const char *tenant, const char *name, size_t namelen);
/* The inverse for a key SCAN found: 0 with the tenant ("" for a global entry) in tenant
 * (TENANT_ID_MAX + 1 bytes, common/valid.h) and *name pointing into key (its length in *namelen); -1 when key
 * is not an event index key of this prefix or its tenant part is malformed. */
int key_event_parse(const char *key, size_t klen, char *tenant, const char **name,
                    size_t *namelen) __attribute__((warn_unused_result));
size_t key_index_ready(char *out);                   /* string: the event index is complete */
/* string: the token of the index rebuild under way; hash tag {<ready key>}, so it shares the
 * ready mark's slot and one script may touch both (the prefix has no braces). */
size_t key_index_rebuild(char *out);
/* string: set ("1") once any prefix pattern or "*" has been written into the event index
 * (decision 39): triggers read the pattern hashes only when it is there. Written before each
 * pattern entry, never removed (a Redis that lost its data loses it with the index, and the
 * rebuild sets it again before the ready mark); the hash tag of the ready mark, like the
 * rebuild token. */
size_t key_index_patterns(char *out);
size_t key_jobs(char *out, unsigned part);           /* stream of jobs to run */
size_t key_retry(char *out, unsigned part);          /* zset: due ms -> job message */
size_t key_live(char *out, unsigned part);           /* set: job ids Redis holds */
size_t key_dead(char *out, unsigned part);           /* stream: jobs out of attempts */
size_t key_payload(char *out, unsigned part, const char *event_id); /* string payload */
/* Per-subscription state in the subscription's partition (id_partition of its id):
 * ctl: hash, the delivery state workers and brokers share ("st": "paused" | "active", written
 *   by the broker after PostgreSQL; the probe lock of the circuit breaker, also an ordered
 *   subscription's one-attempt-at-a-time lock; "ofin", the last finished job of an ordered one);
 * held: zset, the messages of a paused subscription's waiting jobs (and of an ordered one's
 *   jobs waiting for their turn), all with score 0 so they sort by message, i.e. by job id
 *   (UUIDv7: creation order);
 * held-subs: set, per partition, the subscriptions that have a held zset;
 * rate: the rate limiter's reservations (common/controls.h). */
size_t key_ctl(char *out, unsigned part, const char *sub_id);
size_t key_held(char *out, unsigned part, const char *sub_id);
size_t key_held_subs(char *out, unsigned part);
size_t key_rate(char *out, unsigned part, const char *sub_id);
/* Batching (docs/decisions.md 40), in the subscription's partition:
 * batch-pend: zset, the messages of a batching subscription's jobs waiting to be sent in a
 *   batch, scored by the Redis time (ms) they were parked (sub_id "" gives the prefix the
 *   workers' periodic script appends each subscription id to);
 * batch-subs: set, per partition, the subscriptions with a batch-pend zset. */
size_t key_batch_pend(char *out, unsigned part, const char *sub_id);
size_t key_batch_subs(char *out, unsigned part);

#endif
