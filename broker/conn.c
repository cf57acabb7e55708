/* Connections of the HTTP front, beneath evhttp: the connection cap (503), the whole-request
 * deadline (408), the header limits (431), a NUL byte in the request line or headers (400),
 * the early refusal of a declared body over the limit (413) or of a body without a valid API
 * key (401), each answered with a JSON error and a bounded lingering close. Every size limit
 * of a request is decided here.
 *
 * evhttp 2.1 has no hook for any of these (evhttp_get_request() is not exported, and a filter
 * bufferevent under evhttp loses every reply that closes the connection: see docs/decisions.md).
 * So each connection gets a plain socket bufferevent of ours (evhttp_set_bevcb) and:
 *   - a callback on its input evbuffer sees every byte as it is read, before evhttp parses it:
 *     the first byte of a request starts the deadline, and the request line and headers are
 *     counted up to the empty line that ends them;
 *   - evhttp's close callback, set on the evhttp_connection we find as the bufferevent's
 *     callback argument, tells us when the connection is freed (the count goes down);
 *   - a refusal writes its response straight to the socket, hands a duplicate of the socket
 *     to a lingering close (FIN, then read and discard briefly), and makes evhttp free the
 *     connection through its own timeout path (a deferred BEV_EVENT_TIMEOUT).
 * Nothing here frees an evhttp object directly, and no evhttp callback is on the stack when
 * evhttp frees one: the timeout event is deferred. */
#include "conn.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "auth.h"
#include "clock.h"
#include "codec.h"
#include "libmem.h"
#include "log.h"
#include "metrics.h"
#include "mem.h"

#define LINGER_MAX 128             /* refused sockets lingering at once; beyond: closed at once */
#define LINGER_MS 2000             /* a lingering socket is closed after this long */
#define LINGER_MAX_BYTES (1 << 20) /* or after discarding this much */
#define FD_RESERVE 64              /* descriptors for Redis, PostgreSQL, the listener, logs */
#define ACCEPT_PAUSE_MS 100        /* accepting pauses this long when descriptors run out */
#define RATELOG_MS 10000           /* at most one summary line per kind of refusal per period */
#define LINE_KEEP 48               /* bytes kept of each header line, to read Content-Length */
#define AUTH_KEEP 320              /* bytes kept of an Authorization value (keys: 256 at most) */

enum conn_state {
    CONN_IDLE,     /* between requests: no deadline (REQUEST_TIMEOUT governs) */
    CONN_HEADERS,  /* request line and headers arriving: counted, deadline running */
    CONN_BODY,     /* headers complete, body arriving: deadline running */
    CONN_HANDLING, /* the complete request is with its handler: reads are off */
    CONN_CLOSING,  /* refused and answered; evhttp frees it on the next loop pass */
};

struct conn {
    LIST_ENTRY(conn) link;
    struct bufferevent *bev;         /* evhttp's once bound; ours (one reference) until then */
    struct evhttp_connection *evcon; /* NULL until bound */
    struct evbuffer_cb_entry *input_cb;
    struct event *timer; /* binding (activated at once), then the request deadline */
    evutil_socket_t fd;
    bool refused; /* over the cap: answered 503 when bound */
    enum conn_state state;
    struct conn_refusal refusal; /* set once refused, or pending for a pipelined request */
    /* scanner of the current request's line and headers */
    size_t hdr_bytes;
    long hdr_lines;  /* completed lines, the request line included */
    int eol;         /* 0 inside a line, 1 just after LF, 2 after LF CR */
    size_t line_len; /* bytes of the current line so far */
    char line[LINE_KEEP];
    bool body_declared; /* a Content-Length over 0, or a Transfer-Encoding */
    bool trigger;       /* the request line targets /api/v0/trigger-event (wh_triggers_total) */
    bool in_auth;       /* the current line is the (first) Authorization header */
    bool auth_seen;
    size_t auth_len; /* AUTH_KEEP + 1: longer than any key */
    char auth[AUTH_KEEP];
    conn_gone_fn *gone;
    void *gone_arg;
    char id[24];
};

struct lingerer {
    LIST_ENTRY(lingerer) link;
    evutil_socket_t fd;
    struct event *ev;
    int64_t until_ms;
    size_t discarded;
};

