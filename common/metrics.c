/* The process's metrics (docs/metrics.md): the static table of families, histogram
 * observation, and rendering in the Prometheus text format 0.0.4. */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>

/* ---- label sets and buckets (docs/metrics.md, exactly) ------------------------------------ */

static const char *const triggers_sets[] = {
    [MT_ACCEPTED] = "result=\"accepted\",reason=\"none\"",
    [MT_BAD_REQUEST] = "result=\"rejected\",reason=\"bad_request\"",
    [MT_UNAUTHORIZED] = "result=\"rejected\",reason=\"unauthorized\"",
    [MT_TOO_LARGE] = "result=\"rejected\",reason=\"too_large\"",
    [MT_CONFLICT] = "result=\"rejected\",reason=\"conflict\"",
    [MT_UNAVAILABLE] = "result=\"rejected\",reason=\"unavailable\"",
};
static const char *const attempts_sets[] = {
    "outcome=\"success\",status_class=\"2xx\"",  "outcome=\"success\",status_class=\"3xx\"",
    "outcome=\"success\",status_class=\"4xx\"",  "outcome=\"success\",status_class=\"5xx\"",
    "outcome=\"success\",status_class=\"none\"", "outcome=\"failure\",status_class=\"2xx\"",
    "outcome=\"failure\",status_class=\"3xx\"",  "outcome=\"failure\",status_class=\"4xx\"",
    "outcome=\"failure\",status_class=\"5xx\"",  "outcome=\"failure\",status_class=\"none\"",
};
static const char *const finished_sets[] = {
    [MF_DELIVERED] = "result=\"delivered\"",
    [MF_DEAD] = "result=\"dead\"",
    [MF_CANCELLED] = "result=\"cancelled\"",
};
static const char *const held_sets[] = {
    [MH_RATE_LIMIT] = "reason=\"rate_limit\"", [MH_CIRCUIT_OPEN] = "reason=\"circuit_open\"",
    [MH_SLOWDOWN] = "reason=\"slowdown\"",     [MH_OFFLINE] = "reason=\"offline\"",
    [MH_PAUSED] = "reason=\"paused\"",         [MH_ORDERED] = "reason=\"ordered\"",
};
static const char *const subs_sets[] = {
    [MS_ACTIVE] = "state=\"active\"",
    [MS_PAUSED] = "state=\"paused\"",
    [MS_DISABLED] = "state=\"disabled\"",
    [MS_CIRCUIT_OPEN] = "state=\"circuit_open\"",
};
static const char *const passes_sets[] = {
    [MR_OK] = "result=\"ok\"", [MR_FAILED] = "result=\"failed\""};
static char build_set[160] = "binary=\"\",version=\"\"";
static const char *const build_sets[] = {build_set};

static const double attempt_b[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double lag_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,   1,
                               2.5,   5,      10,    30,   60,    300,  1800, 3600, 21600, 86400};
