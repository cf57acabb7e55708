/* The worker's process-wide context and the job record that moves through its stages:
 * reader (Redis stream) -> prep (payload, subscription) -> deliver (libcurl) -> outcome
 * (PostgreSQL, then Redis). */
#ifndef WH_WORKER_H
#define WH_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "backoff.h"
#include "controls.h"
#include "dialguard.h"
#include "gcommit.h"
#include "jobmsg.h"
#include "mem.h"
#include "netguard.h"
#include "pg.h"
#include "rds.h"
#include "secretbox.h"
#include "shape.h"
#include "sign.h"

#define WORKER_VERSION "0.1.0"
#define EXCERPT_MAX 1024

struct worker_cfg {
    char *redis_url;
    char *database_url;
    char *redis_prefix;
    char *log_level;
    char *log_format;
    char *retry_schedule;
    char *consumer;
    char *allowed_cidrs;
    char *secrets_key;          /* wiped once parsed */
    char *secrets_key_previous; /* wiped once parsed */
    bool allow_private;
    bool https_only;
    long partitions;
    long concurrency;
    long connect_timeout_ms;
    long timeout_ms;
    long claim_idle_ms;
    long drain_timeout_ms;
    long sub_cache_ttl_ms;
    long sub_cache_max;
    /* subscription health and operational events (outcome.c, opevents.c, mail.c) */
    long breaker_failures;
    long breaker_cooldown;     /* seconds */
    long breaker_cooldown_max; /* seconds */
    char *disable_after_hours; /* parsed into W.disable_after_hours */
    char *smtp_url;            /* "": mailto: attempts fail */
    char *smtp_from;
    long payload_ttl; /* seconds an operational event's payload stays in Redis */
    char *metrics_listen; /* METRICS_LISTEN: "" (off), host:port or :port */
};

struct worker {
    struct event_base *base;
    struct worker_cfg cfg;
    struct backoff backoff;
    struct netguard guard; /* checked on every address dialled */
    struct secretbox secrets; /* opens the signing secrets read from PostgreSQL */
    char consumer[160];
    struct rds *rd_read; /* blocking XREADGROUP only */
    /* Redis Cluster (redis-cluster:// URL): one blocking-read handle per partition instead of
     * rd_read (an XREADGROUP may not span slots; decision 48); NULL otherwise. */
    struct rds **rd_parts;
    struct rds *rd_cmd;  /* everything else */
    struct pg *pg;      /* outcome writes (each a commit) */
    struct pg *pg_read; /* lookups before sending: never queued behind a commit */
    long inflight; /* jobs taken from Redis and not yet finished */
    /* The global delivery switch as last read from PostgreSQL (offline.c). Nothing is read,
     * claimed or promoted until it is known, nor while it is offline. */
    bool switch_known;
    bool offline;
    bool draining;
    bool ready_logged;
    double disable_after_hours; /* DISABLE_AFTER_HOURS */
};

extern struct worker W;

/* A shared payload (several jobs of one event). */
struct payload {
    int refs;
    size_t len;
    char data[];
};

/* A subscription as the worker needs it (cached). */
struct sub {
    int refs;
    bool active;
    unsigned char key[SECRET_MAX_BYTES];
    int keylen; /* -1: the stored secret cannot be decrypted or decoded; nothing is sent */
    /* The secret a rotation replaced signs too until prev_expires_ms (wall clock), compared when
     * each request is signed, not when the subscription was cached. prev_keylen 0: none. */
    unsigned char prev_key[SECRET_MAX_BYTES];
    int prev_keylen;
    int64_t prev_expires_ms;
    struct curl_slist *headers; /* the subscriber's custom headers, "Name: value" */
};

/* A subscription's delivery state and settings as PostgreSQL had them when a batch's job states
 * were read (prep.c): shared by that batch's jobs of the subscription, never cached, so a change
 * applies to every job read after it. */