/* Counts events of one kind; a summary is logged at most once per RATELOG_MS. */
struct ratelog {
    int64_t next_ms;
    unsigned long count;
};

static struct event_base *base;
static struct evconnlistener *listener;
static struct event *accept_pause;
static struct conn_limits lim;
static LIST_HEAD(, conn) conns = LIST_HEAD_INITIALIZER(conns);
static LIST_HEAD(, lingerer) lingering = LIST_HEAD_INITIALIZER(lingering);
static long nconns; /* connections counted against the cap */
static long nlinger;
static struct conn **by_fd; /* bound connections by socket, to find them from an evcon */
static size_t by_fd_len;
static unsigned long conn_counter;
static struct ratelog log_cap, log_deadline, log_limits, log_accept;

/* True when a summary is due; *n is then the number of events since the last one. */
static bool ratelog_due(struct ratelog *rl, unsigned long *n)
{
    rl->count++;
    int64_t now = clock_mono_ms();
    if (now < rl->next_ms)
        return false;
    *n = rl->count;
    rl->count = 0;
    rl->next_ms = now + RATELOG_MS;
    return true;
}

static struct timeval tv_ms(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* ---- lingering close ------------------------------------------------------------------- */

static void linger_end(struct lingerer *l)
{
    LIST_REMOVE(l, link);
    nlinger--;
    event_free(l->ev);
    evutil_closesocket(l->fd);
    free(l);
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct lingerer *l = arg;
    static char scratch[16384];
    if (what & EV_READ) {
        ssize_t n;
        while ((n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT)) > 0) {
            l->discarded += (size_t)n;
            if (l->discarded > LINGER_MAX_BYTES)
                break;
        }
        int64_t left = l->until_ms - clock_mono_ms();
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && left > 0) {
            struct timeval tv = tv_ms((long)left);
            event_add(l->ev, &tv);
            return;
        }
    }
    linger_end(l); /* timeout, EOF, error or enough discarded */
}

/* Closes fd (ours) the way a server should after answering a request it did not read: FIN
 * now, then whatever the client still sends is read and discarded for up to LINGER_MS, so
 * the client reads the answer instead of a reset. Closes at once when LINGER_MAX sockets
 * already linger. */
static void linger_close(evutil_socket_t fd)
{
    shutdown(fd, SHUT_WR);
    if (nlinger >= LINGER_MAX) {
        evutil_closesocket(fd);
        return;
    }
    struct lingerer *l = xcalloc(1, sizeof *l);
    l->fd = fd;
    l->until_ms = clock_mono_ms() + LINGER_MS;
    l->ev = xnonnull(event_new(base, fd, EV_READ, on_linger, l), "event_new");
    if (!l->ev) {
        evutil_closesocket(fd);
        free(l);
        return;
    }
    struct timeval tv = tv_ms(LINGER_MS);
    event_add(l->ev, &tv);
    LIST_INSERT_HEAD(&lingering, l, link);
    nlinger++;
}

/* ---- refusals -------------------------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    }
    return "Error";
}

static void refusal_set(struct conn_refusal *f, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refusal_set(struct conn_refusal *f, int status, const char *code, const char *fmt, ...)
{
    f->status = status;
    f->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
}

/* Writes the JSON error response straight to the socket, best effort (never blocks). The
 * shape and headers are those of http_error() plus "Connection: close". */
