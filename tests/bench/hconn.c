/* Keep-alive HTTP/1.1 client connection on libevent for the load generator. Cheap on purpose:
 * the read event stays added for the connection's life (no epoll_ctl per request), the request
 * goes out in one write(), the response is parsed in place (tests/bench/http1.c). */
#include "hconn.h"

#include "http1.h"
#include "mem.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HCONN_READ_CHUNK 16384

struct hconn {
    struct event_base *base;
    struct sockaddr_storage addr;
    socklen_t alen;
    int fd;            /* -1: not connected */
    struct event *rev; /* EV_READ | EV_PERSIST while connected */
    struct event *wev; /* EV_WRITE | EV_PERSIST while connecting or output is pending */
    struct event *tev; /* the request's timeout */
    bool connecting;   /* non-blocking connect in progress */
    bool wev_added;
    bool reused;   /* the connection answered a request before */
    struct buf in; /* response bytes */
    /* the request in flight */
    bool busy;
    const char *req; /* borrowed from the caller */
    size_t req_len, req_off;
    bool retried, connected;
    hconn_cb cb;
    void *arg;
};

static void hconn_on_read(evutil_socket_t fd, short what, void *arg);
static void hconn_on_write(evutil_socket_t fd, short what, void *arg);

static void hconn_close(struct hconn *c)
{
    if (c->fd < 0)
        return;
    event_free(c->rev);
    event_free(c->wev);
    c->rev = c->wev = NULL;
    c->wev_added = c->connecting = c->reused = false;
    close(c->fd);
    c->fd = -1;
    buf_reset(&c->in);
}

/* Ends the request in flight: the callback is the last thing done with c. */
static void hconn_finish(struct hconn *c, long status, const char *body, size_t len,
                         const char *err)
{
    struct hconn_result res = {status, body ? body : "", len, err, c->connected};
    event_del(c->tev);
    c->busy = false;
    c->req = NULL;
    c->cb(c->arg, &res);
}

static void hconn_fail(struct hconn *c, const char *err)
{
    hconn_close(c);
    hconn_finish(c, 0, NULL, 0, err);
}

/* Opens the socket and starts connecting. Returns 0 or -1 (message in err). */
static int hconn_connect(struct hconn *c, char *err, size_t errlen)
{
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&c->addr, c->alen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    c->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, hconn_on_read, c);
    c->wev = event_new(c->base, fd, EV_WRITE | EV_PERSIST, hconn_on_write, c);
    if (!c->rev || !c->wev || event_add(c->rev, NULL) < 0 || event_add(c->wev, NULL) < 0) {
        snprintf(err, errlen, "cannot watch the socket");
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        c->rev = c->wev = NULL;
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = c->wev_added = true;
    c->connected = true;
    return 0;
}

/* Writes what is left of the request; watches for writability while some is left. A write
 * error on a reused connection (the server closed it) starts the request again on a new one.
 * Returns 0, or -1 (connection closed, message in err). Never calls the callback. */
static int hconn_write(struct hconn *c, char *err, size_t errlen)
{
    while (c->req_off < c->req_len) {
        ssize_t n = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            snprintf(err, errlen, "write: %s", strerror(errno));
            bool again = c->reused && !c->retried;
            hconn_close(c);
            if (!again)
                return -1;
            c->retried = true;
            c->req_off = 0;
            return hconn_connect(c, err, errlen); /* writes once connected */
        }
        c->req_off += (size_t)n;
    }
    bool more = c->req_off < c->req_len;
    if (more && !c->wev_added) {
        event_add(c->wev, NULL);
        c->wev_added = true;
    } else if (!more && c->wev_added) {
        event_del(c->wev);
        c->wev_added = false;
    }
    return 0;
}

static void hconn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct hconn *c = arg;
    (void)what;
    if (c->connecting) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        c->connecting = false;
        if (soerr) {
            char err[128];
            snprintf(err, sizeof err, "connect: %s", strerror(soerr));
            hconn_fail(c, err);
            return;
        }
    }
    if (!c->busy) {
        event_del(c->wev);
        c->wev_added = false;
        return;
    }
    char err[128];
    if (hconn_write(c, err, sizeof err) < 0)
        hconn_finish(c, 0, NULL, 0, err);
}

/* Parses the response in c->in; finishes the request when it is whole. eof: the server closed
 * the connection (a response without Content-Length ends there). */