struct subctl {
    int refs;
    bool gone;             /* deleted, or no row */
    bool disabled;         /* disabled_at set: its jobs are cancelled */
    bool paused;           /* paused_at set: its jobs wait in the held zset */
    char *url;             /* the webhook URL now (owned) */
    char *disabled_reason; /* owned; NULL: none */
    long timeout_ms;       /* the whole request; 0: DELIVERY_TIMEOUT */
    bool has_rate;
    bool has_retry;
    struct rate_limit rate;
    struct backoff retry;
    int64_t circuit_open_until_ms; /* 0: closed (NULL) */
    int64_t slow_until_ms;         /* 0: none */
    /* payload shape (decision 31): both default (SHAPE_RAW, NULL) send the payload as is */
    enum shape shape;
    char *fields; /* payloadFields' canonical text (owned); NULL: none (or empty) */
    size_t fields_len;
    /* ordered delivery (decision 33): only the head, the subscription's oldest unfinished job
     * (smallest id among its queued and retrying jobs) as of the batch's read, is attempted */
    bool ordered;
    char head[ID_LEN + 1]; /* "" when not ordered */
    struct batching batch; /* batching (decision 40); batch.max 0: off */
};

void subctl_unref(struct subctl *c);

enum outcome {
    OUT_NONE = 0,
    OUT_DELIVERED, /* 2xx */
    OUT_RETRY,     /* failed; another attempt at next_ms */
    OUT_DEAD,      /* failed; no attempts left */
    OUT_CANCELLED, /* subscription gone */
    OUT_SKIP,      /* already finished in PostgreSQL: only clean Redis up */
    OUT_RESCHED,   /* this attempt was already recorded as failed: just re-park it */
    OUT_HOLD,      /* not attempted now (delivery offline, the subscription slowed or its circuit
                    * open, the rate limit): parked in the retry set due at next_ms, same
                    * attempt, nothing recorded */
    OUT_PAUSED,    /* the subscription is paused: parked in its held zset, same attempt,
                    * nothing recorded (docs/decisions.md 24, the held protocol) */
    OUT_WAIT,      /* an ordered subscription's job that is not its head: waits in the held
                    * zset for the head to finish, same attempt, nothing recorded
                    * (docs/decisions.md 33) */
    OUT_BATCH,     /* a batching subscription's job: waits in its batch-pend zset to be sent
                    * in a batch (worker/batch.c), same attempt, nothing recorded
                    * (docs/decisions.md 40) */
};

struct job {
    struct job *next;
    struct gcommit_node gc; /* outcome.c: its commit queue, then its batch */
    unsigned part;
    char entry[48]; /* stream entry id */
    struct job_msg m;
    struct payload *payload;
    struct sub *sub;
    struct subctl *ctl;    /* set by the job-state lookup; NULL when the job was not found */
    bool probe; /* holds the probe lock (circuit breaker's probe, or an ordered subscription's
                 * head: one attempt at a time); released once recorded */
    struct event *wait_ev; /* gate.c: waiting in memory for its rate-limit slot */
    struct job *wait_prev, *wait_next;
    /* attempt result */
    enum outcome out;
    int64_t started_ms;
    long duration_ms;
    long status_code; /* 0: no HTTP response */
    char error[256];
    struct dialguard dial; /* what the SSRF guard did to this attempt's dials */
    struct buf excerpt;
    long retry_after_ms; /* -1: none */
    int64_t next_ms;     /* due time of the next attempt */
    CURL *easy;
    struct curl_slist *req_headers;
    struct job *xfer_prev, *xfer_next; /* deliver.c's list of transfers, while easy is set */
    struct buf body; /* deliver.c: the shaped body sent and signed; empty for the payload as is */
    struct wbatch *batch; /* batch.c: this is the delivery of a batch, not of one job; owned */
};

void job_free(struct job *j);
/* The URL to deliver to: the subscription's as read with the batch, else the message's. */
static inline const char *job_url(const struct job *j)
{
    return j->ctl && j->ctl->url ? j->ctl->url : j->m.url;
}
void payload_unref(struct payload *p);
void sub_unref(struct sub *s);

/* reader.c */
void reader_start(void);
void reader_kick(void);            /* read more if there is room */
bool reader_up(void);              /* the read connection(s) are up */
void reader_tick(int64_t now_ms);  /* retry promotion and claiming */
void reader_redis_up(void);

/* prep.c: resolves payloads and subscriptions for a batch, then delivers or finishes each. */
void prep_batch(struct job *jobs);
void prep_tick(void);     /* sweeps stale subscriptions out of the cache (its own sub-period) */
void prep_shutdown(void); /* frees the subscription cache */

/* gate.c: what is decided in Redis just before an attempt, shared by every worker: the circuit
 * breaker's probe lock and the per-subscription rate limiter (a slot per attempt, reserved in
 * one script call per subscription per batch). Jobs are added while a batch is dispatched and
 * decided by gate_flush; each is then started (at once, or at its slot by a timer), or parked. */
