/* The small GET /metrics listener of the worker and the reconciler (METRICS_LISTEN): on the
 * process's libevent loop (evhttp), or on a thread of its own for a blocking process. */
#ifndef WH_METRICSRV_H
#define WH_METRICSRV_H

#include <stddef.h>

#include <event2/event.h>

/* METRICS_LISTEN's entry of the worker's and the reconciler's config tables. */
#define CFG_OPT_METRICS_LISTEN(ptr)                                                                \
    {                                                                                              \
        "METRICS_LISTEN", "metrics-listen", CFG_STR, "", 0, 0,                                     \
            "serve Prometheus metrics at GET /metrics on host:port (:port means 127.0.0.1:port; "  \
            "port 0 "                                                                              \
            "picks a free one, logged); empty: not served",                                        \
            ptr                                                                                    \
    }

/* Parses METRICS_LISTEN: "host:port" ([v6] allowed), or ":port" for 127.0.0.1. 0 or -1 with the
 * reason in err. */
int metricsrv_parse(const char *addr, char *host, size_t hostlen, int *port, char *err,
                    size_t errlen) __attribute__((warn_unused_result));

/* Serves GET /metrics (404 otherwise; bounded headers, no body, a 5 s timeout) on base; logs
 * the address bound. Nothing when addr is "". 0, or -1 with the reason in err. */
int metricsrv_start(struct event_base *base, const char *addr, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void metricsrv_free(void);

/* The same on a thread of its own, one connection at a time (8 KiB of request, 5 s per
 * connection), rendering under metrics_lock(): for the blocking reconciler, whose updates take
 * that lock too. Signals stay with the other threads. */
int metricsrv_start_thread(const char *addr, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void metricsrv_stop_thread(void); /* wakes the thread and joins it */

#endif
