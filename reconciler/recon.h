/* The reconciler's context: configuration, its blocking Redis and PostgreSQL connections, and
 * the counts one pass reports. Each check lives in its own file. */
#ifndef WH_RECON_H
#define WH_RECON_H

#include <stdbool.h>

#include <hiredis.h>
#include <libpq-fe.h>

#define RECON_VERSION "0.1.0"

struct recon_cfg {
    char *redis_url;
    char *database_url;
    char *redis_prefix;
    char *log_level;
    char *log_format;
    long partitions;
    long grace_ms;
    long confirm_ms;
    long batch;
    long retention_days;
    long payload_ttl;
    long interval_s;
    bool once;
    bool dry_run;
    char *metrics_listen; /* METRICS_LISTEN: "" (off), host:port or :port */
};

struct recon_counts {
    long scanned;     /* unfinished jobs examined */
    long requeued;    /* queued jobs put back on the stream */
    long rescheduled; /* retrying jobs put back in the retry set */
    long payloads;    /* payloads restored to Redis */
    long index_fixed; /* index entries added or removed */
    long purged;      /* events (with their jobs and attempts) and subscriptions deleted */
    long held;        /* lost jobs of paused subscriptions held again */
    long released;    /* held jobs released: their subscription is not paused */
    long fanouts;     /* events whose listed jobs' rows were written here (decision 54) */
};

struct rclsync;

struct recon {
    struct recon_cfg cfg;
    redisContext *rc;
    struct rclsync *cl; /* instead of rc for a redis-cluster:// URL (decision 48) */
    PGconn *pg;
    struct recon_counts n;
};

/* Sends one Redis command; NULL on a connection error (logged). Caller frees the reply. */
redisReply *recon_redis(struct recon *r, int argc, const char **argv, const size_t *lens);
/* Commands that must see every key (SCAN): the number of Redis servers (the masters of a
 * cluster, else 1) and one command sent to server i, where recon_redis routes by key. */
int recon_redis_servers(const struct recon *r);
redisReply *recon_redis_on(struct recon *r, int i, int argc, const char **argv,
                           const size_t *lens);
/* Runs one statement; NULL on error (logged). Caller PQclear()s. */
PGresult *recon_sql(struct recon *r, const char *sql, int n, const char *const *params);

int recon_index(struct recon *r) __attribute__((warn_unused_result)); /* index.c */
int recon_jobs(struct recon *r) __attribute__((warn_unused_result));  /* jobs.c */
int recon_held(struct recon *r) __attribute__((warn_unused_result));  /* jobs.c */
int recon_purge(struct recon *r) __attribute__((warn_unused_result)); /* purge.c */

#endif
