/* The small GET /metrics listener of the worker (evhttp on its loop) and the reconciler (a
 * thread of its own, one connection at a time). */
#include "metricsrv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "libmem.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"

#define REQUEST_MAX 8192
#define TIMEOUT_S 5

int metricsrv_parse(const char *addr, char *host, size_t hostlen, int *port, char *err,
                    size_t errlen)
{
    int rc;
    if (addr[0] == ':') {
        char full[300];
        snprintf(full, sizeof full, "127.0.0.1%s", addr);
        rc = cfg_parse_hostport(full, host, hostlen, port);
    } else {
        rc = cfg_parse_hostport(addr, host, hostlen, port);
    }
    if (rc < 0)
        snprintf(err, errlen, "METRICS_LISTEN must be host:port or :port (got \"%s\")", addr);
    return rc;
}

/* The port a socket is bound to. */
static int bound_port(int fd, int fallback)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (ss.ss_family == AF_INET6)
            return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fallback;
}

/* ---- on the event loop (worker) ------------------------------------------------------------ */

static struct evhttp *http;
static struct buf page; /* reused across scrapes */

static void on_request(struct evhttp_request *ev, void *arg)
{
    (void)arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    struct evkeyvalq *h = evhttp_request_get_output_headers(ev);
    struct evbuffer *out = evhttp_request_get_output_buffer(ev);
    if (!path || strcmp(path, "/metrics") != 0) {
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
        evbuffer_add(out, "not found: metrics are at /metrics\n", 35);
        evhttp_send_reply(ev, 404, "Not Found", NULL);
        return;
    }
    buf_reset(&page);
    metrics_render(&page);
    evhttp_add_header(h, "Content-Type", METRICS_CONTENT_TYPE);
    evbuffer_add(out, page.data, page.len);
    evhttp_send_reply(ev, 200, "OK", NULL);
}

int metricsrv_start(struct event_base *base, const char *addr, char *err, size_t errlen)
{
    if (!addr[0])
        return 0;
    char host[256];
    int port;
    if (metricsrv_parse(addr, host, sizeof host, &port, err, errlen) < 0)
        return -1;
    http = xnonnull(evhttp_new(base), "evhttp_new");
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(http, REQUEST_MAX);
    evhttp_set_max_body_size(http, 0);
    evhttp_set_timeout(http, TIMEOUT_S);
    evhttp_set_gencb(http, on_request, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (!bs) {
        snprintf(err, errlen, "cannot listen on METRICS_LISTEN %s", addr);
        return -1;
    }
    log_info(NULL, "metrics at http://%s:%d/metrics", host,
             bound_port(evhttp_bound_socket_get_fd(bs), port));
    return 0;
}

void metricsrv_free(void)
{
    if (http)
        evhttp_free(http);
    http = NULL;
    buf_free(&page);
}

/* ---- on a thread (reconciler) -------------------------------------------------------------- */

static int listen_fd = -1;
static int wake[2] = {-1, -1};
static pthread_t thread;

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Reads the request head (to its blank line, at most REQUEST_MAX bytes, within TIMEOUT_S) and
 * answers it. */
static void serve_one(int fd, struct buf *out)
{
    struct timeval tv = {TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[REQUEST_MAX + 1];
    size_t n = 0;
    time_t start = time(NULL);
    while (n < REQUEST_MAX && time(NULL) - start < TIMEOUT_S) {
        ssize_t r = recv(fd, req + n, REQUEST_MAX - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[n] = '\0';
    bool head = strncmp(req, "HEAD ", 5) == 0;
    const char *target = strncmp(req, "GET ", 4) == 0 ? req + 4 : head ? req + 5 : NULL;
    size_t tl = target ? strcspn(target, " ?\r\n") : 0;
    buf_reset(out);
    if (!target || tl != 8 || memcmp(target, "/metrics", 8) != 0) {
        static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; "
                                 "charset=utf-8\r\nContent-Length: 35\r\nConnection: close\r\n\r\n"
                                 "not found: metrics are at /metrics\n";
        send_all(fd, nf, sizeof nf - 1);
        return;
    }
    struct buf body = {0};
    metrics_lock();
    metrics_render(&body);
    metrics_unlock();
    buf_printf(out,
               "HTTP/1.1 200 OK\r\nContent-Type: " METRICS_CONTENT_TYPE
               "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
               body.len);
    if (!head)
        buf_add(out, body.data, body.len);
    buf_free(&body);
    send_all(fd, out->data, out->len);
}

static void *serve(void *arg)
{
    (void)arg;
    struct buf out = {0};
    for (;;) {
        struct pollfd p[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(fd, &out);
        close(fd);
    }
    buf_free(&out);
    return NULL;
}

int metricsrv_start_thread(const char *addr, char *err, size_t errlen)
{
    if (!addr[0])
        return 0;
    char host[256], portstr[16];
    int port;
    if (metricsrv_parse(addr, host, sizeof host, &port, err, errlen) < 0)
        return -1;
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *ai = NULL;
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "METRICS_LISTEN %s: %s", addr, gai_strerror(gai));
        return -1;
    }
    listen_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (listen_fd < 0 || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(listen_fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(listen_fd, 16) < 0 ||
        pipe2(wake, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "cannot listen on METRICS_LISTEN %s: %s", addr, strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    int bp = bound_port(listen_fd, port);
    /* the thread is born with SIGTERM and SIGINT blocked: the loop's thread gets them */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(&thread, NULL, serve, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the metrics thread: %s", strerror(rc));
        return -1;
    }
    log_info(NULL, "metrics at http://%s:%d/metrics", host, bp);
    return 0;
}

void metricsrv_stop_thread(void)
{
    if (listen_fd < 0)
        return;
    ssize_t w = write(wake[1], "x", 1);
    (void)w;
    pthread_join(thread, NULL);
    close(listen_fd);
    close(wake[0]);
    close(wake[1]);
    listen_fd = -1;
}