static void send_refusal(evutil_socket_t fd, const struct conn_refusal *f)
{
    struct buf body = {0};
    json_error_body(&body, f->code, f->msg);
    buf_addc(&body, '\n');
    char head[320];
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                 "Cache-Control: no-store\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                 f->status, reason_phrase(f->status),
                 f->status == 503   ? "Retry-After: 1\r\n"
                 : f->status == 401 ? "WWW-Authenticate: Bearer\r\n"
                                    : "",
                 body.len);
    struct iovec iov[2] = {{head, (size_t)n}, {body.data, body.len}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (n > 0 && (size_t)n < sizeof head && sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug(NULL, "refusal %d not sent: %s", f->status, strerror(errno));
    buf_free(&body);
}

/* Answers f on c's socket (unless a reply of evhttp's is still being written: then nothing
 * is sent, bytes must not interleave), lingers on a duplicate of the socket, and has evhttp
 * free the connection on the next loop pass. c stays valid until evhttp's close callback. */
static void conn_reject(struct conn *c, const struct conn_refusal *f)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->trigger)
        metrics_inc(M_TRIGGERS, metrics_trigger_set(f->status));
    c->state = CONN_CLOSING;
    c->refusal = *f;
    evtimer_del(c->timer);
    bufferevent_disable(c->bev, EV_READ);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in)); /* evhttp must not parse any of it */
    if (c->fd >= 0 && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        send_refusal(c->fd, f);
        evutil_socket_t dup = nlinger < LINGER_MAX ? fcntl(c->fd, F_DUPFD_CLOEXEC, 0) : -1;
        if (dup >= 0)
            linger_close(dup);
    }
    /* evhttp_error_cb -> evhttp_connection_fail_(TIMEOUT) -> evhttp_connection_free, for an
     * incoming connection in any state: the same path as its own idle timeout. */
    bufferevent_trigger_event(c->bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING,
                              BEV_TRIG_DEFER_CALLBACKS);
}

/* ---- the request scanner --------------------------------------------------------------- */

static void conn_begin_request(struct conn *c)
{
    c->state = CONN_HEADERS;
    c->hdr_bytes = 0;
    c->hdr_lines = 0;
    c->eol = 0;
    c->line_len = 0;
    c->body_declared = c->in_auth = c->auth_seen = c->trigger = false;
    c->auth_len = 0;
    struct timeval tv = tv_ms(lim.deadline_ms);
    evtimer_add(c->timer, &tv);
}

bool conn_body_too_large(long long len, struct conn_refusal *out)
{
    if (len <= lim.max_body)
        return false;
    if (len == LLONG_MAX)
        refusal_set(out, 413, "payload_too_large",
                    "the body is larger than the limit of %ld bytes (MAX_BODY_BYTES)",
                    lim.max_body);
    else
        refusal_set(out, 413, "payload_too_large",
                    "the body is %lld bytes; the limit is %ld bytes (MAX_BODY_BYTES)", len,
                    lim.max_body);
    return true;
}

/* True when the kept part of the current line starts with the header name hdr (with ':'). */
static bool line_is(const struct conn *c, const char *hdr, size_t n)
{
    size_t kept = c->line_len < LINE_KEEP ? c->line_len : LINE_KEEP;
    return kept >= n && strncasecmp(c->line, hdr, n) == 0;
}

/* Whether the kept part of the request line is "<method> /api/v0/trigger-event" followed by
 * '/', '?' or ' ' (a refusal of it counts in wh_triggers_total, as http.c's answers do). */
static bool request_is_trigger(const struct conn *c)
{
    static const char path[] = "/api/v0/trigger-event";
    size_t kept = c->line_len < LINE_KEEP ? c->line_len : LINE_KEEP;
    const char *sp = memchr(c->line, ' ', kept);
    if (!sp)
        return false;
    size_t at = (size_t)(sp - c->line) + 1, n = sizeof path - 1;
    return kept > at + n && memcmp(c->line + at, path, n) == 0 && c->line[at + n] &&
           strchr("/? ", c->line[at + n]);
}

/* A header line ended: counts it, reads a Content-Length and notes a body. 0, or the refusal
 * status. */
