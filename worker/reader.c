/* Taking jobs from Redis: XREADGROUP on the partition streams (a blocking read on its own
 * connection; on a Redis Cluster one per partition, each on its own handle), XAUTOCLAIM of entries left pending by dead workers, the retry promoter (one Lua
 * script moves due members of the retry set back to the stream), and group re-creation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "keys.h"
#include "log.h"
#include "worker.h"

#define READ_BLOCK_MS 1000
#define READ_MAX 256
#define PROMOTE_MAX 500

static bool reading;     /* an XREADGROUP is outstanding */
/* Redis Cluster (W.rd_parts): per partition, the COUNT of its outstanding XREADGROUP (0: none),
 * and their sum, taken from the room left under WORKER_CONCURRENCY. */
static long part_reading[256];
static long reserved;
static bool groups_ok;   /* consumer groups known to exist */
static int groups_pending;
static bool promoting;
static int claiming; /* XAUTOCLAIMs outstanding */
static int64_t next_claim_ms;
static char claim_cursor[256][48];

/* Atomically moves due retry members (score <= now) to the stream. */
static const char promote_lua[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2]) "
    "for _, m in ipairs(due) do "
    "  redis.call('XADD', KEYS[2], '*', ARGV[3], m) "
    "  redis.call('ZREM', KEYS[1], m) "
    "end "
    "return #due";

static void group_created(struct rds *r, redisReply *reply, void *priv)
{
    (void)r, (void)priv;
    if (reply && reply->type == REDIS_REPLY_ERROR && !rds_is_error(reply, "BUSYGROUP"))
        log_warn("reader", "cannot create the consumer group: %s", reply->str);
    if (--groups_pending == 0) {
        groups_ok = true;
        if (!W.ready_logged && pg_up(W.pg) && pg_up(W.pg_read)) {
            W.ready_logged = true;
            log_info(NULL, "worker ready: consumer %s, %ld partition%s, concurrency %ld",
                     W.consumer, W.cfg.partitions, W.cfg.partitions == 1 ? "" : "s",
                     W.cfg.concurrency);
        }
        reader_kick();
    }
}

/* (Re)creates the group on every partition, from 0 so entries added before it are read. */
static void ensure_groups(void)
{
    if (groups_pending > 0 || !rds_up(W.rd_cmd))
        return;
    groups_ok = false;
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        char key[KEY_MAX];
        size_t klen = key_jobs(key, p);
        const char *argv[] = {"XGROUP", "CREATE", key, KEYS_GROUP, "0", "MKSTREAM"};
        size_t lens[] = {6, 6, klen, strlen(KEYS_GROUP), 1, 8};
        if (rds_cmd(W.rd_cmd, group_created, NULL, 6, argv, lens) == 0)
            groups_pending++;
    }
}

void reader_redis_up(void)
{
    ensure_groups();
}

/* Turns one stream entry [id, [field, value, ...]] into a job; NULL when malformed. */
static struct job *entry_job(unsigned part, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= 48)
        return NULL;
    const redisReply *f = e->element[1];
    struct job *j = xcalloc(1, sizeof *j);
    j->part = part;
    j->retry_after_ms = -1;
    memcpy(j->entry, e->element[0]->str, e->element[0]->len);
    bool ok = false;
    if (f->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < f->elements; i += 2) {
            if (f->element[i]->type == REDIS_REPLY_STRING &&
                strcmp(f->element[i]->str, KEYS_STREAM_FIELD) == 0 &&
                f->element[i + 1]->type == REDIS_REPLY_STRING) {
                const redisReply *v = f->element[i + 1];
                if (batch_is_msg(v->str, v->len)) { /* a batch (decision 40): batch.c's */
                    batch_take(part, j->entry, v->str, v->len);
                    free(j);
                    return NULL;
                }
                ok = jobmsg_decode(v->str, v->len, &j->m) == 0;
                break;
            }
        }
    }
    if (!ok) {
        /* A poison entry: remove it so it is not read forever (PostgreSQL keeps the job). */
        log_error("reader", "dropping malformed stream entry %s on partition %u", j->entry, part);
        char key[KEY_MAX];
        size_t klen = key_jobs(key, part);
        const char *ack[] = {"XACK", key, KEYS_GROUP, j->entry};
        size_t ackl[] = {4, klen, strlen(KEYS_GROUP), strlen(j->entry)};
        const char *del[] = {"XDEL", key, j->entry};
        size_t dell[] = {4, klen, strlen(j->entry)};
        if (rds_cmd(W.rd_cmd, NULL, NULL, 4, ack, ackl) < 0 ||
            rds_cmd(W.rd_cmd, NULL, NULL, 3, del, dell) < 0)
            log_warn("reader", "could not remove entry %s; it is read again later", j->entry);
        jobmsg_clear(&j->m);
        free(j);
        return NULL;
    }
    return j;
}

