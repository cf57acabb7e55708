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
 *   GET  /healthz     {"status":"ok"}
 * On SIGTERM/SIGINT, or after --max-seconds, the stats are printed on stdout and it exits 0.
 *
 * It must cost less than what it measures, so it is not built on evhttp (which re-arms its
 * events and allocates per request): one persistent read event per connection, every request
 * that a read brought parsed at once (pipelining; tests/bench/http1.c, strict: Content-Length
 * bodies only, Transfer-Encoding is answered 501), the replies to them written with one write().
 * Other methods get 405, a malformed head 400 and the connection closed; idle connections are
 * closed after 60 s. */
#include "cfg.h"
#include "http1.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECEIVER_VERSION "webhook-bench-receiver 0.2"
#define RCV_READ_CHUNK 16384         /* free space made before each read() */
#define RCV_MAX_BODY (64LL << 20)    /* a larger Content-Length gets 413 */
#define RCV_IDLE_SECONDS 60          /* idle connections are closed */

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
    const struct timeval *idle; /* the idle timeout, a libevent common timeout */
    struct conn *conns;        /* every open connection, freed at exit */
};

/* One client connection. Input at in.data[in_off..in.len) is not parsed yet; output at
 * out.data[out_off..out.len) is not written yet. While output is pending the read event is off
 * and the write event on. */
