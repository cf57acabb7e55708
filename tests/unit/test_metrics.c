/* Unit tests for common/metrics.c: the exact text of a counter, a labelled counter, a gauge and
 * a histogram with cumulative buckets; per-partition gauges; status mappings. */
#include "metrics.h"
#include "unit.h"

#include <math.h>
#include <stdlib.h>

static const char reconciler_text[] =
    "# HELP wh_build_info Always 1: the binary and its version.\n"
    "# TYPE wh_build_info gauge\n"
    "wh_build_info{binary=\"reconciler\",version=\"9.9.9\"} 1\n"
    "# HELP wh_redis_up 1 when the process's Redis connections are up, else 0.\n"
    "# TYPE wh_redis_up gauge\n"
    "wh_redis_up 1\n"
    "# HELP wh_postgres_up 1 when the process's PostgreSQL connections are up, else 0.\n"
    "# TYPE wh_postgres_up gauge\n"
    "wh_postgres_up 0\n"
    "# HELP wh_reconciler_passes_total Reconciler passes run, by result.\n"
    "# TYPE wh_reconciler_passes_total counter\n"
    "wh_reconciler_passes_total{result=\"ok\"} 2\n"
    "wh_reconciler_passes_total{result=\"failed\"} 1\n"
    "# HELP wh_reconciler_requeued_total Jobs put back on a stream because Redis had lost them.\n"
    "# TYPE wh_reconciler_requeued_total counter\n"
    "wh_reconciler_requeued_total 12345678901\n"
    "# HELP wh_reconciler_pass_duration_seconds Seconds of one reconciler pass.\n"
    "# TYPE wh_reconciler_pass_duration_seconds histogram\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"0.01\"} 1\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"0.05\"} 2\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"0.1\"} 2\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"0.5\"} 2\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"1\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"5\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"10\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"30\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"60\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"300\"} 3\n"
    "wh_reconciler_pass_duration_seconds_bucket{le=\"+Inf\"} 4\n"
    "wh_reconciler_pass_duration_seconds_sum 1001.0625\n"
    "wh_reconciler_pass_duration_seconds_count 4\n"
    "# HELP wh_reconciler_last_success_timestamp_seconds Unix time the last successful pass "
    "ended (0 before the first).\n"
    "# TYPE wh_reconciler_last_success_timestamp_seconds gauge\n"
    "wh_reconciler_last_success_timestamp_seconds 1796212345.125\n";

static void test_render_reconciler(void)
{
    metrics_init(METRICS_RECONCILER, "reconciler", "9.9.9", 1);
    metrics_set(M_REDIS_UP, 0, 1);
    metrics_set(M_POSTGRES_UP, 0, 0);
    metrics_inc(M_RECON_PASSES, MR_OK);
    metrics_inc(M_RECON_PASSES, MR_OK);
    metrics_inc(M_RECON_PASSES, MR_FAILED);
    metrics_add(M_RECON_REQUEUED, 0, 12345678901ULL);
    metrics_observe(M_RECON_PASS_DURATION, 0.01);    /* on a bound: that bucket (le) */
    metrics_observe(M_RECON_PASS_DURATION, 0.0125);  /* 0.05 */
    metrics_observe(M_RECON_PASS_DURATION, 1);       /* 1 */
    metrics_observe(M_RECON_PASS_DURATION, 1000.04); /* +Inf */
    metrics_set(M_RECON_LAST_SUCCESS, 0, 1796212345.125);
    struct buf b = {0};
    metrics_render(&b);
    CHECK_STR(b.data, reconciler_text);
    buf_free(&b);
}

static void test_render_partitions(void)
{
    metrics_init(METRICS_BROKER, "broker", "1.0", 3);
    metrics_set(M_QUEUE_STREAM, 2, 17);
    metrics_set(M_QUEUE_LAG, 1, 0.5);
    metrics_inc(M_TRIGGERS, metrics_trigger_set(202));
    metrics_inc(M_TRIGGERS, metrics_trigger_set(401));
    metrics_inc(M_TRIGGERS, metrics_trigger_set(415));
    struct buf b = {0};
    metrics_render(&b);
    CHECK(strstr(b.data, "# TYPE wh_queue_stream_length gauge\n"
                         "wh_queue_stream_length{partition=\"0\"} 0\n"
                         "wh_queue_stream_length{partition=\"1\"} 0\n"
                         "wh_queue_stream_length{partition=\"2\"} 17\n# HELP") != NULL);
    CHECK(strstr(b.data, "wh_queue_lag_seconds{partition=\"1\"} 0.5\n") != NULL);
    metrics_set(M_JOBS_DEAD, 0, NAN); /* not sampled */
    CHECK(strstr(b.data, "wh_jobs_dead 0\n") != NULL);
    buf_reset(&b);
    metrics_render(&b);
    CHECK(strstr(b.data, "\nwh_jobs_dead NaN\n") != NULL);
    CHECK(strstr(b.data, "partition=\"3\"") == NULL);
    CHECK(strstr(b.data,
                 "# TYPE wh_triggers_total counter\n"
                 "wh_triggers_total{result=\"accepted\",reason=\"none\"} 1\n"
                 "wh_triggers_total{result=\"rejected\",reason=\"bad_request\"} 1\n"
                 "wh_triggers_total{result=\"rejected\",reason=\"unauthorized\"} 1\n"
                 "wh_triggers_total{result=\"rejected\",reason=\"too_large\"} 0\n") != NULL);
    CHECK(strstr(b.data, "wh_build_info{binary=\"broker\",version=\"1.0\"} 1\n") != NULL);
    /* only the broker's families */
    CHECK(strstr(b.data, "wh_attempts_total") == NULL);
    CHECK(strstr(b.data, "wh_reconciler") == NULL);
    CHECK(strstr(b.data, "wh_pg_commit_batch_size_bucket{le=\"1024\"} 0\n") != NULL);
    buf_free(&b);
}

static void test_mappings(void)
{
    CHECK_EQ_INT(metrics_trigger_set(202), MT_ACCEPTED);
    CHECK_EQ_INT(metrics_trigger_set(400), MT_BAD_REQUEST);
    CHECK_EQ_INT(metrics_trigger_set(404), MT_BAD_REQUEST);
    CHECK_EQ_INT(metrics_trigger_set(405), MT_BAD_REQUEST);
    CHECK_EQ_INT(metrics_trigger_set(403), MT_UNAUTHORIZED);
    CHECK_EQ_INT(metrics_trigger_set(413), MT_TOO_LARGE);
    CHECK_EQ_INT(metrics_trigger_set(409), MT_CONFLICT);
    CHECK_EQ_INT(metrics_trigger_set(422), MT_CONFLICT);
    CHECK_EQ_INT(metrics_trigger_set(429), MT_UNAVAILABLE);
    CHECK_EQ_INT(metrics_trigger_set(500), MT_UNAVAILABLE);
    CHECK_EQ_INT(metrics_trigger_set(503), MT_UNAVAILABLE);
    CHECK_EQ_INT(metrics_status_class(0), MA_NONE);
    CHECK_EQ_INT(metrics_status_class(200), MA_2XX);
    CHECK_EQ_INT(metrics_status_class(302), MA_3XX);
    CHECK_EQ_INT(metrics_status_class(410), MA_4XX);
    CHECK_EQ_INT(metrics_status_class(599), MA_5XX);
    CHECK_EQ_INT(metrics_status_class(600), MA_NONE);
    CHECK_EQ_INT(MA_FAILURE(MA_5XX), 8);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_render_reconciler();
    test_render_partitions();
    test_mappings();
    return unit_done(argv[0]);
}
