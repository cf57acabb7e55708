/* webhook-worker: configuration, start-up, the periodic tick, signals and draining of a
 * stateless delivery process. */
#include <cJSON.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "clock.h"
#include "evbase.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "mail.h"
#include "metrics.h"
#include "metricsrv.h"
#include "schema.h"
#include "worker.h"

#define TICK_MS 100

struct worker W;

#define C(field) &W.cfg.field
static const struct cfg_opt opts[] = {
    CFG_OPT_REDIS_URL(C(redis_url)),
    CFG_OPT_DATABASE_URL(C(database_url)),
    CFG_OPT_REDIS_PREFIX(C(redis_prefix)),
    CFG_OPT_PARTITIONS(C(partitions)),
    {"WORKER_CONCURRENCY", "concurrency", CFG_INT, "64", 1, 10000,
     "deliveries in flight at once in this process", C(concurrency)},
    {"RETRY_SCHEDULE", "retry-schedule", CFG_STR, BACKOFF_DEFAULT, 0, 0,
     "seconds to wait before each retry, comma separated (n delays = n + 1 attempts)",
     C(retry_schedule)},
    {"DELIVERY_CONNECT_TIMEOUT", "connect-timeout", CFG_MS, "5", 100, 600000,
     "seconds to establish a connection to a subscriber", C(connect_timeout_ms)},
    {"DELIVERY_TIMEOUT", "timeout", CFG_MS, "15", 100, 600000,
     "seconds for a whole delivery request, response included", C(timeout_ms)},
    {"CLAIM_IDLE", "claim-idle", CFG_MS, "30", 1000, 86400000,
     "seconds a job may sit with a silent worker before another takes it over "
     "(at least DELIVERY_TIMEOUT + 1)",
     C(claim_idle_ms)},
    {"SUBSCRIPTION_CACHE_TTL", "subscription-cache-ttl", CFG_MS, "5", 0, 3600000,
     "seconds a subscription (secret, headers, status) is cached", C(sub_cache_ttl_ms)},
    {"SUBSCRIPTION_CACHE_MAX", "subscription-cache-max", CFG_INT, "10000", 1, 10000000,
     "subscriptions cached at most (the one read longest ago goes first)", C(sub_cache_max)},
    {"DRAIN_TIMEOUT", "drain-timeout", CFG_MS, "20", 0, 3600000,
     "seconds to finish in-flight deliveries after SIGTERM", C(drain_timeout_ms)},
    {"WORKER_NAME", "name", CFG_STR, "", 0, 0,
     "consumer name in the Redis group (default host:pid)", C(consumer)},
    {"BREAKER_FAILURES", "breaker-failures", CFG_INT, "10", 1, 1000000,
     "consecutive failed attempts that open a subscription's circuit (nothing is sent to it "
     "for BREAKER_COOLDOWN, then one probe)",
     C(breaker_failures)},
    {"BREAKER_COOLDOWN", "breaker-cooldown", CFG_INT, "30", 1, 86400,
     "seconds an opened circuit waits before its probe; doubled after each failed probe",
     C(breaker_cooldown)},
    {"BREAKER_COOLDOWN_MAX", "breaker-cooldown-max", CFG_INT, "600", 1, 604800,
     "seconds the doubled cooldown stops at (at least BREAKER_COOLDOWN)", C(breaker_cooldown_max)},
    {"DISABLE_AFTER_HOURS", "disable-after-hours", CFG_STR, "120", 0, 0,
     "hours without a successful delivery after which a failing subscription is disabled "
     "(decimals allowed, e.g. 0.5)",
     C(disable_after_hours)},
    {"SMTP_URL", "smtp-url", CFG_STR, "", 0, 0,
     "SMTP server for mailto: subscriptions to broker.* events, e.g. smtp://127.0.0.1:25 or "
     "smtps://user:password@mail.example.com (empty: their attempts fail)",
     C(smtp_url)},
    {"SMTP_FROM", "smtp-from", CFG_STR, "webhooks@localhost", 0, 0,
     "sender address of e-mail alerts", C(smtp_from)},
    {"PAYLOAD_TTL", "payload-ttl", CFG_INT, "3600", 60, 30 * 86400,
     "seconds an operational event's payload stays in Redis (as the broker's PAYLOAD_TTL)",
     C(payload_ttl)},
    CFG_OPT_ALLOW_PRIVATE(C(allow_private)),
    CFG_OPT_ALLOWED_CIDRS(C(allowed_cidrs)),
    CFG_OPT_HTTPS_ONLY(C(https_only)),
    CFG_OPT_SECRETS_KEY(C(secrets_key)),
    CFG_OPT_SECRETS_KEY_PREVIOUS(C(secrets_key_previous)),
    CFG_OPT_METRICS_LISTEN(C(metrics_listen)),
    CFG_OPT_LOG_LEVEL(C(log_level)),
    CFG_OPT_LOG_FORMAT(C(log_format)),
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char usage[] =
    "Usage: webhook-worker [options]\n\n"
    "Delivery worker of the webhook broker: reads jobs from the Redis streams, POSTs them to\n"
    "subscribers, records every attempt in PostgreSQL and schedules retries. Run as many as\n"
    "needed. Every option can also be set by the environment variable shown.";

static struct event *tick_ev, *sig_term, *sig_int;
static int64_t drain_deadline;

static void maybe_exit(void)
{
    if (!W.draining)
        return;
    if (W.inflight == 0 && outcome_pending() == 0) {
        log_info(NULL, "drained; exiting");
        event_base_loopexit(W.base, NULL);
    } else if (clock_mono_ms() >= drain_deadline) {
        log_warn(NULL, "drain timeout: %ld jobs left pending in Redis for other workers",
                 W.inflight);
        event_base_loopexit(W.base, NULL);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    metrics_set(M_REDIS_UP, 0, rds_up(W.rd_cmd) && reader_up());
    metrics_set(M_POSTGRES_UP, 0, pg_up(W.pg) && pg_up(W.pg_read));
    offline_tick(clock_mono_ms());
    reader_tick(clock_now_ms());
    prep_tick();
    maybe_exit();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    if (W.draining) {
        log_warn(NULL, "second signal %d: exiting now", (int)sig);
        exit(1);
    }
    W.draining = true;
    drain_deadline = clock_mono_ms() + W.cfg.drain_timeout_ms;
    log_info(NULL, "signal %d: no longer taking jobs; finishing %ld in flight", (int)sig,
             W.inflight);
    maybe_exit();
}

static void on_redis_cmd(struct rds *r, bool up, void *arg)
{
    (void)r, (void)arg;
    if (up)
        reader_redis_up();
}

static void on_redis_read(struct rds *r, bool up, void *arg)
{
    (void)r, (void)arg;
    if (up)
        reader_kick();
}

static void on_pg(struct pg *p, bool up, void *arg)
{
    (void)p, (void)arg;
    if (up)
        reader_redis_up();
}

int main(int argc, char **argv)
{
    char err[512];
    int rc = cfg_startup("webhook-worker", opts, NOPTS, argc, argv, usage,
                         "webhook-worker " WORKER_VERSION, &W.cfg.log_level,
                         &W.cfg.log_format, &W.cfg.redis_prefix);
    if (rc >= 0)
        return rc;
    if (secretbox_load(&W.secrets, W.cfg.secrets_key, W.cfg.secrets_key_previous, err,
                       sizeof err) < 0) {
        fprintf(stderr, "webhook-worker: %s\n", err);
        return 2;
    }
    if (backoff_parse(W.cfg.retry_schedule, &W.backoff, err, sizeof err) < 0) {
        fprintf(stderr, "webhook-worker: RETRY_SCHEDULE: %s\n", err);
        return 2;
    }
    if (W.cfg.claim_idle_ms < W.cfg.timeout_ms + 1000) {
        fprintf(stderr,
                "webhook-worker: CLAIM_IDLE (%.1f s) must be at least DELIVERY_TIMEOUT + 1 s "
                "(%.1f s), or slow deliveries would be taken over and sent twice\n",
                W.cfg.claim_idle_ms / 1000.0, (W.cfg.timeout_ms + 1000) / 1000.0);
        return 2;
    }
    if (W.cfg.breaker_cooldown_max < W.cfg.breaker_cooldown) {
        fprintf(stderr, "webhook-worker: BREAKER_COOLDOWN_MAX (%ld) must be at least "
                        "BREAKER_COOLDOWN (%ld)\n",
                W.cfg.breaker_cooldown_max, W.cfg.breaker_cooldown);
        return 2;
    }
    char *end = NULL;
    W.disable_after_hours = strtod(W.cfg.disable_after_hours, &end);
    if (end == W.cfg.disable_after_hours || *end || !(W.disable_after_hours >= 0.0001) ||
        W.disable_after_hours > 100000) {
        fprintf(stderr, "webhook-worker: DISABLE_AFTER_HOURS must be a number of hours from "
                        "0.0001 to 100000 (got \"%s\")\n",
                W.cfg.disable_after_hours);
        return 2;
    }
    if (strchr(W.cfg.smtp_from, '<') || strchr(W.cfg.smtp_from, '>') ||
        strpbrk(W.cfg.smtp_from, "\r\n") || !strchr(W.cfg.smtp_from, '@')) {
        fprintf(stderr, "webhook-worker: SMTP_FROM must be a bare address like "
                        "webhooks@example.com\n");
        return 2;
    }
    if (netguard_init(&W.guard, W.cfg.allow_private, W.cfg.https_only, W.cfg.allowed_cidrs, err,
                      sizeof err) < 0) {
        fprintf(stderr, "webhook-worker: WEBHOOK_ALLOWED_CIDRS: %s\n", err);
        return 2;
    }
    if (W.cfg.consumer[0]) {
        snprintf(W.consumer, sizeof W.consumer, "%s", W.cfg.consumer);
    } else {
        char host[128] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(W.consumer, sizeof W.consumer, "%s:%d", host, (int)getpid());
    }
    if (libmem_init() < 0) {
        fprintf(stderr, "webhook-worker: libcurl initialisation failed\n");
        return 1;
    }
    metrics_init(METRICS_WORKER, "worker", WORKER_VERSION, (unsigned)W.cfg.partitions);
    W.base = evbase_new();
    if (!W.base || deliver_init() < 0) {
        fprintf(stderr, "webhook-worker: cannot create the event loop or libcurl multi handle\n");
        return 1;
    }
    if (metricsrv_start(W.base, W.cfg.metrics_listen, err, sizeof err) < 0) {
        fprintf(stderr, "webhook-worker: %s\n", err);
        return 2;
    }
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    log_info(NULL,
             "webhook-worker %s starting as %s (libevent %s, libcurl %s, hiredis %d.%d.%d, "
             "libpq %d, cJSON %s; %zu attempts, concurrency %ld)",
             WORKER_VERSION, W.consumer, event_get_version(), cv->version, HIREDIS_MAJOR,
             HIREDIS_MINOR, HIREDIS_PATCH, PQlibVersion(), cJSON_Version(), W.backoff.n + 1,
             W.cfg.concurrency);
    char guard[1024];
    netguard_describe(&W.guard, guard, sizeof guard);
    if (W.guard.allow_private)
        log_warn(NULL, "SSRF guard %s", guard);
    else
        log_info(NULL, "SSRF guard %s", guard);
    log_info(NULL, "signing secrets decrypted with key %s and %d previous key%s",
             W.secrets.keys[0].id, W.secrets.n - 1, W.secrets.n == 2 ? "" : "s");
    char *setup = schema_daemon_setup_sql();
    /* The read connection runs only the batch lookups (worker/prep.c, offline.c): key probes
     * whose generic plans are right at every batch size. Left to choose, PostgreSQL costs a
     * generic plan for an array of ten, so it planned the state lookup afresh for every batch
     * of fewer jobs: 0.4 ms of planning for 0.04 ms of execution, at every rate below the
     * workers' capacity (docs/decisions.md 55). */
    char *read_setup = xasprintf("%s SET plan_cache_mode = force_generic_plan;", setup);
    W.pg = pg_new(W.base, W.cfg.database_url, "pg", setup, on_pg, NULL);
    W.pg_read = pg_new(W.base, W.cfg.database_url, "pg-read", read_setup, on_pg, NULL);
    free(read_setup);
    free(setup);
    W.rd_cmd = rds_new(W.base, W.cfg.redis_url, "redis", on_redis_cmd, NULL, err, sizeof err);
    if (W.rd_cmd && rds_is_cluster(W.rd_cmd)) {
        W.rd_parts = xcalloc((size_t)W.cfg.partitions, sizeof *W.rd_parts);
        for (long p = 0; p < W.cfg.partitions; p++) {
            char name[32];
            snprintf(name, sizeof name, "redis-read-%ld", p);
            W.rd_parts[p] = rds_new(W.base, W.cfg.redis_url, name, on_redis_read, NULL, err,
                                    sizeof err);
        }
    } else if (W.rd_cmd) {
        W.rd_read = rds_new(W.base, W.cfg.redis_url, "redis-read", on_redis_read, NULL, err,
                            sizeof err);
    }
    if (!W.rd_read && !W.rd_parts) {
        fprintf(stderr, "webhook-worker: %s\n", err);
        return 2;
    }
    reader_start();
    tick_ev = xnonnull(event_new(W.base, -1, EV_PERSIST, on_tick, NULL), "event_new");
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(tick_ev, &tv);
    sig_term = xnonnull(evsignal_new(W.base, SIGTERM, on_signal, NULL), "evsignal_new");
    sig_int = xnonnull(evsignal_new(W.base, SIGINT, on_signal, NULL), "evsignal_new");
    evsignal_add(sig_term, NULL);
    evsignal_add(sig_int, NULL);

    event_base_dispatch(W.base);

    metricsrv_free();
    deliver_shutdown();
    mail_shutdown();
    rds_free(W.rd_read);
    for (long p = 0; W.rd_parts && p < W.cfg.partitions; p++)
        rds_free(W.rd_parts[p]);
    free(W.rd_parts);
    rds_free(W.rd_cmd);
    pg_free(W.pg);
    pg_free(W.pg_read);
    prep_shutdown(); /* after the connections: their last callbacks may still use the cache */
    event_free(tick_ev);
    event_free(sig_term);
    event_free(sig_int);
    event_base_free(W.base);
    cfg_free(opts, NOPTS);
    secretbox_clear(&W.secrets);
    curl_global_cleanup();
    log_info(NULL, "stopped");
    return 0;
}
