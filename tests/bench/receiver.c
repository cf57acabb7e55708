/* Benchmark webhook receiver: counts deliveries per (seq, path), spots duplicates and measures
 * trigger-to-receipt latency from the "t" field the load generator put in each payload.
 *
 *   build/bench/receiver [--port 0] [--paths 16] [--max-seq 1000000] [--max-seconds 300]
 *
 * Listens on 127.0.0.1 only and prints "port N" on stdout once bound. Routes:
 *   POST /r/<i>       a delivery (i < --paths): always 200, empty body, keep-alive
 *   GET  /stats       {"received","unique","duplicates","invalid","out_of_range",
 *                      "missing_headers","stale","run","first_us","last_us",
 *                      "p50_us","p99_us","max_us","min_us"}  (latencies: receipt - t)
 *                     (/stats?counts=1 skips the percentiles, for cheap polling)
 *   GET  /reset       clears every counter; /reset?run=R also makes the receiver count only
 *                     payloads whose "run" field is R (late deliveries of an earlier run are
 *                     counted as "stale" and otherwise ignored)
 * On SIGTERM/SIGINT, or after --max-seconds, the stats are printed on stdout and it exits 0. */
#include "cfg.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h> /* TAILQ_INIT for struct evkeyvalq */
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#define RECEIVER_VERSION "webhook-bench-receiver 0.1"

struct rcv_cfg {
    long port;
    long paths;
    long max_seq;
    long max_ms;
};

/* Everything the counters need; one instance, owned by main. */
struct rcv {
    struct rcv_cfg cfg;
    struct event_base *base;
    uint8_t *seen;        /* bitmap of (seq * paths + path), max_seq * paths bits */
    size_t seen_bytes;
    int64_t *lat;         /* receipt - t, one per unique delivery, in us */
    size_t nlat, caplat;
    uint64_t received;    /* every POST */
    uint64_t unique;
    uint64_t duplicates;
    uint64_t invalid;         /* bad path, no seq or no t */
    uint64_t out_of_range;    /* seq >= max_seq */
    uint64_t missing_headers; /* one of webhook-id / -timestamp / -signature absent */
    uint64_t stale;           /* "run" differs from the one given to /reset */
    int64_t run;              /* 0: any */
    int64_t first_us, last_us; /* receipt time of the first / last unique delivery */
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Finds "key": in the body and parses the integer after it. Returns 0 or -1. */
static __attribute__((warn_unused_result)) int json_int_field(const char *body, size_t len,
                                                               const char *key, int64_t *out)
{
    char pat[32];
    int n = snprintf(pat, sizeof pat, "\"%s\"", key);
    if (n < 0 || (size_t)n >= sizeof pat)
        return -1;
    const char *p = memmem(body, len, pat, (size_t)n);
    if (!p)
        return -1;
    const char *end = body + len;
    p += n;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= end || *p != ':')
        return -1;
    p++;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    /* strtoll needs a terminated string: copy at most 24 bytes of digits. */
    char num[24];
    size_t k = 0;
    while (p + k < end && k < sizeof num - 1 && (p[k] == '-' || (p[k] >= '0' && p[k] <= '9'))) {
        num[k] = p[k];
        k++;
    }
    num[k] = '\0';
    if (k == 0)
        return -1;
    char *stop;
    errno = 0;
    long long v = strtoll(num, &stop, 10);
    if (errno || *stop != '\0')
        return -1;
    *out = v;
    return 0;
}

/* "/r/<i>" with i < paths; returns i or -1. */
static long parse_path(const char *path, long paths)
{
    if (!path || strncmp(path, "/r/", 3) != 0 || path[3] < '0' || path[3] > '9')
        return -1;
    char *stop;
    errno = 0;
    long i = strtol(path + 3, &stop, 10);
    if (errno || *stop != '\0' || i < 0 || i >= paths)
        return -1;
    return i;
}

static void rcv_reset(struct rcv *r, int64_t run)
{
    r->run = run;
    r->stale = 0;
    memset(r->seen, 0, r->seen_bytes);
    r->nlat = 0;
    r->received = r->unique = r->duplicates = 0;
    r->invalid = r->out_of_range = r->missing_headers = 0;
    r->first_us = r->last_us = 0;
}