static int conn_line_done(struct conn *c)
{
    c->in_auth = false;
    if (c->hdr_lines++ == 0) { /* the request line */
        c->trigger = request_is_trigger(c);
        return 0;
    }
    if (c->hdr_lines - 1 > lim.max_headers) {
        refusal_set(&c->refusal, 431, "headers_too_large",
                    "the request has more than %ld header lines (MAX_HEADERS)", lim.max_headers);
        return 431;
    }
    static const char te[] = "transfer-encoding:", cl[] = "content-length:";
    if (line_is(c, te, sizeof te - 1)) {
        c->body_declared = true;
        return 0;
    }
    if (!line_is(c, cl, sizeof cl - 1))
        return 0;
    size_t kept = c->line_len < LINE_KEEP ? c->line_len : LINE_KEEP;
    size_t i = sizeof cl - 1;
    while (i < kept && (c->line[i] == ' ' || c->line[i] == '\t'))
        i++;
    long long v = 0;
    size_t digits = 0;
    for (; i < kept && c->line[i] >= '0' && c->line[i] <= '9'; i++, digits++)
        v = v > (LLONG_MAX - 9) / 10 ? LLONG_MAX : v * 10 + (c->line[i] - '0');
    if (digits && i == kept && c->line_len > LINE_KEEP)
        v = LLONG_MAX; /* digits beyond what was kept */
    if (digits == 0)
        return 0; /* not a number: evhttp refuses it */
    c->body_declared |= v > 0;
    return conn_body_too_large(v, &c->refusal) ? 413 : 0;
}

/* The headers are complete: a request that brings a body must bring a valid API key first,
 * so a client without one cannot make the broker buffer bodies (whatever the path; requests
 * without a body are checked by the router). 0, or 401. */
static int conn_headers_done(struct conn *c)
{
    c->state = CONN_BODY;
    if (!c->body_declared || (c->auth_seen && c->auth_len <= AUTH_KEEP &&
                              auth_check(c->auth, c->auth_len, NULL)))
        return 0;
    refusal_set(&c->refusal, 401, "unauthorized",
                "send a valid API key as 'Authorization: Bearer <key>' (a request with a body "
                "is refused before the body is read)");
    return 401;
}

/* A NUL byte in the request line or a header. evhttp keeps lines as C strings, so it would cut
 * the line there and use the rest as if it were whole (an Idempotency-Key "ab\0cd" read as
 * "ab"). Refused with 400, naming the header when its name is a token within the kept part of
 * the line. Returns 400. */
static int conn_nul(struct conn *c)
{
    size_t kept = c->line_len < LINE_KEEP ? c->line_len : LINE_KEEP;
    size_t name = 0;
    while (name < kept && c->line[name] &&
           (isalnum((unsigned char)c->line[name]) || strchr("!#$%&'*+-.^_`|~", c->line[name])))
        name++;
    if (c->hdr_lines > 0 && name > 0 && name < kept && c->line[name] == ':')
        refusal_set(&c->refusal, 400, "invalid_field", "the header %.*s holds a NUL byte",
                    (int)name, c->line);
    else
        refusal_set(&c->refusal, 400, "invalid_field", "the request %s holds a NUL byte",
                    c->hdr_lines == 0 ? "line" : "headers");
    return 400;
}

/* Feeds bytes p[0..n) of the connection to the scanner: the first byte of a request starts
 * it (and its deadline); the request line and headers are counted up to the empty line.
 * Returns 0, or the status (431, 413, 400) the request is refused with (c->refusal is set). */
static int conn_scan(struct conn *c, const char *p, size_t n)
{
    if (n && (c->state == CONN_IDLE || c->state == CONN_HANDLING))
        conn_begin_request(c);
    if (c->state != CONN_HEADERS)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (++c->hdr_bytes > (size_t)lim.max_header_bytes) {
            refusal_set(&c->refusal, 431, "headers_too_large",
                        "the request line and headers exceed %ld bytes (MAX_HEADER_BYTES)",
                        lim.max_header_bytes);
            return 431;
        }
        if (ch == '\n') {
            if (c->eol) /* an empty line (LF or CRLF after a LF): the headers are complete */
                return conn_headers_done(c);
            int st = conn_line_done(c);
            if (st)
                return st;
            c->eol = 1;
            c->line_len = 0;
        } else if (ch == '\r' && c->eol == 1) {
            c->eol = 2;
        } else if (ch == '\0') {
            return conn_nul(c);
        } else {
            if (c->in_auth) {
                if (c->auth_len < AUTH_KEEP)
                    c->auth[c->auth_len++] = ch;
                else
                    c->auth_len = AUTH_KEEP + 1;
            }
            if (c->line_len < LINE_KEEP)
                c->line[c->line_len] = ch;
            c->line_len++;
            c->eol = 0;
            static const char au[] = "authorization:";
            if (c->line_len == sizeof au - 1 && c->hdr_lines > 0 && !c->auth_seen &&
                line_is(c, au, sizeof au - 1))
                c->in_auth = c->auth_seen = true;
        }
    }
    return 0;
}