static unsigned key_partition(const char *key)
{
    const char *open = strchr(key, '{');
    return open ? (unsigned)strtoul(open + 1, NULL, 10) : 0;
}

bool reader_up(void)
{
    if (!W.rd_parts)
        return rds_up(W.rd_read);
    for (long p = 0; p < W.cfg.partitions; p++)
        if (!rds_up(W.rd_parts[p]))
            return false;
    return true;
}

/* priv: 0 for the one read over every partition, else 1 + the partition (Redis Cluster). */
static void read_done(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    uintptr_t tag = (uintptr_t)priv;
    if (tag) {
        reserved -= part_reading[tag - 1];
        part_reading[tag - 1] = 0;
    } else {
        reading = false;
    }
    if (!reply) {
        return; /* connection lost: reader_kick runs again once it is back */
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (rds_is_error(reply, "NOGROUP") || rds_is_error(reply, "UNBLOCKED")) {
            log_warn("reader", "%s: the job stream or its group is gone; re-creating", reply->str);
            ensure_groups();
        } else {
            log_warn("reader", "XREADGROUP failed: %s", reply->str);
        }
        return;
    }
    struct job *head = NULL, **tail = &head;
    long n = 0;
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t s = 0; s < reply->elements; s++) {
            const redisReply *st = reply->element[s];
            if (st->type != REDIS_REPLY_ARRAY || st->elements != 2)
                continue;
            unsigned part = key_partition(st->element[0]->str);
            const redisReply *entries = st->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                struct job *j = entry_job(part, entries->element[i]);
                if (j) {
                    *tail = j;
                    tail = &j->next;
                    n++;
                }
            }
        }
    }
    W.inflight += n;
    if (head)
        prep_batch(head);
    reader_kick();
}

/* Redis Cluster: one XREADGROUP per partition on its own handle (an XREADGROUP over several
 * streams is CROSSSLOT, even for two partitions of one master), each with a share of the room
 * (at least 1) so the reads together never take more than WORKER_CONCURRENCY. */
static void kick_parts(void)
{
    long room = W.cfg.concurrency - W.inflight - reserved;
    long idle = 0;
    for (long p = 0; p < W.cfg.partitions; p++)
        idle += part_reading[p] == 0;
    if (room <= 0 || idle == 0)
        return;
    long share = (room + idle - 1) / idle;
    if (share > READ_MAX)
        share = READ_MAX;
    struct rargs a = {0};
    char key[KEY_MAX];
    for (long p = 0; p < W.cfg.partitions && room > 0; p++) {
        /* Not rds_up(): that is every master; a read needs only its partition's, and
         * rds_cmd refuses at once when that one is down (a failover elsewhere stalls nothing). */
        if (part_reading[p])
            continue;
        long n = share < room ? share : room;
        rargs_adds(&a, "XREADGROUP");
        rargs_adds(&a, "GROUP");
        rargs_adds(&a, KEYS_GROUP);
        rargs_adds(&a, W.consumer);
        rargs_adds(&a, "COUNT");
        rargs_addll(&a, n);
        rargs_adds(&a, "BLOCK");
        rargs_addll(&a, READ_BLOCK_MS);
        rargs_adds(&a, "STREAMS");
        rargs_add(&a, key, key_jobs(key, (unsigned)p));
        rargs_adds(&a, ">");
        if (rargs_send(&a, W.rd_parts[p], read_done, (void *)(uintptr_t)(p + 1)) == 0) {
            part_reading[p] = n;
            reserved += n;
            room -= n;
        }
    }
    rargs_free(&a);
}

void reader_kick(void)
{
    if (W.draining || !W.switch_known || W.offline || !groups_ok || !pg_up(W.pg) ||
        !pg_up(W.pg_read))
        return;
    if (W.rd_parts) {
        kick_parts();
        return;
    }
    if (reading || !rds_up(W.rd_read))
        return;
    long room = W.cfg.concurrency - W.inflight;
    if (room <= 0)
        return;
    if (room > READ_MAX)
        room = READ_MAX;
    struct rargs a = {0};
    char keys[256][KEY_MAX];
    rargs_adds(&a, "XREADGROUP");
    rargs_adds(&a, "GROUP");
    rargs_adds(&a, KEYS_GROUP);
    rargs_adds(&a, W.consumer);
    rargs_adds(&a, "COUNT");
    rargs_addll(&a, room);
    rargs_adds(&a, "BLOCK");
    rargs_addll(&a, READ_BLOCK_MS);
    rargs_adds(&a, "STREAMS");
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        size_t klen = key_jobs(keys[p], p);
        rargs_add(&a, keys[p], klen);
    }
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++)
        rargs_adds(&a, ">");
    if (rargs_send(&a, W.rd_read, read_done, NULL) == 0)
        reading = true;
    rargs_free(&a);
}