static void hconn_parse(struct hconn *c, bool eof)
{
    struct http1_head h;
    for (;;) {
        int rc = http1_parse_response(c->in.data, c->in.len, &h);
        if (rc < 0) {
            hconn_fail(c, "malformed response");
            return;
        }
        if (rc == 0) {
            if (eof)
                hconn_fail(c, c->in.len ? "connection closed in the response head"
                                        : "connection closed before the response");
            return;
        }
        if (h.status >= 200)
            break;
        /* 100 Continue and the like: skipped */
        memmove(c->in.data, c->in.data + h.head_len, c->in.len - h.head_len);
        c->in.len -= h.head_len;
    }
    if (h.chunked) {
        hconn_fail(c, "chunked responses are not supported");
        return;
    }
    size_t avail = c->in.len - h.head_len, blen;
    if (h.content_length < 0) { /* the body ends with the connection */
        if (!eof)
            return;
        blen = avail;
    } else if (avail < (size_t)h.content_length) {
        if (eof)
            hconn_fail(c, "connection closed in the response body");
        return;
    } else {
        blen = (size_t)h.content_length;
    }
    c->in.data[h.head_len + blen] = '\0';
    if (eof || h.content_length < 0 || !http1_keep_alive(&h) || h.head_len + blen != c->in.len ||
        c->req_off < c->req_len) {
        /* not reusable ("close", bytes after the response, or answered before the whole
         * request was sent): the body outlives the socket */
        struct buf in = c->in;
        c->in = (struct buf){0};
        hconn_close(c);
        hconn_finish(c, h.status, in.data + h.head_len, blen, NULL);
        buf_free(&in);
        return;
    }
    c->reused = true;
    hconn_finish(c, h.status, c->in.data + h.head_len, blen, NULL);
    /* The callback may have sent the next request; its response is read from the loop only. */
    buf_reset(&c->in);
}

static void hconn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct hconn *c = arg;
    (void)what;
    buf_reserve(&c->in, HCONN_READ_CHUNK);
    ssize_t n = read(fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (!c->busy) { /* the server closed an idle connection (or sent garbage): drop it */
        hconn_close(c);
        return;
    }
    if (n <= 0 && c->in.len == 0 && c->reused && !c->retried) {
        /* closed before answering a request on a reused connection: once more, on a new one */
        char err[128];
        hconn_close(c);
        c->retried = true;
        c->req_off = 0;
        if (hconn_connect(c, err, sizeof err) < 0)
            hconn_finish(c, 0, NULL, 0, err);
        return;
    }
    if (n < 0) {
        char err[128];
        snprintf(err, sizeof err, "read: %s", strerror(errno));
        hconn_fail(c, err);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    hconn_parse(c, n == 0);
}

static void hconn_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hconn_fail(arg, "timeout");
}

struct hconn *hconn_new(struct event_base *base, const struct sockaddr *addr, socklen_t alen)
{
    struct hconn *c = xcalloc(1, sizeof *c);
    c->base = base;
    if (alen > sizeof c->addr)
        alen = sizeof c->addr;
    memcpy(&c->addr, addr, alen);
    c->alen = alen;
    c->fd = -1;
    c->tev = evtimer_new(base, hconn_on_timeout, c);
    if (!c->tev)
        abort();
    return c;
}

int hconn_send(struct hconn *c, const char *req, size_t len, long timeout_ms, hconn_cb cb,
               void *arg, char *err, size_t errlen)
{
    if (c->busy) {
        snprintf(err, errlen, "connection busy");
        return -1;
    }
    c->connected = c->retried = false;
    if (c->fd < 0 && hconn_connect(c, err, errlen) < 0)
        return -1;
    c->busy = true;
    c->req = req;
    c->req_len = len;
    c->req_off = 0;
    c->cb = cb;
    c->arg = arg;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    event_add(c->tev, &tv);
    if (!c->connecting && hconn_write(c, err, errlen) < 0) {
        event_del(c->tev);
        c->busy = false;
        c->req = NULL;
        return -1;
    }
    return 0;
}

bool hconn_busy(const struct hconn *c)
{
    return c->busy;
}

void hconn_free(struct hconn *c)
{
    if (!c)
        return;
    hconn_close(c);
    event_free(c->tev);
    buf_free(&c->in);
    free(c);
}