/* conn_scan() over n bytes of buf from offset off, chain by chain, without copying. */
static int conn_scan_buffer(struct conn *c, struct evbuffer *buf, size_t off, size_t n)
{
    struct evbuffer_ptr pos;
    if (n == 0 || evbuffer_ptr_set(buf, &pos, off, EVBUFFER_PTR_SET) < 0)
        return 0;
    while (n > 0) {
        struct evbuffer_iovec v[8];
        int k = evbuffer_peek(buf, (ev_ssize_t)n, &pos, v, 8);
        if (k <= 0)
            return 0;
        for (int i = 0; i < k && i < 8 && n > 0; i++) {
            size_t len = v[i].iov_len < n ? v[i].iov_len : n;
            int st = conn_scan(c, v[i].iov_base, len);
            if (st || c->state != CONN_HEADERS)
                return st;
            n -= len;
            if (n && evbuffer_ptr_set(buf, &pos, len, EVBUFFER_PTR_ADD) < 0)
                return 0;
        }
    }
    return 0;
}

static void log_refusal(struct conn *c, const struct conn_refusal *f)
{
    unsigned long n;
    log_debug(c->id, "refused %d %s: %s", f->status, f->code, f->msg);
    if (f->status == 408 && ratelog_due(&log_deadline, &n))
        log_info(NULL, "%lu requests not received within REQUEST_DEADLINE (%ld ms): answered 408",
                 n, lim.deadline_ms);
    else if (f->status != 408 && ratelog_due(&log_limits, &n))
        log_info(NULL,
                 "%lu requests refused for their headers or body: answered 431, 413, 401 or 400 "
                 "(last: %s)",
                 n,
                 f->msg);
}

/* ---- connection lifetime --------------------------------------------------------------- */

static void by_fd_set(evutil_socket_t fd, struct conn *c)
{
    if (fd < 0)
        return;
    if ((size_t)fd >= by_fd_len) {
        size_t n = by_fd_len ? by_fd_len : 256;
        while (n <= (size_t)fd)
            n *= 2;
        by_fd = xrealloc(by_fd, n * sizeof *by_fd);
        memset(by_fd + by_fd_len, 0, (n - by_fd_len) * sizeof *by_fd);
        by_fd_len = n;
    }
    by_fd[fd] = c;
}

static struct conn *conn_of(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0 || (size_t)fd >= by_fd_len)
        return NULL;
    struct conn *c = by_fd[fd];
    return c && c->evcon == evcon ? c : NULL;
}

/* Frees c's own state and leaves its bufferevent alone (evhttp's, or released by the caller
 * when never bound). */
static void conn_forget(struct conn *c)
{
    event_free(c->timer);
    if (c->fd >= 0 && (size_t)c->fd < by_fd_len && by_fd[c->fd] == c)
        by_fd[c->fd] = NULL;
    if (!c->refused)
        nconns--;
    LIST_REMOVE(c, link);
    free(c);
}

/* conn_forget(), after removing our callback from the (still valid) bufferevent. */
static void conn_destroy(struct conn *c)
{
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    conn_forget(c);
}

/* evhttp's close callback: the connection is being freed (any path, shutdown included). */
static void on_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct conn *c = arg;
    log_debug(c->id, "closed");
    if (c->gone) {
        conn_gone_fn *gone = c->gone;
        c->gone = NULL;
        gone(c->gone_arg);
    }
    conn_destroy(c);
}

/* Finds the evhttp_connection evhttp made around our bufferevent (its callback argument) and
 * takes its close callback. False when evhttp already gave the connection up: c is freed. */