static const double commit_dur_b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,   0.25,   0.5,   1};
static const double commit_rows_b[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const double pass_b[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};

#define N(a) (sizeof(a) / sizeof(a)[0])

/* ---- storage ------------------------------------------------------------------------------- */

static uint64_t c_triggers[N(triggers_sets)], c_created[1], c_attempts[N(attempts_sets)],
    c_finished[N(finished_sets)], c_retries[1], c_held[N(held_sets)], c_circuit[1],
    c_passes[N(passes_sets)], c_requeued[1];
static uint64_t h_commit_rows[N(commit_rows_b) + 1], h_commit_dur[N(commit_dur_b) + 1],
    h_attempt[N(attempt_b) + 1], h_lag[N(lag_b) + 1], h_pass[N(pass_b) + 1];
static double g_build[1] = {1}, g_redis[1], g_pg[1], g_stream[METRICS_MAX_PARTITIONS],
              g_pending[METRICS_MAX_PARTITIONS], g_retry[METRICS_MAX_PARTITIONS],
              g_lag[METRICS_MAX_PARTITIONS], g_dead[1], g_subs[N(subs_sets)], g_last_ok[1];
static double s_commit_rows[1], s_commit_dur[1], s_attempt[1], s_lag[1], s_pass[1];

#define B METRICS_BROKER
#define W METRICS_WORKER
#define R METRICS_RECONCILER
#define COUNTER(id, nm, pr, st, store, hp)                                                         \
    [id] = {.name = nm,                                                                            \
            .help = hp,                                                                            \
            .type = METRIC_COUNTER,                                                                \
            .procs = pr,                                                                           \
            .sets = st,                                                                            \
            .nsets = N(store),                                                                     \
            .count = store}
#define GAUGE(id, nm, pr, st, ns, store, hp)                                                       \
    [id] = {.name = nm,                                                                            \
            .help = hp,                                                                            \
            .type = METRIC_GAUGE,                                                                  \
            .procs = pr,                                                                           \
            .sets = st,                                                                            \
            .nsets = ns,                                                                           \
            .value = store}
#define HISTOGRAM(id, nm, pr, bnds, store, sum, hp)                                                \
    [id] = {.name = nm,                                                                            \
            .help = hp,                                                                            \
            .type = METRIC_HISTOGRAM,                                                              \
            .procs = pr,                                                                           \
            .nsets = 1,                                                                            \
            .bounds = bnds,                                                                        \
            .nbounds = N(bnds),                                                                    \
            .count = store,                                                                        \
            .value = sum}
#define PER_PART METRICS_PER_PARTITION

struct metric metrics_tab[M__COUNT] = {
    GAUGE(M_BUILD_INFO, "wh_build_info", METRICS_ALL, build_sets, 1, g_build,
          "Always 1: the binary and its version."),
    GAUGE(M_REDIS_UP, "wh_redis_up", METRICS_ALL, NULL, 1, g_redis,
          "1 when the process's Redis connections are up, else 0."),
    GAUGE(M_POSTGRES_UP, "wh_postgres_up", METRICS_ALL, NULL, 1, g_pg,
          "1 when the process's PostgreSQL connections are up, else 0."),
    COUNTER(M_TRIGGERS, "wh_triggers_total", B, triggers_sets, c_triggers,
            "Answers to POST /api/v0/trigger-event/<name>, by result and reason."),
    COUNTER(M_JOBS_CREATED, "wh_jobs_created_total", B, NULL, c_created,
            "Jobs committed to PostgreSQL and enqueued by triggers, replays, retries and "
            "recoveries."),
    HISTOGRAM(M_PG_COMMIT_BATCH, "wh_pg_commit_batch_size", B | W, commit_rows_b, h_commit_rows,
              s_commit_rows, "Rows per group commit (events + jobs, or outcomes)."),
    HISTOGRAM(M_PG_COMMIT_DURATION, "wh_pg_commit_duration_seconds", B | W, commit_dur_b,
              h_commit_dur, s_commit_dur,
              "Seconds from sending a group commit to PostgreSQL's answer."),
    GAUGE(M_QUEUE_STREAM, "wh_queue_stream_length", B, NULL, PER_PART, g_stream,
          "Entries in the partition's job stream (XLEN), sampled."),
    GAUGE(M_QUEUE_PENDING, "wh_queue_pending", B, NULL, PER_PART, g_pending,
          "Entries read by a worker and not yet acknowledged (XPENDING), sampled."),
    GAUGE(M_QUEUE_RETRY, "wh_queue_retry", B, NULL, PER_PART, g_retry,
          "Jobs waiting in the partition's delayed-retry set (ZCARD), sampled."),
    GAUGE(M_QUEUE_LAG, "wh_queue_lag_seconds", B, NULL, PER_PART, g_lag,
          "Age of the oldest entry still in the partition's stream (0 when empty), sampled."),
    GAUGE(M_JOBS_DEAD, "wh_jobs_dead", B, NULL, 1, g_dead,
          "Dead jobs kept in PostgreSQL, sampled."),
    GAUGE(M_SUBSCRIPTIONS, "wh_subscriptions", B, subs_sets, N(subs_sets), g_subs,
          "Subscriptions (not deleted) by delivery state, sampled."),
    COUNTER(M_ATTEMPTS, "wh_attempts_total", W, attempts_sets, c_attempts,
            "Recorded delivery attempts by outcome and HTTP status class (none: no answer)."),
    COUNTER(M_JOBS_FINISHED, "wh_jobs_finished_total", W, finished_sets, c_finished,
            "Jobs that reached a final state."),
    COUNTER(M_RETRIES, "wh_retries_scheduled_total", W, NULL, c_retries,
            "Failed attempts parked for another attempt."),
    COUNTER(M_JOBS_HELD, "wh_jobs_held_total", W, held_sets, c_held,
            "Times a job was put back without an attempt, by reason."),
    COUNTER(M_CIRCUIT_OPENED, "wh_circuit_opened_total", W, NULL, c_circuit,
            "Circuits this worker opened."),
    HISTOGRAM(M_ATTEMPT_DURATION, "wh_attempt_duration_seconds", W, attempt_b, h_attempt, s_attempt,
              "Seconds of one attempt, from the request's start to its end."),
    HISTOGRAM(M_DELIVERY_LAG, "wh_delivery_lag_seconds", W, lag_b, h_lag, s_lag,
              "Seconds from a job's creation to the end of the attempt that delivered it."),
    COUNTER(M_RECON_PASSES, "wh_reconciler_passes_total", R, passes_sets, c_passes,
            "Reconciler passes run, by result."),
    COUNTER(M_RECON_REQUEUED, "wh_reconciler_requeued_total", R, NULL, c_requeued,
            "Jobs put back on a stream because Redis had lost them."),
    HISTOGRAM(M_RECON_PASS_DURATION, "wh_reconciler_pass_duration_seconds", R, pass_b, h_pass,
              s_pass, "Seconds of one reconciler pass."),
    GAUGE(M_RECON_LAST_SUCCESS, "wh_reconciler_last_success_timestamp_seconds", R, NULL, 1,
          g_last_ok, "Unix time the last successful pass ended (0 before the first)."),
};

static unsigned running = METRICS_ALL;
static unsigned nparts = 1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void metrics_init(unsigned proc, const char *binary, const char *version, unsigned partitions)
{
    running = proc;
    nparts = partitions < 1                        ? 1
             : partitions > METRICS_MAX_PARTITIONS ? METRICS_MAX_PARTITIONS
                                                   : partitions;
    /* binary and version are ours (literals without quotes or backslashes) */
    snprintf(build_set, sizeof build_set, "binary=\"%s\",version=\"%s\"", binary, version);
}

void metrics_observe(enum metric_id id, double v)
{
    struct metric *m = &metrics_tab[id];
    size_t i = 0;
    while (i < m->nbounds && v > m->bounds[i])
        i++;
    m->count[i]++;
    m->value[0] += v;
}

size_t metrics_trigger_set(int status)
{
    if (status >= 200 && status < 300)
        return MT_ACCEPTED;
    if (status == 401 || status == 403)
        return MT_UNAUTHORIZED;
    if (status == 413)
        return MT_TOO_LARGE;
    if (status == 409 || status == 422)
        return MT_CONFLICT;
    if (status == 429 || status >= 500)
        return MT_UNAVAILABLE;
    return MT_BAD_REQUEST; /* 400, 404, 405, 408, 415, 431 and any other */
}

size_t metrics_status_class(long status)
{
    if (status >= 200 && status < 600)
        return (size_t)(status / 100 - 2);
    return MA_NONE;
}

/* ---- rendering ----------------------------------------------------------------------------- */

/* A number as Prometheus reads it: integers without a fraction, others with 15 digits, NaN. */
static void add_double(struct buf *out, double v)
{
    if (isnan(v))
        buf_adds(out, "NaN");
    else if (v > -9e15 && v < 9e15 && v == (double)(int64_t)v)
        buf_printf(out, "%" PRId64, (int64_t)v);
    else
        buf_printf(out, "%.15g", v);
}

static void render_histogram(struct buf *out, const struct metric *m)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= m->nbounds; i++) {
        cum += m->count[i];
        buf_printf(out, "%s_bucket{le=\"", m->name);
        if (i < m->nbounds)
            buf_printf(out, "%.15g", m->bounds[i]);
        else
            buf_adds(out, "+Inf");
        buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    buf_printf(out, "%s_sum ", m->name);
    add_double(out, m->value[0]);
    buf_printf(out, "\n%s_count %" PRIu64 "\n", m->name, cum);
}

static void render_family(struct buf *out, const struct metric *m)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, types[m->type]);
    if (m->type == METRIC_HISTOGRAM) {
        render_histogram(out, m);
        return;
    }
    size_t n = m->nsets == METRICS_PER_PARTITION ? nparts : m->nsets;
    for (size_t i = 0; i < n; i++) {
        buf_adds(out, m->name);
        if (m->nsets == METRICS_PER_PARTITION)
            buf_printf(out, "{partition=\"%zu\"}", i);
        else if (m->sets)
            buf_printf(out, "{%s}", m->sets[i]);
        buf_addc(out, ' ');
        if (m->type == METRIC_COUNTER)
            buf_printf(out, "%" PRIu64, m->count[i]);
        else
            add_double(out, m->value[i]);
        buf_addc(out, '\n');
    }
}

void metrics_render(struct buf *out)
{
    for (size_t i = 0; i < M__COUNT; i++)
        if (metrics_tab[i].procs & running)
            render_family(out, &metrics_tab[i]);
}

void metrics_lock(void)
{
    pthread_mutex_lock(&lock);
}

void metrics_unlock(void)
{
    pthread_mutex_unlock(&lock);
}