static void on_delivery(struct rcv *r, struct evhttp_request *req, const char *path)
{
    int64_t t_recv = now_us();
    r->received++;

    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    if (!evhttp_find_header(h, "webhook-id") || !evhttp_find_header(h, "webhook-timestamp") ||
        !evhttp_find_header(h, "webhook-signature"))
        r->missing_headers++;

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    long pi = parse_path(path, r->cfg.paths);
    int64_t seq, t;
    if (pi < 0 || json_int_field(body, len, "seq", &seq) < 0 ||
        json_int_field(body, len, "t", &t) < 0 || seq < 0) {
        r->invalid++;
        return;
    }
    int64_t run;
    if (r->run && (json_int_field(body, len, "run", &run) < 0 || run != r->run)) {
        r->stale++;
        return;
    }
    if (seq >= r->cfg.max_seq) {
        r->out_of_range++;
        return;
    }
    size_t bit = (size_t)seq * (size_t)r->cfg.paths + (size_t)pi;
    uint8_t mask = (uint8_t)(1u << (bit & 7));
    if (r->seen[bit >> 3] & mask) {
        r->duplicates++;
        return;
    }
    r->seen[bit >> 3] |= mask;
    r->unique++;
    if (r->nlat == r->caplat) {
        r->caplat = r->caplat ? r->caplat * 2 : 65536;
        r->lat = xrealloc(r->lat, r->caplat * sizeof *r->lat);
    }
    r->lat[r->nlat++] = t_recv - t;
    if (!r->first_us)
        r->first_us = t_recv;
    r->last_us = t_recv;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array of n > 0 values. */
static int64_t pct(const int64_t *v, size_t n, double p)
{
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* Appends the stats object to out; percentiles only when with_lat (sorting costs O(n log n)). */
static void rcv_stats_json(const struct rcv *r, bool with_lat, struct buf *out)
{
    buf_printf(out,
               "{\"received\":%" PRIu64 ",\"unique\":%" PRIu64 ",\"duplicates\":%" PRIu64
               ",\"invalid\":%" PRIu64 ",\"out_of_range\":%" PRIu64
               ",\"missing_headers\":%" PRIu64 ",\"stale\":%" PRIu64 ",\"run\":%" PRId64
               ",\"first_us\":%" PRId64 ",\"last_us\":%" PRId64,
               r->received, r->unique, r->duplicates, r->invalid, r->out_of_range,
               r->missing_headers, r->stale, r->run, r->first_us, r->last_us);
    if (with_lat) {
        int64_t p50 = 0, p99 = 0, max = 0, min = 0;
        if (r->nlat) {
            int64_t *s = xmalloc(r->nlat * sizeof *s);
            memcpy(s, r->lat, r->nlat * sizeof *s);
            qsort(s, r->nlat, sizeof *s, cmp_i64);
            p50 = pct(s, r->nlat, 50);
            p99 = pct(s, r->nlat, 99);
            min = s[0];
            max = s[r->nlat - 1];
            free(s);
        }
        buf_printf(out,
                   ",\"p50_us\":%" PRId64 ",\"p99_us\":%" PRId64 ",\"max_us\":%" PRId64
                   ",\"min_us\":%" PRId64,
                   p50, p99, max, min);
    }
    buf_adds(out, "}");
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *json)
{
    struct evbuffer *b = NULL;
    if (json) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        b = evbuffer_new();
        if (b)
            evbuffer_add(b, json, strlen(json));
    }
    evhttp_send_reply(req, code, reason, b);
    if (b)
        evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct rcv *r = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (cmd == EVHTTP_REQ_POST) {
        on_delivery(r, req, path);
        reply(req, 200, "OK", NULL);
        return;
    }
    if (cmd == EVHTTP_REQ_GET && path && strcmp(path, "/stats") == 0) {
        struct buf out = {0};
        rcv_stats_json(r, !(query && strstr(query, "counts=1")), &out);
        buf_addc(&out, '\n');
        reply(req, 200, "OK", out.data);
        buf_free(&out);
        return;
    }
    if (cmd == EVHTTP_REQ_GET && path && strcmp(path, "/reset") == 0) {
        int64_t run = 0;
        struct evkeyvalq q;
        TAILQ_INIT(&q);
        if (query && evhttp_parse_query_str(query, &q) == 0) {
            const char *v = evhttp_find_header(&q, "run");
            char *stop;
            errno = 0;
            run = v ? strtoll(v, &stop, 10) : 0;
            if (v && (errno || stop == v || *stop != '\0' || run < 0)) {
                evhttp_clear_headers(&q);
                reply(req, 400, "Bad Request", "{\"error\":\"run must be a number\"}\n");
                return;
            }
        }
        evhttp_clear_headers(&q);
        rcv_reset(r, run);
        reply(req, 200, "OK", "{\"reset\":true}\n");
        return;
    }
    if (cmd == EVHTTP_REQ_GET && path && strcmp(path, "/healthz") == 0) {
        reply(req, 200, "OK", "{\"status\":\"ok\"}\n");
        return;
    }
    reply(req, 404, "Not Found", "{\"error\":\"not found\"}\n");
}

/* Prints the final stats on stdout and leaves the loop. */
static void rcv_finish(struct rcv *r, const char *why)
{
    struct buf out = {0};
    rcv_stats_json(r, true, &out);
    printf("stats %s %s\n", why, out.data);
    fflush(stdout);
    buf_free(&out);
    event_base_loopbreak(r->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    rcv_finish(arg, sig == SIGINT ? "sigint" : "sigterm");
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rcv_finish(arg, "max-seconds");
}

int main(int argc, char **argv)
{
    struct rcv r = {0};
    const struct cfg_opt opts[] = {
        {"RECEIVER_PORT", "port", CFG_INT, "0", 0, 65535,
         "port on 127.0.0.1 (0: any free port, printed as \"port N\")", &r.cfg.port},
        {"RECEIVER_PATHS", "paths", CFG_INT, "16", 1, 4096, "number of paths /r/0 .. /r/K-1",
         &r.cfg.paths},
        {"RECEIVER_MAX_SEQ", "max-seq", CFG_INT, "1000000", 1, 100000000,
         "seq values tracked for duplicates (0 .. max-seq - 1)", &r.cfg.max_seq},
        {"RECEIVER_MAX_SECONDS", "max-seconds", CFG_MS, "300", 1000, 86400000,
         "exit by itself after this long", &r.cfg.max_ms},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];
    char err[256];
    int rc = cfg_load(opts, nopts, argc, argv, "usage: receiver [options]", RECEIVER_VERSION, err,
                      sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "receiver: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    log_set_program("bench-receiver");
    signal(SIGPIPE, SIG_IGN);

    uint64_t bits = (uint64_t)r.cfg.max_seq * (uint64_t)r.cfg.paths;
    if (bits > (uint64_t)8 << 30) {
        fprintf(stderr, "receiver: --max-seq x --paths too large (%" PRIu64 " bits)\n", bits);
        return 2;
    }
    r.seen_bytes = (size_t)((bits + 7) / 8);
    r.seen = xcalloc(r.seen_bytes, 1);

    int status = 1;
    struct evhttp *http = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *deadline = NULL;
    r.base = event_base_new();
    if (!r.base) {
        log_error(NULL, "event_base_new failed");
        goto out_free_seen;
    }
    http = evhttp_new(r.base);
    if (!http) {
        log_error(NULL, "evhttp_new failed");
        goto out_free_base;
    }
    evhttp_set_gencb(http, on_request, &r);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_timeout(http, 60);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)r.cfg.port);
    if (!bs) {
        log_error(NULL, "cannot bind 127.0.0.1:%ld", r.cfg.port);
        goto out_free_http;
    }
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &salen) < 0) {
        log_error(NULL, "getsockname: %s", strerror(errno));
        goto out_free_http;
    }
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    sigterm = evsignal_new(r.base, SIGTERM, on_signal, &r);
    sigint = evsignal_new(r.base, SIGINT, on_signal, &r);
    deadline = evtimer_new(r.base, on_deadline, &r);
    if (!sigterm || !sigint || !deadline) {
        log_error(NULL, "cannot create events");
        goto out_free_events;
    }
    struct timeval tv = {r.cfg.max_ms / 1000, (r.cfg.max_ms % 1000) * 1000};
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_add(deadline, &tv);

    if (event_base_dispatch(r.base) < 0)
        log_error(NULL, "event loop failed");
    else
        status = 0;

out_free_events:
    if (deadline)
        event_free(deadline);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
out_free_http:
    evhttp_free(http);
out_free_base:
    event_base_free(r.base);
out_free_seen:
    free(r.lat);
    free(r.seen);
    return status;
}
