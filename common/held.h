/* The held protocol: where the jobs of a paused subscription wait, and the scripts that write
 * its state (docs/decisions.md 24). The one place the broker and the reconciler take them from.
 *
 * Keys, all in the subscription's partition p = id_partition(sub, QUEUE_PARTITIONS) (the
 * partition of every job of the subscription, so one script touches them together):
 * - ctl (hash, key_ctl): field "st" = "paused" | "active", and field "v" = the version of the
 *   PostgreSQL update that wrote st (its updated_at in microseconds since the epoch). Written
 *   by the broker after PostgreSQL, only by these scripts, and never with an older version
 *   than the one stored (two PATCHes racing cannot leave Redis with the older state). Read
 *   only when PostgreSQL says paused: a missing st (Redis lost its data) counts as paused.
 * - held (zset, key_held): the job messages (common/jobmsg.h, the same bytes the stream entry
 *   had, for the same attempt) of the subscription's waiting jobs, every one with score 0, so
 *   they sort by message, i.e. by job id ({"j":"<UUIDv7>",... first): creation order.
 * - held-subs (set, key_held_subs, per partition): the subscriptions with a held zset.
 * A held job stays a member of the partition's live set: the reconciler sees it as live.
 * An ordered subscription's jobs waiting for their turn (docs/decisions.md 33, worker/gate.c)
 * are members of the same zset, and ctl's field "ofin" is the largest job id of the
 * subscription that reached a final state; every release below also releases them (the worker
 * compares each with the head again).
 *
 * Worker ("park", worker/gate.c): a job read from the stream whose subscription PostgreSQL
 * calls paused (read with the batch) is parked by one script on the job's partition: if
 * HGET ctl st == "active" (a resume raced with the read), the message goes to the retry set
 * due now; else ZADD held 0 <message> and SADD held-subs <sub>. Either way the job stays in
 * live, and the stream entry is acked and deleted like any parked job.
 *
 * Broker (broker/pause.c), after the PostgreSQL update of a PATCH that sets "status":
 * "paused": held_pause_cmd (st = paused); "active": held_release_cmd until it returns 0.
 * Reconciler: held_release_cmd without a version (st untouched: its view of PostgreSQL may be
 * older than a PATCH's) for held zsets whose subscription PostgreSQL does not call paused
 * (active, disabled or deleted: the worker then delivers or cancels them; an active ordered
 * one only while its smallest member is at or below its head, a lost release); and a lost job of a
 * paused subscription is held again (ZADD held 0 + SADD held-subs + SADD live), not enqueued. */
#ifndef WH_HELD_H
#define WH_HELD_H

#include <stddef.h>

#include "ids.h"
#include "keys.h"

/* Messages moved from held to the stream per script call (the broker's and reconciler's). */
#define HELD_RELEASE_CHUNK 1000

/* An EVAL command ready for rds_cmd or redisCommandArgv; owns its argument storage. */
struct held_cmd {
    int argc;
    const char *argv[12];
    size_t lens[12];
    char keys[4][KEY_MAX];
    char sub[ID_LEN + 1];
    char num[24];
    char version[24];
};

/* st = paused for subscription sub (a valid id) in partition part, at version (decimal
 * microseconds), unless ctl holds a newer version. Reply: 1 written, 0 older (ignored). */
void held_pause_cmd(struct held_cmd *c, unsigned part, const char *sub, long long version);

/* The release: with version >= 0, st = active at that version first (a newer stored version:
 * nothing is done, reply 0); version < 0 leaves ctl alone. Then up to max messages of held,
 * lowest first, are added to the partition's job stream (XADD <jobs> * d <message>) and
 * removed from held; an empty held is deleted and the subscription removed from held-subs.
 * Reply: the number of messages still held (call again until 0). */
void held_release_cmd(struct held_cmd *c, unsigned part, const char *sub, long max,
                      long long version);

#endif
