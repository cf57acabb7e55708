/* An asynchronous Redis connection on the event loop (hiredis + its libevent adapter) that
 * reconnects with backoff, plus an argument-vector builder for binary-safe commands. */
#include "rds.h"

#include <async.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "libmem.h"
#include "log.h"
#include "mem.h"
#include "rcluster.h"
#include "reconn.h"

/* No reply for this long while commands wait: the server is stopped or unreachable (a
 * blocking read waits at most its BLOCK time, well under this). */
#define RDS_REPLY_TIMEOUT_MS 5000

struct rds {
    struct event_base *base;
    char *name;
    struct rds_addr addr;
    redisAsyncContext *ac;
    bool up;       /* connected, AUTH/SELECT answered OK */
    int handshake_left;    /* AUTH/SELECT replies still due on this connection */
    bool handshake_failed; /* one was refused: the connection is being dropped */
    bool freeing;  /* rds_free called: no reconnects */
    struct reconn backoff;
    struct event *retry_ev;   /* reconnect timer */
    struct event *connect_ev; /* connect deadline */
    struct event *watch_ev;   /* reply watchdog */
    long waiting;             /* commands sent and not yet answered */
    struct reconn_watch watch; /* silence since the last reply (or since going idle->busy) */
    rds_state_fn *on_state;
    void *arg;
    struct rcluster *cl; /* redis-cluster:// URL: the router does the rest (no ac, no timers) */
};

struct pending {
    struct rds *r;
    rds_reply_fn *cb;
    void *priv;
};

static void start_connect(struct rds *r);

/* ---- event-loop adapter -------------------------------------------------------------------
 * hiredis 0.14's adapters/libevent.h registers one-shot events, so every reply costs an
 * epoll_ctl DEL and ADD. This adapter (the shape of hiredis 1.x's) keeps one persistent event
 * per connection and changes it only when the wanted directions change. The context may be
 * freed inside redisAsyncHandleRead; the adapter's memory then outlives it until the callback
 * returns. */

struct rds_ev {
    redisAsyncContext *ac;
    struct event_base *base;
    struct event ev;
    short flags;      /* EV_READ / EV_WRITE wanted */
    bool in_callback;
    bool freed;       /* cleanup ran during the callback */
};

static void ev_handle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct rds_ev *e = arg;
    e->in_callback = true;
    if (what & EV_READ)
        redisAsyncHandleRead(e->ac);
    if (!e->freed && (what & EV_WRITE) && (e->flags & EV_WRITE))
        redisAsyncHandleWrite(e->ac);
    e->in_callback = false;
    if (e->freed)
        free(e);
}

static void ev_update(struct rds_ev *e, short flags)
{
    if (e->freed || flags == e->flags)
        return;
    if (e->flags)
        event_del(&e->ev);
    e->flags = flags;
    if (flags) {
        event_assign(&e->ev, e->base, e->ac->c.fd, (short)(flags | EV_PERSIST), ev_handle, e);
        event_add(&e->ev, NULL);
    }
}

static void ev_add_read(void *p)
{
    struct rds_ev *e = p;
    ev_update(e, (short)(e->flags | EV_READ));
}

static void ev_del_read(void *p)
{
    struct rds_ev *e = p;
    ev_update(e, (short)(e->flags & ~EV_READ));
}

static void ev_add_write(void *p)
{
    struct rds_ev *e = p;
    ev_update(e, (short)(e->flags | EV_WRITE));
}

static void ev_del_write(void *p)
{
    struct rds_ev *e = p;
    ev_update(e, (short)(e->flags & ~EV_WRITE));
}

static void ev_cleanup(void *p)
{
    struct rds_ev *e = p;
    if (e->flags)
        event_del(&e->ev);
    e->flags = 0;
    if (e->in_callback)
        e->freed = true;
    else
        free(e);
}

static void ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct rds_ev *e = xcalloc(1, sizeof *e);
    e->ac = ac;
    e->base = base;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
}

static void set_state(struct rds *r, bool up)
{
    if (r->up == up)
        return;
    r->up = up;
    if (r->on_state)
        r->on_state(r, up, r->arg);
}

static void schedule_reconnect(struct rds *r)
{
    if (r->freeing)
        return;
    reconn_schedule(&r->backoff, r->retry_ev);
}

/* The connection counts as up once AUTH and SELECT (those the URL asks for) both succeeded.
 * A refusal is logged once, without the password, and the connection is dropped: the
 * disconnect callback schedules the reconnect with backoff (not reset until up). */
