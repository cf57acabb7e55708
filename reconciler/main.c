/* webhook-reconciler: configuration, connections, the advisory lock and the pass loop of the
 * process that repairs Redis from PostgreSQL (run by cron with --once, or with --interval). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "clock.h"
#include "keys.h"
#include "libmem.h"
#include "log.h"
#include "metrics.h"
#include "metricsrv.h"
#include "rclsync.h"
#include "rcluster.h"
#include "rds.h"
#include "recon.h"
#include "schema.h"

#define RECON_LOCK_KEY "7231002"

static struct recon R;
static volatile sig_atomic_t stop;

#define C(field) &R.cfg.field
static const struct cfg_opt opts[] = {
    CFG_OPT_REDIS_URL(C(redis_url)),
    CFG_OPT_DATABASE_URL(C(database_url)),
    CFG_OPT_REDIS_PREFIX(C(redis_prefix)),
    CFG_OPT_PARTITIONS(C(partitions)),
    {"RECONCILE_GRACE", "grace", CFG_MS, "60", 0, 86400000,
     "seconds a job must have been unchanged before it can count as lost (more than "
     "DELIVERY_TIMEOUT + CLAIM_IDLE is safest)",
     C(grace_ms)},
    {"RECONCILE_CONFIRM", "confirm", CFG_MS, "1", 0, 600000,
     "seconds between the two checks that must both find a job missing from Redis",
     C(confirm_ms)},
    {"RECONCILE_BATCH", "batch", CFG_INT, "1000", 10, 100000,
     "rows read or deleted per query", C(batch)},
    {"RETENTION_DAYS", "retention-days", CFG_INT, "30", 1, 36500,
     "days finished events, jobs and attempts are kept", C(retention_days)},
    {"PAYLOAD_TTL", "payload-ttl", CFG_INT, "3600", 60, 30 * 86400,
     "seconds a restored payload stays in Redis", C(payload_ttl)},
    {"RECONCILE_INTERVAL", "interval", CFG_INT, "0", 0, 86400,
     "run a pass every this many seconds (0: one pass, like --once)", C(interval_s)},
    {"RECONCILE_ONCE", "once", CFG_BOOL, "0", 0, 0, "run one pass and exit (for cron)", C(once)},
    {"RECONCILE_DRY_RUN", "dry-run", CFG_BOOL, "0", 0, 0,
     "report what would be repaired, change nothing", C(dry_run)},
    CFG_OPT_METRICS_LISTEN(C(metrics_listen)),
    CFG_OPT_LOG_LEVEL(C(log_level)),
    CFG_OPT_LOG_FORMAT(C(log_format)),
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char usage[] =
    "Usage: webhook-reconciler [--once | --interval SECONDS] [--dry-run] [options]\n\n"
    "Cross-checks the PostgreSQL job log against Redis and repairs Redis: requeues jobs Redis\n"
    "lost, restores payloads, rebuilds the event index, purges data past retention. Safe to run\n"
    "concurrently with itself (advisory lock) and with live traffic.";

redisReply *recon_redis(struct recon *r, int argc, const char **argv, const size_t *lens)
{
    if (r->cl) {
        char err[512];
        redisReply *reply = rclsync_cmd(r->cl, argc, argv, lens, err, sizeof err);
        if (!reply)
            log_error("redis", "%s", err);
        return reply;
    }
    if (!r->rc)
        return NULL;
    redisReply *reply = redisCommandArgv(r->rc, argc, argv, lens);
    if (!reply) {
        log_error("redis", "%s failed: %s", argv[0], r->rc->errstr);
        redisFree(r->rc);
        r->rc = NULL;
    }
    return reply;
}

int recon_redis_servers(const struct recon *r)
{
    return r->cl ? rclsync_masters(r->cl) : 1;
}

redisReply *recon_redis_on(struct recon *r, int i, int argc, const char **argv,
                           const size_t *lens)
{
    if (!r->cl)
        return recon_redis(r, argc, argv, lens);
    char err[512];
    redisReply *reply = rclsync_cmd_master(r->cl, i, argc, argv, lens, err, sizeof err);
    if (!reply)
        log_error("redis", "%s", err);
    return reply;
}

PGresult *recon_sql(struct recon *r, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(r->pg, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char line[512];
        snprintf(line, sizeof line, "%s", PQresultErrorMessage(res));
        line[strcspn(line, "\n")] = '\0';
        log_error("pg", "query failed: %s", line);
        PQclear(res);
        return NULL;
    }
    return res;
}

static bool handshake_ok(const redisReply *rep, const char *cmd, const struct rds_addr *a,
                         char *err, size_t errlen)
{
    if (rep && rep->type != REDIS_REPLY_ERROR)
        return true;
    snprintf(err, errlen, "Redis at %s:%d refused %s: %s", a->host, a->port, cmd,
             rep && rep->str ? rep->str : R.rc->errstr[0] ? R.rc->errstr : "no reply");
    return false;
}

static int connect_pg(char *err, size_t errlen);

static int connect_all(char *err, size_t errlen)
{
    if (rcluster_is_url(R.cfg.redis_url)) {
        R.cl = rclsync_new(R.cfg.redis_url, 30, err, errlen);
        return R.cl ? connect_pg(err, errlen) : -1;
    }
    struct rds_addr a;
    if (rds_parse_url(R.cfg.redis_url, &a, err, errlen) < 0)
        return -1;
    struct timeval tv = {5, 0};
    R.rc = redisConnectWithTimeout(a.host, a.port, tv);
    if (!R.rc || R.rc->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", a.host, a.port,
                 R.rc ? R.rc->errstr : "out of memory");
        free(a.password);
        return -1;
    }
    struct timeval cmd_tv = {30, 0};
    redisSetTimeout(R.rc, cmd_tv);
    /* Checked replies: a wrong password or database stops the pass with a clear reason
     * (Redis's error text never contains the password). */
    bool auth_ok = true;
    if (a.password) {
        redisReply *rep = redisCommand(R.rc, "AUTH %s", a.password);
        auth_ok = handshake_ok(rep, "AUTH", &a, err, errlen);
        freeReplyObject(rep);
    }
    if (auth_ok && a.db) {
        redisReply *rep = redisCommand(R.rc, "SELECT %d", a.db);
        auth_ok = handshake_ok(rep, "SELECT", &a, err, errlen);
        freeReplyObject(rep);
    }
    free(a.password);
    if (!auth_ok)
        return -1;
    return connect_pg(err, errlen);
}

