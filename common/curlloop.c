/* libcurl multi driven by a libevent event_base (curl's multi-event.c pattern). */
#include "curlloop.h"

#include <stdlib.h>

#include <event2/event_struct.h>

#include "mem.h"

struct curlloop {
    CURLM *multi;
    struct event_base *base;
    struct event timer; /* libcurl's timeout */
    int running;        /* transfers libcurl still has under way */
    curlloop_done_fn *done;
    void *arg;
};

/* One per socket libcurl watches (curl_multi_assign), freed on CURL_POLL_REMOVE. */
struct sock_ctx {
    struct event ev;
    short kind; /* what the event waits for now */
};

/* Every finished transfer leaves the multi handle and goes to the owner. Called after each
 * curl_multi_socket_action. */
static void check_multi_info(struct curlloop *l)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(l->multi, &left))) {
        if (msg->msg == CURLMSG_DONE) {
            CURL *e = msg->easy_handle;
            CURLcode res = msg->data.result; /* msg is not valid past the removal */
            curl_multi_remove_handle(l->multi, e);
            l->done(e, res, l->arg);
        }
    }
}

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
    struct curlloop *l = arg;
    int action =
        ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(l->multi, fd, action, &l->running);
    check_multi_info(l);
    if (l->running <= 0)
        evtimer_del(&l->timer);
}

static void on_timeout(evutil_socket_t fd, short kind, void *arg)
{
    struct curlloop *l = arg;
    (void)fd, (void)kind;
    curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &l->running);
    check_multi_info(l);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms our timer; never calls libcurl. */
static int on_curl_timer(CURLM *m, long timeout_ms, void *arg)
{
    struct curlloop *l = arg;
    (void)m;
    if (timeout_ms < 0) {
        evtimer_del(&l->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(&l->timer, &tv);
    }
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: keeps one libevent event per socket in step with libcurl. */
static int on_curl_socket(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
    struct curlloop *l = arg;
    struct sock_ctx *sc = sockp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            event_del(&sc->ev);
            free(sc);
        }
        curl_multi_assign(l->multi, s, NULL);
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (!sc) {
        sc = xcalloc(1, sizeof *sc);
        curl_multi_assign(l->multi, s, sc);
    } else if (sc->kind == kind) {
        return 0; /* unchanged: no epoll_ctl */
    } else {
        event_del(&sc->ev);
    }
    sc->kind = kind;
    event_assign(&sc->ev, l->base, s, kind, on_socket_event, l);
    event_add(&sc->ev, NULL);
    return 0;
}

struct curlloop *curlloop_new(struct event_base *base, curlloop_done_fn *done, void *arg)
{
    CURLM *multi = curl_multi_init();
    if (!multi)
        return NULL;
    struct curlloop *l = xcalloc(1, sizeof *l);
    l->multi = multi;
    l->base = base;
    l->done = done;
    l->arg = arg;
    evtimer_assign(&l->timer, base, on_timeout, l);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, l);
    return l;
}

CURLM *curlloop_multi(struct curlloop *l)
{
    return l->multi;
}

CURLMcode curlloop_add(struct curlloop *l, CURL *easy)
{
    return curl_multi_add_handle(l->multi, easy);
}

void curlloop_remove(struct curlloop *l, CURL *easy)
{
    curl_multi_remove_handle(l->multi, easy);
}

void curlloop_free(struct curlloop *l)
{
    if (!l)
        return;
    curl_multi_cleanup(l->multi); /* may still call on_curl_socket and on_curl_timer */
    evtimer_del(&l->timer);
    free(l);
}
