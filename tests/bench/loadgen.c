/* Benchmark load generator: registers K subscriptions pointing at the bench receiver, fires N
 * trigger-event requests (as fast as they are accepted, or paced at R/s) over keep-alive
 * connections on libevent (tests/bench/hconn.c), then polls the receiver's /stats until every
 * delivery arrived, and prints one result block plus a machine-readable "RESULT k=v ..." line.
 *
 *   build/bench/loadgen --broker http://127.0.0.1:8080 --receiver-base http://127.0.0.1:9000 \
 *       --subscribers 1 --events 20000 [--rate 0] [--duration 0] [--concurrency 64] [--pad 0]
 *   build/bench/loadgen --direct --receiver-base http://127.0.0.1:9000 --subscribers 1 ...
 *
 * --direct skips the broker: the payloads are POSTed straight to the receiver paths (one request
 * per delivery), which checks the receiver's counting and gives the plain-HTTP loopback ceiling.
 * --inject-dup M / --inject-skip M (direct mode only) resend every M-th delivery / leave every
 * M-th one out, to check that duplicates and losses are reported.
 * --before-triggers CMD runs CMD (sh -c) after the registrations and the receiver reset, before
 * the first trigger: make bench takes its "before" CPU snapshot there, so the registrations of a
 * large K are not counted as the deliveries' cost.
 *
 * Exit status: 0 when nothing was lost, 1 when deliveries were lost, 2 on a setup error
 * (bad option, registration or receiver reset failed), 3 when aborted (signal, --max-seconds).
 * Only loopback URLs are accepted. Everything is bounded: --timeout per request, --wait-seconds
 * and --stall-seconds while waiting for deliveries, --max-seconds for the whole run.
 *
 * It must cost less than what it measures, so it does not use libcurl for the requests (its
 * per-transfer set-up, connection-alive poll() and socket callbacks cost 30 to 50 us of CPU a
 * request): each slot keeps one connection per target and writes a whole request with one
 * write(); responses must have a Content-Length (or end with the connection). */
#include "cfg.h"
#include "hconn.h"
#include "log.h"
#include "mem.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOADGEN_VERSION "webhook-bench-loadgen 0.1"
#define LG_MAX_STATUS 600      /* status_count[] slots; 0 = transport error */
#define LG_POLL_US 100000      /* receiver /stats polling period */

struct lg_cfg {
    char *broker;
    char *api_key;
    char *receiver_base;
    char *event_name;
    char *label;
    long subscribers;
    long events;
    long rate;
    long duration_ms;
    long concurrency;
    long pad;
    long wait_ms;
    long stall_ms;
    long settle_ms;
    long timeout_ms;
    long max_ms;
    bool direct;
    long inject_dup;
    long inject_skip;
    char *before_triggers;
};

struct lg;

/* Where requests go: the broker or the receiver. */
enum lg_dest { LG_BROKER, LG_RECEIVER, LG_NDEST };

struct lg_target {
    struct sockaddr_storage addr;
    socklen_t alen;
    char *host;   /* "127.0.0.1:9000", the Host header */
    char *prefix; /* path of the base URL ("" usually), put before every route */
};

/* One request slot: a keep-alive connection to each target (made on first use), the request
 * it borrows to the connection while in flight, and the answer while finish() runs. */
struct xfer {
    struct lg *lg;
    struct hconn *conn[LG_NDEST];
    enum lg_dest dest;         /* where req goes */
    struct buf req;            /* the whole HTTP request; borrowed until the answer */
    struct buf body;           /* scratch: the request body */
    const char *rbody;         /* response body, valid during finish() */
    size_t rlen;
    bool connected;            /* a new connection was opened for this request */
    uint64_t index;            /* request index within the phase */
    int64_t sent_us;           /* CLOCK_REALTIME when the request was built */
    struct xfer *next_free;
};

/* A batch of similar requests run to completion by run_phase(). prepare() fills the request for
 * index i and returns false to skip it (counted as done, nothing sent); finish() sees the answer
 * (status 0 = transport error, err says which). */
struct phase {
    uint64_t total, issued, done;
    long rate;                 /* requests/s; 0 = as fast as the free slots allow */
    int64_t start_mono_us;
    bool (*prepare)(struct lg *lg, struct xfer *x, uint64_t i);
    void (*finish)(struct lg *lg, struct xfer *x, long status, const char *err);
    void *ctx;
};

struct lg {
    struct lg_cfg cfg;
    struct event_base *base;
    struct lg_target dest_of[LG_NDEST]; /* addresses of the broker and the receiver */
    struct event *pace_timer;
    struct event *deadline;
    struct event *sigint, *sigterm;
    struct xfer *slots;        /* cfg.concurrency of them */
    struct xfer *free_slots;
    size_t in_flight;
    struct phase *ph;
    const char *abort_reason;  /* set by a signal or the deadline; the loop stops */
    char *json_hdrs;           /* Content-Type and Authorization header lines */
    char *trigger_path;
    char *pad;                 /* cfg.pad 'x' characters */
    int64_t max_send_lag_us;   /* paced mode: worst delay behind schedule */