static bool conn_bind(struct conn *c)
{
    event_del(c->timer);
    void *arg = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, NULL, &arg);
    struct bufferevent *bev = c->bev;
    if (!arg) { /* evhttp freed it while setting it up */
        conn_destroy(c);
        bufferevent_decref(bev);
        return false;
    }
    c->evcon = arg;
    c->fd = bufferevent_getfd(bev);
    by_fd_set(c->fd, c);
    /* A reply is written as several chunks (headers, body): with Nagle's algorithm the last
     * one waits for the client's delayed ACK, 40 ms per request on a keep-alive connection. */
    int one = 1;
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        log_debug(c->id, "TCP_NODELAY: %s", strerror(errno));
    evhttp_connection_set_closecb(c->evcon, on_closed, c);
    bufferevent_decref(bev); /* evhttp's reference remains */
    if (c->refused) {
        unsigned long n;
        struct conn_refusal f;
        refusal_set(&f, 503, "too_many_connections",
                    "the broker has %ld connections open, its limit (MAX_CONNECTIONS); retry later",
                    lim.max_connections);
        log_debug(c->id, "refused: %ld connections open", nconns);
        if (ratelog_due(&log_cap, &n))
            log_warn(NULL,
                     "connection limit reached: %lu connections answered 503 (MAX_CONNECTIONS=%ld)",
                     n, lim.max_connections);
        conn_reject(c, &f);
    }
    return true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct conn *c = arg;
    if (!c->evcon) {
        conn_bind(c);
        return;
    }
    if (c->state != CONN_HEADERS && c->state != CONN_BODY)
        return;
    struct conn_refusal f;
    refusal_set(&f, 408, "request_timeout",
                "the request was not received completely within %ld ms (REQUEST_DEADLINE)",
                lim.deadline_ms);
    log_refusal(c, &f);
    conn_reject(c, &f);
}

/* Every change of the connection's input buffer, synchronously: after each socket read (the
 * new bytes are the last n_added) and after evhttp consumes bytes (ignored). */
static void on_input(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    if (info->n_added == 0)
        return;
    if (!c->evcon && !conn_bind(c))
        return;
    size_t len = evbuffer_get_length(in);
    if (c->state == CONN_CLOSING) {
        evbuffer_drain(in, len); /* calls us again, with n_added 0 */
        return;
    }
    if (c->refusal.status) { /* pending since the last reply: refused once that is written */
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            struct conn_refusal f = c->refusal;
            log_refusal(c, &f);
            conn_reject(c, &f);
        }
        return;
    }
    size_t added = info->n_added < len ? info->n_added : len;
    if (conn_scan_buffer(c, in, len - added, added)) {
        struct conn_refusal f = c->refusal;
        log_refusal(c, &f);
        conn_reject(c, &f);
    }
}

/* evhttp's bufferevent callback, for each accepted connection: a socket bufferevent of ours.
 * The connection is bound (conn_bind) from a callback activated here, once evhttp has set
 * it up and before any of its I/O runs. */
static struct bufferevent *on_new_connection(struct event_base *b, void *arg)
{
    (void)arg;
    struct conn *c = xcalloc(1, sizeof *c);
    c->bev = bufferevent_socket_new(b, -1, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(b, on_timer, c);
    if (!c->bev || !c->timer) {
        log_error(NULL, "out of memory creating a connection");
        abort();
    }
    c->fd = -1;
    snprintf(c->id, sizeof c->id, "conn-%lu", ++conn_counter);
    c->refused = nconns >= lim.max_connections;
    if (!c->refused)
        nconns++;
    c->input_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    bufferevent_incref(c->bev); /* valid until bound, whatever evhttp does meanwhile */
    LIST_INSERT_HEAD(&conns, c, link);
    event_active(c->timer, EV_TIMEOUT, 1);
    return c->bev;
}

/* ---- accepting ------------------------------------------------------------------------- */

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (listener)
        evconnlistener_enable(listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    unsigned long n;
    if (ratelog_due(&log_accept, &n))
        log_warn(NULL, "accept failed %lu times: %s (open connections: %ld, lingering: %ld)", n,
                 strerror(err), nconns, nlinger);
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* The pending connection stays in the backlog and the listener stays readable: pause
         * instead of spinning until a descriptor is free. */
        evconnlistener_disable(l);
        struct timeval tv = tv_ms(ACCEPT_PAUSE_MS);
        evtimer_add(accept_pause, &tv);
    }
}