static int connect_pg(char *err, size_t errlen)
{
    R.pg = PQconnectdb(R.cfg.database_url);
    if (PQstatus(R.pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(R.pg));
        err[strcspn(err, "\n")] = '\0';
        return -1;
    }
    char *setup = schema_setup_sql();
    PGresult *res = PQexec(R.pg, setup);
    free(setup);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "database set-up failed: %s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

static void disconnect_all(void)
{
    if (R.rc)
        redisFree(R.rc);
    R.rc = NULL;
    rclsync_free(R.cl);
    R.cl = NULL;
    if (R.pg)
        PQfinish(R.pg);
    R.pg = NULL;
}

/* One pass; 0 when it ran (or another reconciler holds the lock), -1 on failure. */
static int pass(void)
{
    char err[512];
    memset(&R.n, 0, sizeof R.n);
    int connected = connect_all(err, sizeof err);
    /* what this pass found (the connections live only during a pass) */
    metrics_lock();
    metrics_set(M_REDIS_UP, 0, R.cl || (R.rc && !R.rc->err));
    metrics_set(M_POSTGRES_UP, 0, R.pg && PQstatus(R.pg) == CONNECTION_OK);
    metrics_unlock();
    if (connected < 0) {
        log_error(NULL, "%s", err);
        disconnect_all();
        return -1;
    }
    PGresult *res = recon_sql(&R, "SELECT pg_try_advisory_lock(" RECON_LOCK_KEY ")", 0, NULL);
    if (!res) {
        disconnect_all();
        return -1;
    }
    bool locked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!locked) {
        log_info(NULL, "another reconciler holds the lock; skipping this pass");
        disconnect_all();
        return 0;
    }
    int rc = 0;
    if (recon_index(&R) < 0 || recon_jobs(&R) < 0 || recon_held(&R) < 0 || recon_purge(&R) < 0)
        rc = -1;
    /* Released explicitly: the server ends a session (and frees its locks) only some time
     * after the client hung up, so a pass started right after this one would skip. */
    res = recon_sql(&R, "SELECT pg_advisory_unlock(" RECON_LOCK_KEY ")", 0, NULL);
    PQclear(res);
    log_info(NULL,
             "pass %s%s: scanned %ld, requeued %ld, rescheduled %ld, payloads restored %ld, "
             "index entries fixed %ld, purged %ld, held again %ld, released %ld, fan-outs "
             "finished %ld",
             rc == 0 ? "done" : "failed", R.cfg.dry_run ? " (dry run: nothing changed)" : "",
             R.n.scanned, R.n.requeued, R.n.rescheduled, R.n.payloads, R.n.index_fixed,
             R.n.purged, R.n.held, R.n.released, R.n.fanouts);
    disconnect_all();
    return rc;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    int rc = cfg_startup("webhook-reconciler", opts, NOPTS, argc, argv, usage,
                         "webhook-reconciler " RECON_VERSION, &R.cfg.log_level,
                         &R.cfg.log_format, &R.cfg.redis_prefix);
    if (rc >= 0)
        return rc;
    if (libmem_init() < 0) {
        fprintf(stderr, "webhook-reconciler: libcurl initialisation failed\n");
        cfg_free(opts, NOPTS);
        return 1;
    }
    if (R.cfg.once && R.cfg.interval_s) {
        fprintf(stderr, "webhook-reconciler: --once and --interval exclude each other\n");
        cfg_free(opts, NOPTS);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    log_info(NULL, "webhook-reconciler %s (%s, grace %.0f s, retention %ld days%s)",
             RECON_VERSION, R.cfg.interval_s ? "loop" : "one pass", R.cfg.grace_ms / 1000.0,
             R.cfg.retention_days, R.cfg.dry_run ? ", dry run" : "");
    metrics_init(METRICS_RECONCILER, "reconciler", RECON_VERSION, (unsigned)R.cfg.partitions);
    char err[512];
    if (R.cfg.metrics_listen[0] && !R.cfg.interval_s) {
        log_info(NULL, "METRICS_LISTEN is ignored by a single pass (serve it with --interval)");
    } else if (metricsrv_start_thread(R.cfg.metrics_listen, err, sizeof err) < 0) {
        fprintf(stderr, "webhook-reconciler: %s\n", err);
        cfg_free(opts, NOPTS);
        return 2;
    }
    int status = 0;
    do {
        int64_t start_us = clock_mono_us();
        status = pass() < 0 ? 1 : 0;
        metrics_lock();
        metrics_inc(M_RECON_PASSES, status ? MR_FAILED : MR_OK);
        metrics_observe(M_RECON_PASS_DURATION, (double)(clock_mono_us() - start_us) / 1e6);
        if (!status)
            metrics_set(M_RECON_LAST_SUCCESS, 0, (double)clock_now_ms() / 1000);
        if (!R.cfg.dry_run) /* a failed pass's requeues before it stopped happened too */
            metrics_add(M_RECON_REQUEUED, 0, (uint64_t)R.n.requeued);
        metrics_unlock();
        for (long s = 0; R.cfg.interval_s && s < R.cfg.interval_s && !stop; s++)
            sleep(1);
    } while (R.cfg.interval_s && !stop);
    metricsrv_stop_thread();
    cfg_free(opts, NOPTS);
    return status;
}