struct conn {
    struct rcv *r;
    int fd;
    struct event *rev; /* EV_READ | EV_PERSIST with the idle timeout */
    struct event *wev; /* EV_WRITE | EV_PERSIST, added only while output is pending */
    struct buf in, out;
    size_t in_off, out_off;
    bool writing;       /* wev added, rev deleted */
    bool sent_continue; /* "100 Continue" already sent for the request at in_off */
    bool closing;       /* close once the output is written */
    struct conn *prev, *next;
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

/* "/r/<i>" with i < paths (path[0..len), no query); returns i or -1. */
static long parse_path(const char *path, size_t len, long paths)
{
    if (len < 4 || memcmp(path, "/r/", 3) != 0 || len > 3 + 9)
        return -1;
    long i = 0;
    for (size_t k = 3; k < len; k++) {
        if (path[k] < '0' || path[k] > '9')
            return -1;
        i = i * 10 + (path[k] - '0');
    }
    return i < paths ? i : -1;
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

/* Counts one POST: path[0..plen), the body[0..len), headers_ok when the webhook-* headers were
 * all there. */
static void on_delivery(struct rcv *r, const char *path, size_t plen, bool headers_ok,
                        const char *body, size_t len)
{
    int64_t t_recv = now_us();
    r->received++;
    if (!headers_ok)
        r->missing_headers++;

    long pi = parse_path(path, plen, r->cfg.paths);
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

/* ---- connections ---- */

static const char *const rcv_want[] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
#define RCV_WANT_ALL 7u

static void conn_free(struct conn *c)
{
    struct rcv *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Appends a reply; json (NUL-terminated) is the body, or NULL for none. */
static void reply(struct conn *c, const struct http1_head *h, const char *status, const char *json)
{
    bool keep = h && http1_keep_alive(h) && !c->closing;
    if (keep && !json && h->minor >= 1 && strcmp(status, "200 OK") == 0) {
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        buf_add(&c->out, ok, sizeof ok - 1);
        return;
    }
    size_t n = json ? strlen(json) : 0;
    const char *conn = !keep            ? "Connection: close\r\n"
                       : h->minor == 0 ? "Connection: keep-alive\r\n"
                                       : "";
    buf_printf(&c->out, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s%s\r\n", status, n,
               json ? "Content-Type: application/json\r\n" : "", conn);
    if (n)
        buf_add(&c->out, json, n);
    if (!keep)
        c->closing = true;
}

/* Answers an error and closes the connection once it is written. */
static void reply_fatal(struct conn *c, const char *status, const char *json)
{
    c->closing = true;
    reply(c, NULL, status, json);
}

/* The "run" parameter of /reset's query q[0..n): 0 when absent, -1 when not a number >= 0. */
static int64_t reset_run(const char *q, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && q[i] != '&')
            i++;
        if (i - s > 4 && memcmp(q + s, "run=", 4) == 0) {
            int64_t v = 0;
            if (i - s - 4 > 15)
                return -1;
            for (size_t k = s + 4; k < i; k++) {
                if (q[k] < '0' || q[k] > '9')
                    return -1;
                v = v * 10 + (q[k] - '0');
            }
            return v;
        }
        if (i - s == 4 && memcmp(q + s, "run=", 4) == 0)
            return -1;
        i++;
    }
    return 0;
}

static bool path_is(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(p, s, n) == 0;
}

/* Handles one whole request whose body is body[0..len). */
static void on_request(struct conn *c, const struct http1_head *h, const char *body, size_t len)
{
    struct rcv *r = c->r;
    const char *path = h->target;
    const char *qm = memchr(path, '?', h->target_len);
    size_t plen = qm ? (size_t)(qm - path) : h->target_len;
    const char *query = qm ? qm + 1 : "";
    size_t qlen = qm ? h->target_len - plen - 1 : 0;
    bool get = h->method_len == 3 && memcmp(h->method, "GET", 3) == 0;

    if (h->method_len == 4 && memcmp(h->method, "POST", 4) == 0) {
        on_delivery(r, path, plen, (h->seen & RCV_WANT_ALL) == RCV_WANT_ALL, body, len);
        reply(c, h, "200 OK", NULL);
    } else if (!get) {
        reply(c, h, "405 Method Not Allowed", "{\"error\":\"method not allowed\"}\n");
    } else if (path_is(path, plen, "/stats")) {
        struct buf out = {0};
        rcv_stats_json(r, !memmem(query, qlen, "counts=1", 8), &out);
        buf_addc(&out, '\n');
        reply(c, h, "200 OK", out.data);
        buf_free(&out);
    } else if (path_is(path, plen, "/reset")) {
        int64_t run = reset_run(query, qlen);
        if (run < 0) {
            reply(c, h, "400 Bad Request", "{\"error\":\"run must be a number\"}\n");
            return;
        }
        rcv_reset(r, run);
        reply(c, h, "200 OK", "{\"reset\":true}\n");
    } else if (path_is(path, plen, "/healthz")) {
        reply(c, h, "200 OK", "{\"status\":\"ok\"}\n");
    } else {
        reply(c, h, "404 Not Found", "{\"error\":\"not found\"}\n");
    }
}

/* Handles every whole request in the input, appending the replies; keeps a partial one. */
static void conn_parse(struct conn *c)
{
    while (!c->closing && c->in_off < c->in.len) {
        const char *p = c->in.data + c->in_off;
        size_t avail = c->in.len - c->in_off;
        struct http1_head h;
        int rc = http1_parse_request(p, avail, rcv_want, 3, &h);
        if (rc == 0)
            break;
        if (rc < 0) {
            reply_fatal(c, "400 Bad Request", "{\"error\":\"malformed request\"}\n");
            break;
        }
        if (h.chunked) {
            reply_fatal(c, "501 Not Implemented",
                        "{\"error\":\"Transfer-Encoding is not supported\"}\n");
            break;
        }
        long long cl = h.content_length < 0 ? 0 : h.content_length;
        if (cl > RCV_MAX_BODY) {
            reply_fatal(c, "413 Payload Too Large", "{\"error\":\"body too large\"}\n");
            break;
        }
        if (avail - h.head_len < (size_t)cl) {
            if (h.expect_continue && !c->sent_continue) {
                buf_adds(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                c->sent_continue = true;
            }
            break;
        }
        c->sent_continue = false;
        on_request(c, &h, p + h.head_len, (size_t)cl);
        c->in_off += h.head_len + (size_t)cl;
    }
    if (c->in_off == c->in.len) {
        c->in_off = 0;
        buf_reset(&c->in);
    } else if (c->in_off > 0) {
        memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
}

/* Writes the pending output; frees c when it is done with it (closing, or a write error). */
static void conn_flush(struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            conn_free(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off < c->out.len) {
        if (!c->writing) {
            c->writing = true;
            event_del(c->rev);
            event_add(c->wev, NULL);
        }
        return;
    }
    c->out_off = 0;
    buf_reset(&c->out);
    if (c->closing) {
        conn_free(c);
        return;
    }
    if (c->writing) {
        c->writing = false;
        event_del(c->wev);
        event_add(c->rev, c->r->idle);
    }
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (what & EV_TIMEOUT) {
        conn_free(c);
        return;
    }
    buf_reserve(&c->in, RCV_READ_CHUNK);
    ssize_t n = read(fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    conn_parse(c);
    conn_flush(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct rcv *r = arg;
    (void)l;
    (void)sa;
    (void)salen;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = xcalloc(1, sizeof *c);
    c->r = r;
    c->fd = fd;
    c->rev = event_new(r->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->wev = event_new(r->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    if (!c->rev || !c->wev || event_add(c->rev, r->idle) < 0) {
        log_error(NULL, "cannot watch a new connection");
        conn_free(c);
    }
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
    struct evconnlistener *lis = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *deadline = NULL;
    r.base = event_base_new();
    if (!r.base) {
        log_error(NULL, "event_base_new failed");
        goto out_free_seen;
    }
    struct timeval idle = {RCV_IDLE_SECONDS, 0};
    r.idle = event_base_init_common_timeout(r.base, &idle);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)r.cfg.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    lis = evconnlistener_new_bind(r.base, on_accept, &r,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                  1024, (struct sockaddr *)&sa, sizeof sa);
    if (!r.idle || !lis) {
        log_error(NULL, "cannot bind 127.0.0.1:%ld: %s", r.cfg.port, strerror(errno));
        goto out_free_base;
    }
    socklen_t salen = sizeof sa;
    if (getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&sa, &salen) < 0) {
        log_error(NULL, "getsockname: %s", strerror(errno));
        goto out_free_listener;
    }
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
    /* Only now: whoever waits for this line may signal us at once. */
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);

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
    while (r.conns)
        conn_free(r.conns);
out_free_listener:
    evconnlistener_free(lis);
out_free_base:
    event_base_free(r.base);
out_free_seen:
    free(r.lat);
    free(r.seen);
    return status;
}
