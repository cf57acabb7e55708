/* The broker's process-wide context: configuration, the event loop and its connections. */
#ifndef WH_BROKER_H
#define WH_BROKER_H

#include <stdbool.h>

#include <event2/event.h>

#include "pg.h"
#include "rds.h"
#include "secretbox.h"

#define BROKER_VERSION "0.1.0"

struct broker_cfg {
    char *listen;
    char *redis_url;
    char *database_url;
    char *redis_prefix;
    char *log_level;
    char *log_format;
    char *api_keys;
    char *allowed_cidrs;
    char *secrets_key;          /* wiped once parsed */
    char *secrets_key_previous; /* wiped once parsed */
    bool allow_private;
    bool https_only;
    long partitions;
    long max_body;
    long payload_ttl;
    long commit_max_events;
    long commit_max_jobs;
    long commit_max_bytes;
    long max_pending_events;
    long max_pending_jobs;
    long max_pending_bytes;
    long fanout_defer_jobs;
    long max_connections;
    long request_deadline_ms;
    long max_header_bytes;
    long max_headers;
    long max_subs_per_event;
    long index_rebuild_page;
    long resolve_queue_max;
    long resolve_timeout_ms;
    long drain_timeout_ms;
    long request_timeout_ms;
    long metrics_sample_ms;
};

struct broker {
    struct event_base *base;
    struct broker_cfg cfg;
    struct rds *redis;
    struct pg *pg_commit;     /* group commits of triggered events */
    struct pg *pg_api;        /* management reads and writes */
    struct pg *pg_fanout;     /* the job rows of deferred fan-outs (decision 54) */
    struct secretbox secrets; /* SECRETS_KEY and SECRETS_KEY_PREVIOUS */
    bool draining;
    long outstanding; /* requests and Redis writes still to finish before exit */
};

/* Called whenever an outstanding piece of work finishes; exits the loop when draining. */
void broker_work_done(struct broker *b);

#endif