static void handshake_done(struct rds *r)
{
    evtimer_del(r->connect_ev);
    reconn_reset(&r->backoff);
    log_info(r->name, "connected to Redis at %s:%d", r->addr.host, r->addr.port);
    set_state(r, true);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rds *r = privdata;
    redisReply *rep = reply;
    if (!rep || ac != r->ac || r->handshake_failed)
        return; /* connection gone (its callback reports it), or already refused */
    if (rep->type == REDIS_REPLY_ERROR) {
        r->handshake_failed = true;
        evtimer_del(r->connect_ev);
        /* Replies come in order: AUTH (when a password is set) first, then SELECT. */
        bool auth = r->addr.password && r->handshake_left == (r->addr.db ? 2 : 1);
        log_error(r->name, "Redis at %s:%d refused %s: %s (retrying in %ld ms)", r->addr.host,
                  r->addr.port, auth ? "AUTH" : "SELECT",
                  rep->str ? rep->str : "error", reconn_delay(&r->backoff));
        redisAsyncDisconnect(ac); /* after the replies still due; then on_disconnect */
        return;
    }
    if (--r->handshake_left == 0)
        handshake_done(r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rds *r = ac->data;
    if (!r)
        return;
    if (status != REDIS_OK) {
        evtimer_del(r->connect_ev);
        log_warn(r->name, "cannot connect to Redis at %s:%d: %s (retrying in %ld ms)", r->addr.host,
                 r->addr.port, ac->errstr, reconn_delay(&r->backoff));
        r->ac = NULL; /* hiredis frees the context after this callback */
        schedule_reconnect(r);
        return;
    }
    /* The connect deadline stays armed until the handshake answered. */
    r->handshake_failed = false;
    r->handshake_left = (r->addr.password ? 1 : 0) + (r->addr.db ? 1 : 0);
    if (r->addr.password) {
        const char *argv[] = {"AUTH", r->addr.password};
        size_t lens[] = {4, strlen(r->addr.password)};
        redisAsyncCommandArgv(r->ac, on_handshake, r, 2, argv, lens);
    }
    if (r->addr.db) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", r->addr.db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, (size_t)n};
        redisAsyncCommandArgv(r->ac, on_handshake, r, 2, argv, lens);
    }
    if (r->handshake_left == 0)
        handshake_done(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rds *r = ac->data;
    if (!r)
        return;
    r->ac = NULL; /* hiredis frees the context after this callback */
    if (r->freeing)
        return;
    if (!r->handshake_failed) /* else the refusal was logged already */
        log_warn(r->name, "lost Redis connection%s%s (reconnecting in %ld ms)",
                 status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : ac->errstr,
                 reconn_delay(&r->backoff));
    set_state(r, false);
    schedule_reconnect(r);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_connect(arg);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rds *r = arg;
    if (!r->ac || r->up)
        return;
    log_warn(r->name, "connecting to Redis at %s:%d timed out", r->addr.host, r->addr.port);
    redisAsyncContext *ac = r->ac;
    ac->data = NULL; /* our callbacks ignore this context from now on */
    r->ac = NULL;
    redisAsyncFree(ac);
    schedule_reconnect(r);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rds *r = arg;
    bool silent = reconn_watch_tick(&r->watch, clock_mono_ms(), RDS_REPLY_TIMEOUT_MS);
    if (silent && r->up && r->ac && r->waiting > 0) {
        log_warn(r->name, "Redis has not answered for %d ms with %ld commands waiting; "
                          "reconnecting",
                 RDS_REPLY_TIMEOUT_MS, r->waiting);
        redisAsyncContext *ac = r->ac;
        /* Free now: redisAsyncDisconnect would wait for the replies that do not come. The
         * disconnect callback runs (pending callbacks get NULL) and schedules the reconnect. */
        redisAsyncFree(ac);
    }
}

static void start_connect(struct rds *r)
{
    if (r->freeing || r->ac)
        return;
    redisAsyncContext *ac = redisAsyncConnect(r->addr.host, r->addr.port);
    if (!ac) {
        log_error(r->name, "cannot allocate a Redis context");
        schedule_reconnect(r);
        return;
    }
    if (ac->err) {
        log_warn(r->name, "cannot connect to Redis at %s:%d: %s", r->addr.host, r->addr.port, ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    ev_attach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    reconn_arm_deadline(r->connect_ev);
}

void rds_mask_url(const char *url, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    const char *scheme = strstr(url, "://");
    const char *user = scheme ? scheme + 3 : url;
    const char *at = strrchr(user, '@');
    size_t keep, rest;
    const char *tail;
    if (at) {
        /* user[:password]@: the part after the first colon, or all of it without one (that is
         * how rds_parse_url reads it), is the password. */
        const char *colon = memchr(user, ':', (size_t)(at - user));
        keep = colon ? (size_t)(colon + 1 - url) : (size_t)(user - url);
        tail = at;
    } else {
        keep = strlen(url);
        tail = url + keep;
    }
    rest = strlen(tail);
    snprintf(out, outlen, "%.*s%s%.*s", (int)keep, url, at ? "****" : "", (int)rest, tail);
}

int rds_parse_url(const char *url, struct rds_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    char shown[512]; /* the URL as error messages show it: the password masked */
    rds_mask_url(url, shown, sizeof shown);
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "REDIS_URL must start with redis:// (got \"%s\")", shown);
        return -1;
    }
    p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (at > pw)
            a->password = xstrndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    const char *colon = memchr(p, ':', hostport);
    size_t hl = colon ? (size_t)(colon - p) : hostport;
    if (hl == 0 || hl >= sizeof a->host) {
        snprintf(err, errlen, "REDIS_URL has no host (got \"%s\")", shown);
        goto out_fail;
    }
    memcpy(a->host, p, hl);
    a->host[hl] = '\0';
    a->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != p + hostport || port < 1 || port > 65535) {
            snprintf(err, errlen, "REDIS_URL has an invalid port (got \"%s\")", shown);
            goto out_fail;
        }
        a->port = (int)port;
    }
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000) {
            snprintf(err, errlen, "REDIS_URL has an invalid database number (got \"%s\")", shown);
            goto out_fail;
        }
        a->db = (int)db;
    }
    return 0;