    /* trigger phase results */
    uint64_t status_count[LG_MAX_STATUS];
    uint64_t ok;               /* 202 (broker) / 200 (direct) answers */
    uint64_t errors;
    uint64_t target;           /* deliveries the receiver should see: sum of "jobs" */
    uint64_t jobs_mismatch;    /* 202 answers whose "jobs" differs from --subscribers */
    uint64_t skipped, dups_sent;
    uint64_t connects;         /* new connections libcurl opened (keep-alive check) */
    int64_t run;               /* run id in every payload, given to the receiver's /reset */
    int64_t first_sent_us, last_ok_us;
    int64_t *trig_lat;
    size_t ntrig;
    char first_error[256];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- requests ---- */

static void pump(struct lg *lg);

/* Fills x->req with a whole request to dest: method, route (after the base URL's path),
 * headers (complete "Name: value\r\n" lines, or ""), and the body x->body when post. */
static void xfer_request(struct lg *lg, struct xfer *x, enum lg_dest dest, const char *method,
                         const char *route, const char *headers, bool post)
{
    const struct lg_target *t = &lg->dest_of[dest];
    x->dest = dest;
    buf_reset(&x->req);
    buf_printf(&x->req, "%s %s%s HTTP/1.1\r\nHost: %s\r\n%s", method, t->prefix, route, t->host,
               headers);
    if (post) {
        buf_printf(&x->req, "Content-Length: %zu\r\n\r\n", x->body.len);
        buf_add(&x->req, x->body.data, x->body.len);
    } else {
        buf_adds(&x->req, "\r\n");
    }
}

static void xfer_get(struct lg *lg, struct xfer *x, enum lg_dest dest, const char *route)
{
    xfer_request(lg, x, dest, "GET", route, "", false);
}

static void xfer_release(struct lg *lg, struct xfer *x)
{
    buf_reset(&x->req);
    buf_reset(&x->body);
    x->rbody = NULL;
    x->rlen = 0;
    x->next_free = lg->free_slots;
    lg->free_slots = x;
}

/* hconn_cb: a request ended; its slot goes back to the free list only here. */
static void on_done(void *arg, const struct hconn_result *res)
{
    struct xfer *x = arg;
    struct lg *lg = x->lg;
    lg->in_flight--;
    x->rbody = res->body;
    x->rlen = res->len;
    x->connected = res->connected;
    lg->ph->finish(lg, x, res->status, res->err);
    lg->ph->done++;
    xfer_release(lg, x);
    pump(lg);
}

/* Starts as many requests as the free slots and the pacing allow; leaves the loop once every
 * request of the phase is done. */
static void pump(struct lg *lg)
{
    struct phase *ph = lg->ph;
    if (!ph || lg->abort_reason)
        return;
    uint64_t allowed = ph->total;
    int64_t elapsed = 0;
    if (ph->rate > 0) {
        elapsed = mono_us() - ph->start_mono_us;
        uint64_t due = (uint64_t)((double)elapsed * (double)ph->rate / 1e6) + 1;
        if (due < allowed)
            allowed = due;
    }
    while (ph->issued < allowed && lg->free_slots) {
        uint64_t i = ph->issued++;
        struct xfer *x = lg->free_slots;
        if (ph->rate > 0) {
            int64_t lag = elapsed - (int64_t)((double)i * 1e6 / (double)ph->rate);
            if (lag > lg->max_send_lag_us)
                lg->max_send_lag_us = lag;
        }
        x->index = i;
        if (!ph->prepare(lg, x, i)) {
            ph->done++;
            continue;
        }
        lg->free_slots = x->next_free;
        if (!x->conn[x->dest]) {
            const struct lg_target *t = &lg->dest_of[x->dest];
            x->conn[x->dest] = hconn_new(lg->base, (const struct sockaddr *)&t->addr, t->alen);
        }
        char err[256];
        if (hconn_send(x->conn[x->dest], x->req.data, x->req.len, lg->cfg.timeout_ms, on_done, x,
                       err, sizeof err) < 0) {
            x->connected = false;
            ph->finish(lg, x, 0, err);
            ph->done++;
            xfer_release(lg, x);
            continue;
        }
        lg->in_flight++;
    }
    if (ph->done == ph->total)
        event_base_loopbreak(lg->base);
}

static void on_pace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static void lg_abort(struct lg *lg, const char *why)
{
    if (!lg->abort_reason)
        lg->abort_reason = why;
    event_base_loopbreak(lg->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lg_abort(arg, "--max-seconds reached");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    lg_abort(arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* Runs ph until all its requests are done. Returns 0, or -1 when aborted. */
static __attribute__((warn_unused_result)) int run_phase(struct lg *lg, struct phase *ph)
{
    lg->ph = ph;
    ph->start_mono_us = mono_us();
    if (ph->rate > 0) {
        long period = 1000000 / ph->rate;
        if (period < 1000)
            period = 1000;
        struct timeval tv = {period / 1000000, period % 1000000};
        event_assign(lg->pace_timer, lg->base, -1, EV_PERSIST, on_pace, lg);
        evtimer_add(lg->pace_timer, &tv);
    }
    pump(lg);
    while (ph->done < ph->total && !lg->abort_reason)
        if (event_base_dispatch(lg->base) < 0)
            lg_abort(lg, "event loop failed");
    evtimer_del(lg->pace_timer);
    lg->ph = NULL;
    return lg->abort_reason ? -1 : 0;
}

/* ---- single requests (receiver reset and stats) ---- */

struct one {
    const char *route; /* on the receiver */
    long status;
    struct buf body;
};

static bool one_prepare(struct lg *lg, struct xfer *x, uint64_t i)
{
    struct one *o = lg->ph->ctx;
    (void)i;
    xfer_get(lg, x, LG_RECEIVER, o->route);
    return true;
}

static void one_finish(struct lg *lg, struct xfer *x, long status, const char *err)
{
    struct one *o = lg->ph->ctx;
    o->status = status;
    buf_reset(&o->body);
    if (status)
        buf_add(&o->body, x->rbody, x->rlen);
    else
        buf_adds(&o->body, err);
}

/* GETs route on the receiver; *o gets status and body (caller frees o->body). Returns 0, or -1
 * when aborted. */
static __attribute__((warn_unused_result)) int get_one(struct lg *lg, const char *route,
                                                        struct one *o)
{
    o->route = route;
    o->status = 0;
    struct phase ph = {.total = 1, .prepare = one_prepare, .finish = one_finish, .ctx = o};
    return run_phase(lg, &ph);
}

/* ---- registration ---- */

struct reg {
    uint64_t failed;
    char first_error[256];
};

static bool reg_prepare(struct lg *lg, struct xfer *x, uint64_t i)
{
    buf_printf(&x->body, "{\"eventName\":\"%s\",\"webhookUrl\":\"%s/r/%" PRIu64 "\"}",
               lg->cfg.event_name, lg->cfg.receiver_base, i);
    xfer_request(lg, x, LG_BROKER, "POST", "/api/v0/webhooks", lg->json_hdrs, true);
    return true;
}

static void reg_finish(struct lg *lg, struct xfer *x, long status, const char *err)
{
    struct reg *r = lg->ph->ctx;
    cJSON *j = NULL;
    if (status == 200 || status == 201)
        j = cJSON_ParseWithLength(x->rbody, x->rlen);
    if (j && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "id"))) {
        cJSON_Delete(j);
        return;
    }
    cJSON_Delete(j);
    if (!r->failed++)
        snprintf(r->first_error, sizeof r->first_error,
                 "subscription %" PRIu64 ": HTTP %ld %.200s", x->index, status,
                 status ? x->rbody : err);
}

/* ---- triggers (broker mode) and deliveries (direct mode) ---- */

static void add_payload(struct lg *lg, struct xfer *x, uint64_t seq)
{
    x->sent_us = now_us();
    if (!lg->first_sent_us)
        lg->first_sent_us = x->sent_us;
    buf_printf(&x->body, "{\"seq\":%" PRIu64 ",\"t\":%" PRId64 ",\"run\":%" PRId64 ",\"pad\":\"",
               seq, x->sent_us, lg->run);
    buf_add(&x->body, lg->pad, (size_t)lg->cfg.pad);
    buf_adds(&x->body, "\"}");
}

static bool trig_prepare(struct lg *lg, struct xfer *x, uint64_t i)
{
    add_payload(lg, x, i);
    xfer_request(lg, x, LG_BROKER, "POST", lg->trigger_path, lg->json_hdrs, true);
    return true;
}

/* Direct mode: request i < N*K is delivery (seq i / K, path i % K); requests past N*K resend
 * every inject_dup-th delivery. Deliveries with i % inject_skip == inject_skip - 1 are left out. */
static bool direct_skipped(const struct lg *lg, uint64_t d)
{
    uint64_t m = (uint64_t)lg->cfg.inject_skip;
    return m && d % m == m - 1;
}

static bool direct_prepare(struct lg *lg, struct xfer *x, uint64_t i)
{
    uint64_t k = (uint64_t)lg->cfg.subscribers;
    uint64_t nd = (uint64_t)lg->cfg.events * k;
    uint64_t d = i < nd ? i : (i - nd) * (uint64_t)lg->cfg.inject_dup;
    if (direct_skipped(lg, d)) {
        lg->skipped++;
        return false;
    }
    if (i >= nd)
        lg->dups_sent++;
    uint64_t seq = d / k;
    add_payload(lg, x, seq);
    char route[32], h[256];
    snprintf(route, sizeof route, "/r/%" PRIu64, d % k);
    snprintf(h, sizeof h,
             "Content-Type: application/json\r\nwebhook-id: bench-%" PRIu64
             "\r\nwebhook-timestamp: %" PRId64 "\r\nwebhook-signature: v1,bench\r\n",
             seq, x->sent_us / 1000000);
    xfer_request(lg, x, LG_RECEIVER, "POST", route, h, true);
    return true;
}

static void trig_finish(struct lg *lg, struct xfer *x, long status, const char *err)
{
    int64_t t = now_us();
    if (x->connected)
        lg->connects++;
    lg->status_count[status >= 0 && status < LG_MAX_STATUS ? status : LG_MAX_STATUS - 1]++;
    long want = lg->cfg.direct ? 200 : 202;
    if (status != want) {
        if (!lg->errors++)
            snprintf(lg->first_error, sizeof lg->first_error,
                     "request %" PRIu64 ": HTTP %ld %.200s", x->index, status,
                     status ? x->rbody : err);
        return;
    }
    lg->ok++;
    lg->last_ok_us = t;
    lg->trig_lat[lg->ntrig++] = t - x->sent_us;
    if (lg->cfg.direct) {
        uint64_t nd = (uint64_t)lg->cfg.events * (uint64_t)lg->cfg.subscribers;
        if (x->index < nd)
            lg->target++;
        return;
    }
    /* {"eventId":"...","eventName":"...","jobs":K} */
    cJSON *j = cJSON_ParseWithLength(x->rbody, x->rlen);
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    long k = cJSON_IsNumber(jobs) ? (long)jobs->valuedouble : -1;
    if (k >= 0)
        lg->target += (uint64_t)k;
    if (k != lg->cfg.subscribers)
        lg->jobs_mismatch++;
    cJSON_Delete(j);
}

/* ---- receiver stats ---- */

struct rstats {
    double received, unique, duplicates, invalid, out_of_range, missing_headers, stale;
    double first_us, last_us, p50_us, p99_us, max_us, min_us;
};

static __attribute__((warn_unused_result)) int parse_stats(const struct buf *b, struct rstats *s)
{
    cJSON *j = cJSON_ParseWithLength(b->data ? b->data : "", b->len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -1;
    }
    struct {
        const char *key;
        double *dst;
    } f[] = {{"received", &s->received},
             {"unique", &s->unique},
             {"duplicates", &s->duplicates},
             {"invalid", &s->invalid},
             {"out_of_range", &s->out_of_range},
             {"missing_headers", &s->missing_headers},
             {"stale", &s->stale},
             {"first_us", &s->first_us},
             {"last_us", &s->last_us},
             {"p50_us", &s->p50_us},
             {"p99_us", &s->p99_us},
             {"max_us", &s->max_us},
             {"min_us", &s->min_us}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, f[i].key);
        *f[i].dst = cJSON_IsNumber(v) ? v->valuedouble : 0;
    }
    cJSON_Delete(j);
    return 0;
}

/* Polls the receiver until target unique deliveries, the wait deadline, or no progress for
 * --stall-seconds; then reads the full stats once more after --settle-seconds. Returns the
 * reason the wait ended ("complete", "timeout", "stalled"), or NULL when aborted or the receiver
 * failed (message logged). */
static const char *wait_deliveries(struct lg *lg, struct rstats *st)
{
    struct one o = {0};
    const char *why = NULL;
    int64_t start = mono_us(), last_progress = start;
    double last_unique = -1;
    for (;;) {
        if (get_one(lg, "/stats?counts=1", &o) < 0)
            goto out_free_body;
        if (o.status != 200 || parse_stats(&o.body, st) < 0) {
            log_error(NULL, "receiver /stats: HTTP %ld %.200s", o.status, o.body.data);
            goto out_free_body;
        }
        int64_t now = mono_us();
        if (st->unique >= (double)lg->target) {
            why = "complete";
            break;
        }
        if (st->unique != last_unique) {
            last_unique = st->unique;
            last_progress = now;
        }
        if (now - last_progress >= (int64_t)lg->cfg.stall_ms * 1000) {
            why = "stalled";
            break;
        }
        if (now - start >= (int64_t)lg->cfg.wait_ms * 1000) {
            why = "timeout";
            break;
        }
        usleep(LG_POLL_US);
    }
    /* Late duplicates (redeliveries) may still come after the last unique one. */
    if (lg->cfg.settle_ms > 0)
        usleep((useconds_t)lg->cfg.settle_ms * 1000);
    if (get_one(lg, "/stats", &o) < 0 || o.status != 200 || parse_stats(&o.body, st) < 0) {
        if (!lg->abort_reason)
            log_error(NULL, "receiver /stats: HTTP %ld %.200s", o.status, o.body.data);
        why = NULL;
    }
out_free_body:
    buf_free(&o.body);
    return why;
}

/* ---- setup and report ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* Loopback only: the host of url must be 127.0.0.1, ::1 or localhost. */
static __attribute__((warn_unused_result)) int check_loopback(const char *what, const char *url,
                                                               char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *host = NULL, *scheme = NULL;
    int ok = -1;
    if (!u) {
        snprintf(err, errlen, "curl_url failed");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        snprintf(err, errlen, "%s: not a URL: \"%s\"", what, url);
        goto out_free_url;
    }
    if (strcmp(scheme, "http") != 0 ||
        (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "[::1]") != 0 &&
         strcmp(host, "localhost") != 0)) {
        snprintf(err, errlen, "%s must be http://127.0.0.1:PORT (loopback only), got \"%s\"", what,
                 url);
        goto out_free_url;
    }
    size_t n = strlen(url);
    if (n && url[n - 1] == '/') {
        snprintf(err, errlen, "%s must not end with '/': \"%s\"", what, url);
        goto out_free_url;
    }
    ok = 0;
out_free_url:
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

static bool valid_event_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static void print_errors(const struct lg *lg, struct buf *out)
{
    bool any = false;
    for (int s = 0; s < LG_MAX_STATUS; s++) {
        long want = lg->cfg.direct ? 200 : 202;
        if (s == want || !lg->status_count[s])
            continue;
        if (s)
            buf_printf(out, "%s%d:%" PRIu64, any ? "," : "", s, lg->status_count[s]);
        else
            buf_printf(out, "%stransport:%" PRIu64, any ? "," : "", lg->status_count[s]);
        any = true;
    }
    if (!any)
        buf_adds(out, "none");
}

static double ms(double us)
{
    return us / 1000.0;
}

/* Prints the result block; returns the exit status (0: nothing lost). */
static int report(struct lg *lg, const struct rstats *st, const char *wait_end,
                  double trig_elapsed_s)
{
    const struct lg_cfg *c = &lg->cfg;
    uint64_t expected = (uint64_t)c->events * (uint64_t)c->subscribers;
    uint64_t unique = (uint64_t)st->unique;
    uint64_t lost = expected > unique ? expected - unique : 0;
    double accepted_per_s = trig_elapsed_s > 0 ? (double)lg->ok / trig_elapsed_s : 0;
    double span_s = st->last_us > 0 ? (st->last_us - (double)lg->first_sent_us) / 1e6 : 0;
    double deliveries_per_s = span_s > 0 ? st->unique / span_s : 0;
    qsort(lg->trig_lat, lg->ntrig, sizeof *lg->trig_lat, cmp_i64);
    double tp50 = ms((double)pct(lg->trig_lat, lg->ntrig, 50));
    double tp99 = ms((double)pct(lg->trig_lat, lg->ntrig, 99));
    const char *mode = c->direct ? "direct" : "broker";
    struct buf errs = {0};
    print_errors(lg, &errs);

    printf("scenario: %s mode=%s events=%ld subscribers=%ld rate=%s%ld concurrency=%ld pad=%ld "
           "event=%s\n",
           c->label, mode, c->events, c->subscribers, c->rate ? "" : "max/", c->rate,
           c->concurrency, c->pad, c->event_name);
    printf("  accepted %s/s:          %.1f  (%" PRIu64 " in %.2f s; %s latency p50 %.2f ms p99 "
           "%.2f ms)\n",
           c->direct ? "requests" : "triggers", accepted_per_s, lg->ok, trig_elapsed_s,
           c->direct ? "request" : "trigger", tp50, tp99);
    if (c->rate)
        printf("  pacing:                     max %.1f ms behind schedule\n",
               ms((double)lg->max_send_lag_us));
    printf("  connections opened:         %" PRIu64 " for %" PRIu64 " requests\n", lg->connects,
           lg->ok + lg->errors);
    printf("  trigger errors:             %" PRIu64 " (by status: %s)%s%s\n", lg->errors, errs.data,
           lg->errors ? " first: " : "", lg->errors ? lg->first_error : "");
    if (lg->jobs_mismatch)
        printf("  WARNING: %" PRIu64 " answers had \"jobs\" != %ld\n", lg->jobs_mismatch,
               c->subscribers);
    printf("  deliveries expected:        %" PRIu64 " (accepted jobs %" PRIu64 ")\n", expected,
           lg->target);
    printf("  unique delivered:           %" PRIu64 " (wait ended: %s)\n", unique, wait_end);
    printf("  lost:                       %" PRIu64 "\n", lost);
    printf("  duplicates:                 %.0f\n", st->duplicates);
    if (st->invalid || st->out_of_range || st->missing_headers)
        printf("  WARNING: receiver saw %.0f invalid, %.0f out-of-range, %.0f without webhook-* "
               "headers\n",
               st->invalid, st->out_of_range, st->missing_headers);
    if (st->stale)
        printf("  note: %.0f late deliveries of an earlier run were ignored\n", st->stale);
    printf("  deliveries/s end to end:    %.1f  (%.0f in %.2f s from first trigger to last "
           "receipt)\n",
           deliveries_per_s, st->unique, span_s);
    printf("  trigger-to-receipt latency: p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", ms(st->p50_us),
           ms(st->p99_us), ms(st->max_us));
    printf("RESULT label=%s mode=%s events=%ld subscribers=%ld rate=%ld concurrency=%ld pad=%ld "
           "accepted=%" PRIu64 " accepted_per_s=%.1f trigger_errors=%" PRIu64 " expected=%" PRIu64
           " unique=%" PRIu64 " lost=%" PRIu64 " duplicates=%.0f deliveries_per_s=%.1f "
           "p50_ms=%.2f p99_ms=%.2f max_ms=%.2f trig_p50_ms=%.2f trig_p99_ms=%.2f "
           "invalid=%.0f missing_headers=%.0f stale=%.0f connections=%" PRIu64 " wait=%s\n",
           c->label, mode, c->events, c->subscribers, c->rate, c->concurrency, c->pad, lg->ok,
           accepted_per_s, lg->errors, expected, unique, lost, st->duplicates, deliveries_per_s,
           ms(st->p50_us), ms(st->p99_us), ms(st->max_us), tp50, tp99, st->invalid,
           st->missing_headers, st->stale, lg->connects, wait_end);
    fflush(stdout);
    buf_free(&errs);
    return lost ? 1 : 0;
}

/* Resolves the base URL url (already checked by check_loopback) into t. Returns 0 or -1. */
static __attribute__((warn_unused_result)) int target_init(struct lg_target *t, const char *url,
                                                            char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL;
    struct addrinfo *ai = NULL;
    int ok = -1;
    if (!u) {
        snprintf(err, errlen, "curl_url failed");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        snprintf(err, errlen, "not a URL: \"%s\"", url);
        goto out_free_url;
    }
    /* "[::1]" -> "::1" for getaddrinfo */
    size_t hl = strlen(host);
    char *name = host[0] == '[' && hl > 2 ? xstrndup(host + 1, hl - 2) : xstrdup(host);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    int rc = getaddrinfo(name, port, &hints, &ai);
    free(name);
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "%s: %s", url, gai_strerror(rc));
        goto out_free_url;
    }
    /* "localhost": 127.0.0.1 before ::1, where the project's servers listen by default */
    const struct addrinfo *pick = ai;
    for (const struct addrinfo *a = ai; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    memcpy(&t->addr, pick->ai_addr, pick->ai_addrlen);
    t->alen = pick->ai_addrlen;
    t->host = xasprintf("%s:%s", host, port);
    t->prefix = xstrdup(strcmp(path, "/") == 0 ? "" : path);
    ok = 0;
    freeaddrinfo(ai);
out_free_url:
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return ok;
}