void gate_add(struct job *j, bool half_open); /* half_open also for an ordered head (the lock) */
void gate_flush(void);
/* Sends on W.rd_cmd (inside finalize's MULTI) the held-protocol script that parks j
 * (OUT_PAUSED) in its subscription's held zset, its member msg[0..len) (the job message of the
 * same attempt). false when it could not be sent. */
bool gate_send_hold(const struct job *j, const char *msg, size_t len);
/* Sends the script that releases j's probe lock, if j still holds it (its token: the job id, or
 * for an ordered subscription's head the job id, the worker and the stream entry). */
bool gate_send_probe_release(const struct job *j);
/* Ordered delivery (decision 33), inside finalize's MULTI. gate_send_wait parks j (OUT_WAIT,
 * message msg[0..len)) in its subscription's held zset unless the head it was compared with
 * has finished since (then back on the stream, to be compared again). gate_send_next, for a
 * job of an ordered subscription that reached a final state: records it as finished and moves
 * the smallest waiting message to the stream. false when it could not be sent. */
bool gate_send_wait(const struct job *j, const char *msg, size_t len);
bool gate_send_next(const struct job *j);
/* After the loop ended: frees the jobs waiting for their slot (they stay pending in Redis). */
void gate_shutdown(void);

/* batch.c: batching (docs/decisions.md 40). The jobs of a batching subscription are parked in
 * its batch-pend zset (batch_send_park, in finalize's MULTI); a script forms a batch (up to
 * maxSize messages) when maxSize are waiting or the oldest has waited maxIntervalSeconds, on
 * park and on the periodic tick, and puts it on the job stream as one message {"b": batch id,
 * "s", "a": attempt, "j": [job messages]}. A worker that reads it records the batch and claims
 * its jobs in PostgreSQL (jobs.batch_id, conditional), sends one signed POST of their envelopes,
 * and records one attempt per job; a failed batch goes to the retry set as a unit. */
bool batch_is_msg(const char *msg, size_t len);
/* A batch message read from the stream (entry entry of partition part): takes it (counts in
 * W.inflight until finished). */
void batch_take(unsigned part, const char *entry, const char *msg, size_t len);
bool batch_send_park(const struct job *j, const char *msg, size_t len);
void batch_tick(int64_t now_mono_ms); /* forms the batches whose oldest job is due */
void batch_outcome(struct job *j);     /* outcome_submit of a batch's delivery job */
void batch_free(struct wbatch *b);
/* prep.c: a subscription's signing secrets and headers from columns c..c+5 of row i (id, status,
 * secret, headers, previous secret still valid, its expiry ms), as prep's own lookup reads them.
 * refs 0: the caller takes its reference. */
struct sub *prep_sub_from_row(PGresult *res, int i, int c);

/* offline.c: the global delivery switch. */
void offline_tick(int64_t now_mono_ms); /* reads it every OFFLINE_POLL_MS */
/* What PostgreSQL said (the tick's read, or a batch's job-state lookup): logs a change, and
 * going online lets the reader read again. */
void offline_seen(bool offline);

/* deliver.c */
int deliver_init(void) __attribute__((warn_unused_result));
void deliver_start(struct job *j);
/* Runs another module's transfer e for j on the multi handle (mail.c); its completion goes
 * back to that module. 0, or -1 with the reason in j->error (e is then the caller's). */
int deliver_add(struct job *j, CURL *e) __attribute__((warn_unused_result));
/* After the loop ended: frees the transfers still running (a drain timeout: their jobs stay
 * pending in Redis and are claimed again), the handle pool and libcurl's multi handle. */
void deliver_shutdown(void);

/* outcome.c: records a finished job (group commit), then cleans Redis and frees it. */
void outcome_submit(struct job *j);
/* Decides retry or dead for a failed attempt and submits it. */
void outcome_failed(struct job *j);
long outcome_pending(void);
/* Counts one recorded outcome out of job job_id in the metrics (docs/metrics.md), from the
 * attempt in j (its status code, start and duration): a few adds. */
void outcome_count(enum outcome out, const struct job *j, const char *job_id);
/* The outcome statement from its CTE "f" on (the subscriptions' health, the operational events,
 * the rollups and the final SELECT; decisions 26 and 29), for batch.c's own statement, which
 * defines u (the jobs it updated, with the columns of this statement's u) before it. Valid for
 * the process's life. */
const char *outcome_sql_tail(void);
/* Drops a job without touching Redis: it stays pending and is claimed again later. */
void job_abandon(struct job *j, const char *why);

#endif