/* Raises the soft descriptor limit to what the cap needs, or lowers the cap to fit. */
static void fit_descriptor_limit(void)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)lim.max_connections + LINGER_MAX + FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = old;
    if (rl.rlim_cur >= need) {
        log_info(NULL, "raised the open-file limit from %llu to %llu for MAX_CONNECTIONS=%ld",
                 (unsigned long long)old, (unsigned long long)rl.rlim_cur, lim.max_connections);
        return;
    }
    long fit = (long)rl.rlim_cur - LINGER_MAX - FD_RESERVE;
    if (fit < 1)
        fit = 1;
    log_warn(NULL, "the open-file limit is %llu: MAX_CONNECTIONS lowered from %ld to %ld",
             (unsigned long long)rl.rlim_cur, lim.max_connections, fit);
    lim.max_connections = fit;
}

int conn_attach(struct event_base *b, struct evhttp *http, struct evconnlistener *l,
                const struct conn_limits *limits, char *err, size_t errlen)
{
    base = b;
    lim = *limits;
    listener = l;
    accept_pause = xnonnull(evtimer_new(base, on_accept_resume, NULL), "evtimer_new");
    if (!accept_pause) {
        snprintf(err, errlen, "cannot create the accept timer");
        return -1;
    }
    fit_descriptor_limit();
    /* libevent counts header bytes without line ends, so our count (with them) always reaches
     * the limit first and answers 431 JSON; libevent's HTML 413 is the backstop. */
    evhttp_set_max_headers_size(http, lim.max_header_bytes);
    /* A declared Content-Length over the limit never reaches evhttp (conn_line_done), and
     * http.c refuses a complete body over it (conn_body_too_large). libevent's own 413 is HTML:
     * let chunked bodies up to twice the limit through so ours answers, and let libevent cut
     * off anything larger before buffering it (decision 10). */
    evhttp_set_max_body_size(http, lim.max_body * 2 + 65536);
    evconnlistener_set_error_cb(listener, on_accept_error);
    evhttp_set_bevcb(http, on_new_connection, NULL);
    return 0;
}

void conn_stop_accepting(void)
{
    listener = NULL;
    if (accept_pause)
        evtimer_del(accept_pause);
}

void conn_free(void)
{
    struct conn *c;
    while ((c = LIST_FIRST(&conns)) != NULL) {
        /* evhttp_free() closed every bound connection (on_closed); only connections it never
         * finished setting up can be left, with our reference on their bufferevent. */
        struct bufferevent *bev = c->bev;
        if (c->evcon) {
            conn_forget(c);
            continue;
        }
        conn_destroy(c);
        bufferevent_decref(bev);
    }
    struct lingerer *l;
    while ((l = LIST_FIRST(&lingering)) != NULL)
        linger_end(l);
    if (accept_pause)
        event_free(accept_pause);
    accept_pause = NULL;
    listener = NULL;
    free(by_fd);
    by_fd = NULL;
    by_fd_len = 0;
}

bool conn_request_begin(struct evhttp_connection *evcon, conn_gone_fn *gone, void *arg,
                        struct conn_refusal *out)
{
    struct conn *c = conn_of(evcon);
    if (!c)
        return false;
    evtimer_del(c->timer);
    if (c->state == CONN_CLOSING || c->refusal.status) {
        /* A connection being closed (its refusal is kept), or a pipelined request over a limit
         * that evhttp still parsed: the caller answers at once, and no handler starts work
         * that would outlive the connection. */
        *out = c->refusal;
        if (c->state != CONN_CLOSING) {
            c->refusal.status = 0;
            c->state = CONN_HANDLING;
            log_refusal(c, out);
        }
        return true;
    }
    c->state = CONN_HANDLING;
    c->gone = gone;
    c->gone_arg = arg;
    return false;
}

void conn_request_end(struct evhttp_connection *evcon)
{
    struct conn *c = conn_of(evcon);
    if (!c)
        return;
    c->gone = NULL;
    if (c->state != CONN_HANDLING)
        return;
    c->state = CONN_IDLE;
    /* Bytes already buffered are the next, pipelined request: it starts now. A refusal found
     * here waits until this reply is written (on_input) or the request is parsed. */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    (void)conn_scan_buffer(c, in, 0, evbuffer_get_length(in));
}