static __attribute__((warn_unused_result)) int lg_init(struct lg *lg, char *err, size_t errlen)
{
    lg->base = event_base_new();
    if (!lg->base) {
        snprintf(err, errlen, "cannot create the event base");
        return -1;
    }
    lg->pace_timer = evtimer_new(lg->base, on_pace, lg);
    lg->deadline = evtimer_new(lg->base, on_deadline, lg);
    lg->sigint = evsignal_new(lg->base, SIGINT, on_signal, lg);
    lg->sigterm = evsignal_new(lg->base, SIGTERM, on_signal, lg);
    if (!lg->pace_timer || !lg->deadline || !lg->sigint || !lg->sigterm) {
        snprintf(err, errlen, "cannot create events");
        return -1;
    }
    struct timeval tv = {lg->cfg.max_ms / 1000, (lg->cfg.max_ms % 1000) * 1000};
    evtimer_add(lg->deadline, &tv);
    evsignal_add(lg->sigint, NULL);
    evsignal_add(lg->sigterm, NULL);

    char terr[256];
    if (target_init(&lg->dest_of[LG_RECEIVER], lg->cfg.receiver_base, terr, sizeof terr) < 0 ||
        (!lg->cfg.direct &&
         target_init(&lg->dest_of[LG_BROKER], lg->cfg.broker, terr, sizeof terr) < 0)) {
        snprintf(err, errlen, "%s", terr);
        return -1;
    }

    lg->slots = xcalloc((size_t)lg->cfg.concurrency, sizeof *lg->slots);
    for (long i = lg->cfg.concurrency - 1; i >= 0; i--) {
        struct xfer *x = &lg->slots[i];
        x->lg = lg;
        x->next_free = lg->free_slots;
        lg->free_slots = x;
    }
    if (lg->cfg.api_key[0])
        lg->json_hdrs = xasprintf("Content-Type: application/json\r\nAuthorization: Bearer %s\r\n",
                                  lg->cfg.api_key);
    else
        lg->json_hdrs = xstrdup("Content-Type: application/json\r\n");
    lg->pad = xmalloc((size_t)lg->cfg.pad + 1);
    memset(lg->pad, 'x', (size_t)lg->cfg.pad);
    lg->pad[lg->cfg.pad] = '\0';
    if (!lg->cfg.direct)
        lg->trigger_path = xasprintf("/api/v0/trigger-event/%s", lg->cfg.event_name);
    return 0;
}

