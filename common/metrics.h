/* The process's metrics (docs/metrics.md): one static table of counters, gauges and histograms
 * with fixed label sets, updated by an array index and an add, rendered in the Prometheus text
 * format 0.0.4. */
#ifndef WH_METRICS_H
#define WH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"

/* Which processes export a family (a bit mask; metrics_init names the running one). */
enum {
    METRICS_BROKER = 1,
    METRICS_WORKER = 2,
    METRICS_RECONCILER = 4,
    METRICS_ALL = 7,
};

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* Every family of docs/metrics.md, in its order. */
enum metric_id {
    M_BUILD_INFO,
    M_REDIS_UP,
    M_POSTGRES_UP,
    M_TRIGGERS,
    M_JOBS_CREATED,
    M_PG_COMMIT_BATCH,
    M_PG_COMMIT_DURATION,
    M_QUEUE_STREAM,
    M_QUEUE_PENDING,
    M_QUEUE_RETRY,
    M_QUEUE_LAG,
    M_JOBS_DEAD,
    M_SUBSCRIPTIONS,
    M_ATTEMPTS,
    M_JOBS_FINISHED,
    M_RETRIES,
    M_JOBS_HELD,
    M_CIRCUIT_OPENED,
    M_ATTEMPT_DURATION,
    M_DELIVERY_LAG,
    M_RECON_PASSES,
    M_RECON_REQUEUED,
    M_RECON_PASS_DURATION,
    M_RECON_LAST_SUCCESS,
    M__COUNT
};

/* Label sets: the index of a series within its family. */
enum { MT_ACCEPTED, MT_BAD_REQUEST, MT_UNAUTHORIZED, MT_TOO_LARGE, MT_CONFLICT, MT_UNAVAILABLE };
enum { MA_2XX, MA_3XX, MA_4XX, MA_5XX, MA_NONE, MA_CLASSES }; /* wh_attempts_total: */
#define MA_SUCCESS(cls) (cls)                                 /* outcome="success" */
#define MA_FAILURE(cls) (MA_CLASSES + (cls))                  /* outcome="failure" */
enum { MF_DELIVERED, MF_DEAD, MF_CANCELLED };
enum { MH_RATE_LIMIT, MH_CIRCUIT_OPEN, MH_SLOWDOWN, MH_OFFLINE, MH_PAUSED, MH_ORDERED };
enum { MS_ACTIVE, MS_PAUSED, MS_DISABLED, MS_CIRCUIT_OPEN };
enum { MR_OK, MR_FAILED };

#define METRICS_PER_PARTITION ((size_t)-1) /* nsets of a family labelled by partition */
#define METRICS_MAX_PARTITIONS 256

/* One family. Storage is static (zero before metrics_init, so a module that counts works in a
 * unit test without it): count[] holds a counter per label set, or a histogram's per-bucket
 * (not cumulative) counts, the last for +Inf; value[] a gauge per label set, or a histogram's
 * sum in value[0]. */
struct metric {
    const char *name, *help;
    enum metric_type type;
    unsigned procs;
    const char *const *sets; /* rendered label sets ("a=\"x\",b=\"y\""); NULL: one, no labels */
    size_t nsets;            /* or METRICS_PER_PARTITION */
    const double *bounds;    /* histograms: upper bounds, ascending */
    size_t nbounds;
    uint64_t *count;
    double *value;
};

extern struct metric metrics_tab[M__COUNT];

/* Names the running process (one of METRICS_BROKER...; wh_build_info's binary label and
 * version) and the number of partitions the per-partition gauges render. */
void metrics_init(unsigned proc, const char *binary, const char *version, unsigned partitions);

/* The hot path: no allocation, no lock, no system call. set is the label set's index. */
static inline void metrics_inc(enum metric_id id, size_t set)
{
    metrics_tab[id].count[set]++;
}
static inline void metrics_add(enum metric_id id, size_t set, uint64_t n)
{
    metrics_tab[id].count[set] += n;
}
static inline void metrics_set(enum metric_id id, size_t set, double v)
{
    metrics_tab[id].value[set] = v;
}
/* A histogram observation (a scan of at most 20 bounds). */
void metrics_observe(enum metric_id id, double v);

/* wh_triggers_total's set for an answer's HTTP status. */
size_t metrics_trigger_set(int status);
/* wh_attempts_total's status class (MA_2XX...MA_NONE) of an HTTP status (0: no answer). */
size_t metrics_status_class(long status);

/* Appends the running process's families to out (text format 0.0.4). */
void metrics_render(struct buf *out);
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* For a process that renders on another thread (the reconciler): its updates and the render
 * hold this lock. The broker and the worker never take it. */
void metrics_lock(void);
void metrics_unlock(void);

#endif
