/* webhook-broker: configuration, start-up, signals and draining of the HTTP front process. */
#include <curl/curl.h>
#include <event2/event.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <openssl/opensslv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cJSON.h>

#include "api.h"
#include "broker.h"
#include "cfg.h"
#include "clock.h"
#include "evbase.h"
#include "http.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "rekey.h"
#include "schema.h"
#include "subfilter.h"
#include "urlguard.h"
#include "verify.h"

static struct broker broker;

#define C(field) &broker.cfg.field
static const struct cfg_opt opts[] = {
    {"BROKER_LISTEN", "listen", CFG_STR, "127.0.0.1:8080", 0, 0,
     "address and port to listen on (port 0 picks a free one)", C(listen)},
    CFG_OPT_REDIS_URL(C(redis_url)),
    CFG_OPT_DATABASE_URL(C(database_url)),
    CFG_OPT_REDIS_PREFIX(C(redis_prefix)),
    CFG_OPT_PARTITIONS(C(partitions)),
    {"MAX_BODY_BYTES", "max-body-bytes", CFG_INT, "262144", 1024, 16 * 1024 * 1024,
     "largest request body accepted (payloads included)", C(max_body)},
    {"PAYLOAD_TTL", "payload-ttl", CFG_INT, "3600", 60, 30 * 86400,
     "seconds a payload stays cached in Redis (workers fall back to PostgreSQL)",
     C(payload_ttl)},
    {"COMMIT_MAX_EVENTS", "commit-max-events", CFG_INT, "1000", 1, 100000,
     "most events committed to PostgreSQL in one group commit", C(commit_max_events)},
    {"COMMIT_MAX_JOBS", "commit-max-jobs", CFG_INT, "20000", 1, 10000000,
     "most jobs in one group commit (an event with more goes alone)", C(commit_max_jobs)},
    {"COMMIT_MAX_BYTES", "commit-max-bytes", CFG_INT, "8388608", 1024, 1073741824,
     "most bytes (payloads hex-encoded, job URLs and ids) in one group commit (a larger event "
     "goes alone)",
     C(commit_max_bytes)},
    {"MAX_PENDING_EVENTS", "max-pending-events", CFG_INT, "20000", 100, 10000000,
     "triggers waiting for a commit before new ones get 503", C(max_pending_events)},
    {"MAX_PENDING_JOBS", "max-pending-jobs", CFG_INT, "200000", 10, 100000000,
     "jobs of the triggers waiting for a commit before new ones get 503", C(max_pending_jobs)},
    {"MAX_PENDING_BYTES", "max-pending-bytes", CFG_INT, "268435456", 65536, 68719476736,
     "bytes (counted as in COMMIT_MAX_BYTES) of the triggers waiting for a commit before new "
     "ones get 503",
     C(max_pending_bytes)},
    {"FANOUT_DEFER_JOBS", "fanout-defer-jobs", CFG_INT, "200", 0, 10000000,
     "an event with at least this many jobs (and no Idempotency-Key) is answered once it is "
     "committed with its job list; the job rows are written right after (0: never)",
     C(fanout_defer_jobs)},
    {"REQUEST_TIMEOUT", "request-timeout", CFG_MS, "30", 1000, 3600000,
     "seconds an idle client connection is kept", C(request_timeout_ms)},
    {"MAX_CONNECTIONS", "max-connections", CFG_INT, "1024", 1, 1000000,
     "open client connections; the next one is answered 503 and closed", C(max_connections)},
    {"REQUEST_DEADLINE", "request-deadline", CFG_MS, "15", 500, 3600000,
     "seconds from a request's first byte to its last, however slowly it arrives (408 after)",
     C(request_deadline_ms)},
    {"MAX_HEADER_BYTES", "max-header-bytes", CFG_INT, "65536", 1024, 1048576,
     "largest request line + headers in bytes (431 beyond)", C(max_header_bytes)},
    {"MAX_HEADERS", "max-headers", CFG_INT, "100", 8, 10000,
     "most header lines in a request (431 beyond)", C(max_headers)},
    {"MAX_SUBSCRIPTIONS_PER_EVENT", "max-subscriptions-per-event", CFG_INT, "1000", 1, 1000000,
     "active subscriptions one event name may have (a new registration beyond gets 409)",
     C(max_subs_per_event)},
    {"INDEX_REBUILD_PAGE", "index-rebuild-page", CFG_INT, "1000", 1, 100000,
     "subscriptions read and written per page when the event index is rebuilt",
     C(index_rebuild_page)},
    {"RESOLVE_QUEUE_MAX", "resolve-queue-max", CFG_INT, "256", 1, 4096,
     "webhook URL host lookups waiting or under way; a registration beyond gets 503",
     C(resolve_queue_max)},
    {"RESOLVE_TIMEOUT", "resolve-timeout", CFG_MS, "5", 100, 60000,
     "seconds a registration waits for its host lookup (then accepted with a warning; the "
     "worker checks every address it dials)",
     C(resolve_timeout_ms)},
    {"DRAIN_TIMEOUT", "drain-timeout", CFG_MS, "20", 0, 3600000,
     "seconds to finish in-flight requests after SIGTERM", C(drain_timeout_ms)},
    {"WEBHOOK_API_KEYS", "api-keys", CFG_STR, "", 0, 0,
     "comma-separated API keys accepted as 'Authorization: Bearer <key>' on /api/v0/* "
     "(required; 16 to 256 printable characters each)",
     C(api_keys)},
    CFG_OPT_ALLOW_PRIVATE(C(allow_private)),
    CFG_OPT_ALLOWED_CIDRS(C(allowed_cidrs)),
    CFG_OPT_HTTPS_ONLY(C(https_only)),
    CFG_OPT_SECRETS_KEY(C(secrets_key)),
    CFG_OPT_SECRETS_KEY_PREVIOUS(C(secrets_key_previous)),
    {"METRICS_SAMPLE_INTERVAL", "metrics-sample-interval", CFG_MS, "5", 500, 600000,
     "seconds between two samples of the queue and database gauges of /metrics",
     C(metrics_sample_ms)},
    CFG_OPT_LOG_LEVEL(C(log_level)),
    CFG_OPT_LOG_FORMAT(C(log_format)),
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char usage[] =
    "Usage: webhook-broker [options]\n\n"
    "HTTP front of the webhook broker: the management API, the trigger API, /healthz and\n"
    "/readyz. Every option can also be set by the environment variable shown.";

/* The tick's period: the API keys' reload (auth_tick) runs on every tick, so that a key
 * revoked on another broker stops working here within a second. */
#define TICK_MS 250

static struct event *sig_term, *sig_int, *drain_timer, *tick_ev;

/* The one periodic timer: its sub-periods (the metrics' sampling) keep their own schedule. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct broker *b = arg;
    int64_t now = clock_mono_ms();
    sample_tick(b, now);
    if (!b->draining)
        auth_tick(now);
}

void broker_work_done(struct broker *b)
{
    b->outstanding--;
    if (b->draining && b->outstanding <= 0) {
        log_info(NULL, "drained; exiting");
        event_base_loopexit(b->base, NULL);
    }
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct broker *b = arg;
    log_warn(NULL, "drain timeout: exiting with %ld requests or writes unfinished", b->outstanding);
    event_base_loopexit(b->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct broker *b = arg;
    if (b->draining) {
        log_warn(NULL, "second signal %d: exiting now", (int)sig);
        exit(1);
    }
    b->draining = true;
    log_info(NULL, "signal %d: no longer accepting connections; draining %ld requests", (int)sig,
             b->outstanding);
    http_stop_accepting();
    struct timeval tv = {b->cfg.drain_timeout_ms / 1000, (b->cfg.drain_timeout_ms % 1000) * 1000};
    drain_timer = xnonnull(evtimer_new(b->base, on_drain_timeout, b), "evtimer_new");
    evtimer_add(drain_timer, &tv);
    /* a token so that zero outstanding work exits at once */
    b->outstanding++;
    broker_work_done(b);
}