/* Frees everything lg_init made; requests still in flight (after an abort) are dropped. */
static void lg_free(struct lg *lg)
{
    if (lg->slots) {
        for (long i = 0; i < lg->cfg.concurrency; i++) {
            struct xfer *x = &lg->slots[i];
            for (int d = 0; d < LG_NDEST; d++)
                hconn_free(x->conn[d]);
            buf_free(&x->req);
            buf_free(&x->body);
        }
        free(lg->slots);
    }
    struct event *evs[] = {lg->pace_timer, lg->deadline, lg->sigint, lg->sigterm};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (lg->base)
        event_base_free(lg->base);
    for (int d = 0; d < LG_NDEST; d++) {
        free(lg->dest_of[d].host);
        free(lg->dest_of[d].prefix);
    }
    free(lg->json_hdrs);
    free(lg->pad);
    free(lg->trigger_path);
    free(lg->trig_lat);
}

int main(int argc, char **argv)
{
    static struct lg lg; /* big status table: not on the stack */
    struct lg_cfg *c = &lg.cfg;
    const struct cfg_opt opts[] = {
        {"LOADGEN_BROKER", "broker", CFG_STR, "http://127.0.0.1:8080", 0, 0,
         "broker base URL (loopback only)", &c->broker},
        {"LOADGEN_API_KEY", "api-key", CFG_STR, "", 0, 0,
         "API key sent as 'Authorization: Bearer <key>' to the broker", &c->api_key},
        {"LOADGEN_RECEIVER_BASE", "receiver-base", CFG_STR, "", 0, 0,
         "bench receiver base URL, e.g. http://127.0.0.1:9000 (required)", &c->receiver_base},
        {"LOADGEN_SUBSCRIBERS", "subscribers", CFG_INT, "1", 1, 4096,
         "K subscriptions, to receiver-base/r/0 .. /r/K-1", &c->subscribers},
        {"LOADGEN_EVENTS", "events", CFG_INT, "1000", 0, 100000000, "N triggers (see --duration)",
         &c->events},
        {"LOADGEN_RATE", "rate", CFG_INT, "0", 0, 1000000,
         "triggers/s, evenly spaced (0: as fast as accepted)", &c->rate},
        {"LOADGEN_DURATION", "duration", CFG_MS, "0", 0, 86400000,
         "with --rate: N = rate x duration (0: use --events)", &c->duration_ms},
        {"LOADGEN_CONCURRENCY", "concurrency", CFG_INT, "64", 1, 4096, "requests in flight at most",
         &c->concurrency},
        {"LOADGEN_EVENT_NAME", "event-name", CFG_STR, "", 0, 0,
         "event name (default bench.<random>)", &c->event_name},
        {"LOADGEN_PAD", "pad", CFG_INT, "0", 0, 200000, "payload padding in bytes", &c->pad},
        {"LOADGEN_WAIT_SECONDS", "wait-seconds", CFG_MS, "120", 0, 86400000,
         "longest wait for the deliveries after the last trigger", &c->wait_ms},
        {"LOADGEN_STALL_SECONDS", "stall-seconds", CFG_MS, "30", 100, 86400000,
         "stop waiting after this long without a new delivery", &c->stall_ms},
        {"LOADGEN_SETTLE_SECONDS", "settle-seconds", CFG_MS, "1", 0, 600000,
         "pause before the final /stats, to count late duplicates", &c->settle_ms},
        {"LOADGEN_TIMEOUT", "timeout", CFG_MS, "30", 100, 600000, "timeout of each HTTP request",
         &c->timeout_ms},
        {"LOADGEN_MAX_SECONDS", "max-seconds", CFG_MS, "900", 1000, 86400000,
         "abort the whole run after this long (exit 3)", &c->max_ms},
        {"LOADGEN_LABEL", "label", CFG_STR, "-", 0, 0, "scenario label for the report (no spaces)",
         &c->label},
        {"LOADGEN_DIRECT", "direct", CFG_BOOL, "0", 0, 0,
         "POST payloads straight to the receiver (no broker): checks the receiver, HTTP ceiling",
         &c->direct},
        {"LOADGEN_INJECT_DUP", "inject-dup", CFG_INT, "0", 0, 100000000,
         "direct mode: resend every M-th delivery (0: never)", &c->inject_dup},
        {"LOADGEN_INJECT_SKIP", "inject-skip", CFG_INT, "0", 0, 100000000,
         "direct mode: leave out every M-th delivery (0: never)", &c->inject_skip},
        {"LOADGEN_BEFORE_TRIGGERS", "before-triggers", CFG_STR, "", 0, 0,
         "shell command run after the registrations, before the first trigger",
         &c->before_triggers},
    };
    const size_t nopts = sizeof opts / sizeof opts[0];
    char err[512];
    int status = 2;
    int rc = cfg_load(opts, nopts, argc, argv, "usage: loadgen --receiver-base URL [options]",
                      LOADGEN_VERSION, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "loadgen: %s\n", err);
        cfg_free(opts, nopts);
        return rc < 0 ? 2 : 0;
    }
    log_set_program("bench-loadgen");
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "loadgen: curl_global_init failed\n");
        goto out_free_cfg;
    }

    if (!*c->receiver_base) {
        fprintf(stderr, "loadgen: --receiver-base is required\n");
        goto out_curl_cleanup;
    }
    if (check_loopback("--receiver-base", c->receiver_base, err, sizeof err) < 0 ||
        (!c->direct && check_loopback("--broker", c->broker, err, sizeof err) < 0)) {
        fprintf(stderr, "loadgen: %s\n", err);
        goto out_curl_cleanup;
    }
    if (!c->direct && (c->inject_dup || c->inject_skip)) {
        fprintf(stderr, "loadgen: --inject-dup and --inject-skip need --direct\n");
        goto out_curl_cleanup;
    }
    if (!*c->event_name) {
        free(c->event_name);
        c->event_name = xasprintf("bench.%lx%x", (unsigned long)now_us(), (unsigned)getpid());
    }
    if (!valid_event_name(c->event_name)) {
        fprintf(stderr, "loadgen: invalid --event-name \"%s\"\n", c->event_name);
        goto out_curl_cleanup;
    }
    if (c->rate > 0 && c->duration_ms > 0)
        c->events = (long)((double)c->rate * (double)c->duration_ms / 1000.0);
    if (strchr(c->label, ' ') || !*c->label) {
        fprintf(stderr, "loadgen: --label must be one word\n");
        goto out_curl_cleanup;
    }

    lg.run = (now_us() ^ ((int64_t)getpid() << 20)) & 0x7fffffffffff;
    if (lg.run == 0)
        lg.run = 1;
    if (lg_init(&lg, err, sizeof err) < 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        goto out_free_lg;
    }
    uint64_t nreq = (uint64_t)c->events;
    if (c->direct) {
        nreq *= (uint64_t)c->subscribers;
        if (c->inject_dup)
            nreq += (nreq + (uint64_t)c->inject_dup - 1) / (uint64_t)c->inject_dup;
    }
    lg.trig_lat = xmalloc((size_t)(nreq ? nreq : 1) * sizeof *lg.trig_lat);

    /* 1. subscriptions */
    if (!c->direct) {
        struct reg r = {0};
        struct phase ph = {.total = (uint64_t)c->subscribers,
                           .prepare = reg_prepare,
                           .finish = reg_finish,
                           .ctx = &r};
        if (run_phase(&lg, &ph) < 0)
            goto out_aborted;
        if (r.failed) {
            fprintf(stderr, "loadgen: %" PRIu64 " of %ld registrations failed; %s\n", r.failed,
                    c->subscribers, r.first_error);
            goto out_free_lg;
        }
    }

    /* 2. receiver reset */
    {
        char route[64];
        struct one o = {0};
        snprintf(route, sizeof route, "/reset?run=%" PRId64, lg.run);
        int r = get_one(&lg, route, &o);
        if (r < 0) {
            buf_free(&o.body);
            goto out_aborted;
        }
        if (o.status != 200) {
            fprintf(stderr, "loadgen: receiver %s%s: HTTP %ld %.200s\n", c->receiver_base, route,
                    o.status,
                    o.body.data ? o.body.data : "");
            buf_free(&o.body);
            goto out_free_lg;
        }
        buf_free(&o.body);
    }

    if (c->before_triggers && c->before_triggers[0]) {
        int sr = system(c->before_triggers);
        if (sr != 0) {
            fprintf(stderr, "loadgen: --before-triggers command failed (status %d)\n", sr);
            goto out_free_lg;
        }
    }

    /* 3. triggers (or direct deliveries) */
    struct phase tp = {.total = nreq,
                       .rate = c->rate * (c->direct ? c->subscribers : 1),
                       .prepare = c->direct ? direct_prepare : trig_prepare,
                       .finish = trig_finish};
    int64_t t0 = mono_us();
    if (run_phase(&lg, &tp) < 0)
        goto out_aborted;
    double trig_elapsed_s =
        lg.ok && lg.last_ok_us > lg.first_sent_us ? (double)(lg.last_ok_us - lg.first_sent_us) / 1e6
                                                   : (double)(mono_us() - t0) / 1e6;

    /* 4. deliveries */
    struct rstats st = {0};
    const char *why = wait_deliveries(&lg, &st);
    if (!why) {
        if (lg.abort_reason)
            goto out_aborted;
        goto out_free_lg;
    }
    status = report(&lg, &st, why, trig_elapsed_s);
    goto out_free_lg;

out_aborted:
    fprintf(stderr, "loadgen: aborted: %s\n", lg.abort_reason);
    status = 3;
out_free_lg:
    lg_free(&lg);
out_curl_cleanup:
    curl_global_cleanup();
out_free_cfg:
    cfg_free(opts, nopts);
    return status;
}