out_fail:
    free(a->password);
    a->password = NULL;
    return -1;
}

static void cluster_state(bool up, void *arg)
{
    set_state(arg, up);
}

struct rds *rds_new(struct event_base *base, const char *url, const char *name,
                    rds_state_fn *on_state, void *arg, char *err, size_t errlen)
{
    struct rds *r = xcalloc(1, sizeof *r);
    r->base = base;
    r->name = xstrdup(name);
    r->on_state = on_state;
    r->arg = arg;
    if (rcluster_is_url(url)) {
        r->cl = rcluster_new(base, url, name, r, cluster_state, r, err, errlen);
        if (!r->cl) {
            free(r->name);
            free(r);
            return NULL;
        }
        return r;
    }
    reconn_init(&r->backoff);
    if (rds_parse_url(url, &r->addr, err, errlen) < 0) {
        free(r->name);
        free(r);
        return NULL;
    }
    r->retry_ev = xnonnull(evtimer_new(base, on_retry, r), "evtimer_new");
    r->connect_ev = xnonnull(evtimer_new(base, on_connect_timeout, r), "evtimer_new");
    r->watch_ev = reconn_watch_event(base, on_watch, r);
    start_connect(r);
    return r;
}

void rds_free(struct rds *r)
{
    if (!r)
        return;
    r->freeing = true;
    if (r->cl) {
        rcluster_free(r->cl);
        free(r->name);
        free(r);
        return;
    }
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks run with NULL replies */
    }
    event_free(r->retry_ev);
    event_free(r->connect_ev);
    event_free(r->watch_ev);
    free(r->addr.password);
    free(r->name);
    free(r);
}

bool rds_up(const struct rds *r)
{
    return r->up;
}

bool rds_is_cluster(const struct rds *r)
{
    return r->cl != NULL;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct pending *p = privdata;
    p->r->waiting--;
    reconn_watch_restart(&p->r->watch, clock_mono_ms());
    if (p->cb)
        p->cb(p->r, reply, p->priv);
    free(p);
}

int rds_cmd(struct rds *r, rds_reply_fn *cb, void *priv, int argc, const char **argv,
            const size_t *lens)
{
    if (r->cl)
        return rcluster_cmd(r->cl, cb, priv, argc, argv, lens);
    if (!r->up || !r->ac)
        return -1;
    struct pending *p = xmalloc(sizeof *p);
    p->r = r;
    p->cb = cb;
    p->priv = priv;
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
        free(p);
        return -1;
    }
    if (r->waiting++ == 0)
        reconn_watch_restart(&r->watch, clock_mono_ms());
    return 0;
}

bool rds_is_error(const redisReply *reply, const char *prefix)
{
    return reply && reply->type == REDIS_REPLY_ERROR && reply->str &&
           strncmp(reply->str, prefix, strlen(prefix)) == 0;
}

static void rargs_grow(struct rargs *a)
{
    if (a->argc < a->cap)
        return;
    a->cap = a->cap ? a->cap * 2 : 16;
    a->argv = xrealloc(a->argv, (size_t)a->cap * sizeof *a->argv);
    a->lens = xrealloc(a->lens, (size_t)a->cap * sizeof *a->lens);
}

void rargs_add(struct rargs *a, const char *p, size_t n)
{
    rargs_grow(a);
    a->argv[a->argc] = p;
    a->lens[a->argc] = n;
    a->argc++;
}

void rargs_adds(struct rargs *a, const char *s)
{
    rargs_add(a, s, strlen(s));
}

void rargs_addll(struct rargs *a, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    if (a->nowned == a->capowned) {
        a->capowned = a->capowned ? a->capowned * 2 : 8;
        a->owned = xrealloc(a->owned, (size_t)a->capowned * sizeof *a->owned);
    }
    char *s = xstrndup(tmp, (size_t)n);
    a->owned[a->nowned++] = s;
    rargs_add(a, s, (size_t)n);
}

int rargs_send(struct rargs *a, struct rds *r, rds_reply_fn *cb, void *priv)
{
    int rc = rds_cmd(r, cb, priv, a->argc, a->argv, a->lens);
    rargs_reset(a);
    return rc;
}

void rargs_reset(struct rargs *a)
{
    for (int i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    a->nowned = 0;
    a->argc = 0;
}

void rargs_free(struct rargs *a)
{
    rargs_reset(a);
    free(a->argv);
    free(a->owned);
    free(a->lens);
    memset(a, 0, sizeof *a);
}