static void on_redis_state(struct rds *r, bool up, void *arg)
{
    (void)r;
    if (up)
        subs_index_ensure(arg);
    else
        subs_index_redis_lost();
}

static void on_pg_state(struct pg *p, bool up, void *arg)
{
    (void)p;
    if (up) {
        subs_index_ensure(arg);
        rekey_start(arg);
        recover_resume(arg);
    }
}

int main(int argc, char **argv)
{
    char err[512];
    int rc = cfg_startup("webhook-broker", opts, NOPTS, argc, argv, usage,
                         "webhook-broker " BROKER_VERSION, &broker.cfg.log_level,
                         &broker.cfg.log_format, &broker.cfg.redis_prefix);
    if (rc >= 0)
        return rc;
    if (secretbox_load(&broker.secrets, broker.cfg.secrets_key, broker.cfg.secrets_key_previous,
                       err, sizeof err) < 0) {
        fprintf(stderr, "webhook-broker: %s\n", err);
        cfg_free(opts, NOPTS);
        return 2;
    }
    if (libmem_init() < 0) {
        fprintf(stderr, "webhook-broker: libcurl initialisation failed\n");
        return 1;
    }
    broker.base = evbase_new();
    if (!broker.base) {
        fprintf(stderr, "webhook-broker: cannot create the event loop\n");
        return 1;
    }
    sample_start(&broker);
    if (urlguard_start(&broker, err, sizeof err) < 0 || verify_start(&broker, err, sizeof err) < 0 ||
        http_start(&broker, err, sizeof err) < 0) {
        fprintf(stderr, "webhook-broker: %s\n", err);
        return 1;
    }
    log_info(NULL,
             "webhook-broker %s starting (libevent %s, hiredis %d.%d.%d, libpq %d, cJSON %s, "
             "%s, schema v%d, %ld partition%s)",
             BROKER_VERSION, event_get_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
             PQlibVersion(), cJSON_Version(), OPENSSL_VERSION_TEXT, schema_version(),
             broker.cfg.partitions, broker.cfg.partitions == 1 ? "" : "s");
    log_info(NULL, "signing secrets encrypted at rest with key %s (%d previous key%s)",
             broker.secrets.keys[0].id, broker.secrets.n - 1, broker.secrets.n == 2 ? "" : "s");
    char *setup = schema_daemon_setup_sql();
    broker.redis = rds_new(broker.base, broker.cfg.redis_url, "redis", on_redis_state, &broker,
                           err, sizeof err);
    if (!broker.redis) {
        fprintf(stderr, "webhook-broker: %s\n", err);
        return 2;
    }
    broker.pg_commit =
        pg_new(broker.base, broker.cfg.database_url, "pg-commit", setup, NULL, NULL);
    broker.pg_fanout =
        pg_new(broker.base, broker.cfg.database_url, "pg-fanout", setup, NULL, NULL);
    broker.pg_api = pg_new(broker.base, broker.cfg.database_url, "pg-api", setup, on_pg_state,
                           &broker);
    auth_start(broker.base, broker.cfg.database_url, setup); /* the API keys' reload */
    free(setup);
    sig_term = xnonnull(evsignal_new(broker.base, SIGTERM, on_signal, &broker), "evsignal_new");
    sig_int = xnonnull(evsignal_new(broker.base, SIGINT, on_signal, &broker), "evsignal_new");
    evsignal_add(sig_term, NULL);
    evsignal_add(sig_int, NULL);
    tick_ev = xnonnull(event_new(broker.base, -1, EV_PERSIST, on_tick, &broker), "event_new");
    struct timeval tick = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    event_add(tick_ev, &tick);

    event_base_dispatch(broker.base);

    /* Connections first: their pending callbacks may still answer requests. */
    rds_free(broker.redis);
    pg_free(broker.pg_commit);
    pg_free(broker.pg_fanout);
    pg_free(broker.pg_api);
    subfilter_free();
    urlguard_stop(); /* answers the registrations still waiting for DNS: before http_free */
    verify_stop();   /* and those still waiting for their endpoint's echo */
    http_free();
    event_free(sig_term);
    event_free(sig_int);
    event_free(tick_ev);
    sample_free();
    auth_free();
    if (drain_timer)
        event_free(drain_timer);
    event_base_free(broker.base);
    cfg_free(opts, NOPTS);
    secretbox_clear(&broker.secrets);
    curl_global_cleanup();
    log_info(NULL, "stopped");
    return 0;
}