static void claim_done(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    unsigned part = (unsigned)(uintptr_t)priv;
    claiming--;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            log_warn("reader", "XAUTOCLAIM failed: %s", reply->str);
            if (rds_is_error(reply, "NOGROUP"))
                ensure_groups();
        }
        return;
    }
    const redisReply *cursor = reply->element[0];
    if (cursor->type == REDIS_REPLY_STRING && cursor->len < 48)
        memcpy(claim_cursor[part], cursor->str, cursor->len + 1);
    const redisReply *entries = reply->element[1];
    struct job *head = NULL, **tail = &head;
    long n = 0;
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
        struct job *j = entry_job(part, entries->element[i]);
        if (j) {
            *tail = j;
            tail = &j->next;
            n++;
        }
    }
    if (n) {
        log_info("reader", "claimed %ld job%s idle for over %ld ms on partition %u", n,
                 n == 1 ? "" : "s", W.cfg.claim_idle_ms, part);
        W.inflight += n;
        prep_batch(head);
    }
}

/* Claims run when due even if the worker is full: otherwise, under a steady backlog, every
 * freed slot is refilled from the stream first and a dead worker's jobs wait forever. The
 * extra transfers queue inside libcurl, and no new reads happen until in-flight work is back
 * under WORKER_CONCURRENCY. */
static void claim(unsigned part)
{
    long room = W.cfg.concurrency - W.inflight;
    long floor = W.cfg.concurrency < 32 ? W.cfg.concurrency : 32;
    if (room < floor)
        room = floor;
    if (room > READ_MAX)
        room = READ_MAX;
    if (!claim_cursor[part][0])
        memcpy(claim_cursor[part], "0-0", 4);
    char key[KEY_MAX];
    struct rargs a = {0};
    rargs_adds(&a, "XAUTOCLAIM");
    rargs_add(&a, key, key_jobs(key, part));
    rargs_adds(&a, KEYS_GROUP);
    rargs_adds(&a, W.consumer);
    rargs_addll(&a, W.cfg.claim_idle_ms);
    rargs_adds(&a, claim_cursor[part]);
    rargs_adds(&a, "COUNT");
    rargs_addll(&a, room);
    if (rargs_send(&a, W.rd_cmd, claim_done, (void *)(uintptr_t)part) == 0)
        claiming++;
    rargs_free(&a);
}

static void promoted(struct rds *r, redisReply *reply, void *priv)
{
    (void)r, (void)priv;
    promoting = false;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("reader", "retry promotion failed: %s", reply->str);
    else if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        log_debug("reader", "promoted %lld due retries", reply->integer);
}

static void promote(int64_t now_ms)
{
    /* EVAL rather than EVALSHA: an emptied Redis cannot answer NOSCRIPT. */
    struct rargs a = {0};
    char retry[KEY_MAX], jobs[KEY_MAX];
    for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++) {
        rargs_adds(&a, "EVAL");
        rargs_adds(&a, promote_lua);
        rargs_adds(&a, "2");
        rargs_add(&a, retry, key_retry(retry, p));
        rargs_add(&a, jobs, key_jobs(jobs, p));
        rargs_addll(&a, now_ms);
        rargs_addll(&a, PROMOTE_MAX);
        rargs_adds(&a, KEYS_STREAM_FIELD);
        bool last = p + 1 == (unsigned)W.cfg.partitions;
        if (rargs_send(&a, W.rd_cmd, last ? promoted : NULL, NULL) == 0 && last)
            promoting = true;
    }
    rargs_free(&a);
}

void reader_tick(int64_t now_ms)
{
    if (!rds_up(W.rd_cmd))
        return;
    if (!groups_ok) {
        ensure_groups();
        return;
    }
    /* Offline (or not known yet): due retries stay in the retry set and other workers'
     * pending entries stay theirs; both wait, and nothing counts as an attempt. */
    bool may_send = W.switch_known && !W.offline && !W.draining;
    if (!promoting && may_send)
        promote(now_ms);
    if (may_send)
        batch_tick(clock_mono_ms());
    if (may_send && pg_up(W.pg) && pg_up(W.pg_read) && claiming == 0 && now_ms >= next_claim_ms) {
        long period = W.cfg.claim_idle_ms / 4;
        next_claim_ms = now_ms + (period < 1000 ? 1000 : period);
        for (unsigned p = 0; p < (unsigned)W.cfg.partitions; p++)
            claim(p);
    }
    reader_kick();
}

void reader_start(void)
{
    next_claim_ms = clock_now_ms() + 1000;
}
