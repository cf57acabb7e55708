/* Redis Cluster routing over common/rds.c: seeds, the slot map, one connection per master,
 * MOVED/ASK/TRYAGAIN handling and MULTI blocks sent whole to one master. */
#include "rcluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "libmem.h"
#include "log.h"
#include "mem.h"

#define RCL_TICK_MS 1000
#define RCL_REFRESH_EVERY_MS 30000 /* re-read the map this often even when all is well */
#define RCL_RETRY_MS 100           /* first delay of a resend to a node not up yet / TRYAGAIN */

/* ---- pure parts ------------------------------------------------------------------------- */

bool rcluster_is_url(const char *url)
{
    return strncmp(url, "redis-cluster://", 16) == 0;
}

void rcluster_url_free(struct rcluster_url *u)
{
    free(u->password);
    u->password = NULL;
}

int rcluster_parse_url(const char *url, struct rcluster_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    char shown[512];
    rds_mask_url(url, shown, sizeof shown);
    if (!rcluster_is_url(url)) {
        snprintf(err, errlen, "REDIS_URL must start with redis-cluster:// (got \"%s\")", shown);
        return -1;
    }
    const char *p = url + 16;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (at > pw)
            u->password = xstrndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    if (strchr(p, '/')) {
        snprintf(err, errlen,
                 "REDIS_URL: a cluster has only database 0; remove the /db (got \"%s\")", shown);
        goto out_fail;
    }
    while (1) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (u->nseeds == RCLUSTER_SEEDS_MAX) {
            snprintf(err, errlen, "REDIS_URL names more than %d cluster nodes (got \"%s\")",
                     RCLUSTER_SEEDS_MAX, shown);
            goto out_fail;
        }
        struct cluster_node *s = &u->seeds[u->nseeds];
        const char *colon = memchr(p, ':', n);
        size_t hl = colon ? (size_t)(colon - p) : n;
        if (hl == 0 || hl >= sizeof s->host) {
            snprintf(err, errlen, "REDIS_URL has a cluster node without a host (got \"%s\")",
                     shown);
            goto out_fail;
        }
        memcpy(s->host, p, hl);
        s->host[hl] = '\0';
        s->port = 6379;
        if (colon) {
            char *end;
            long port = strtol(colon + 1, &end, 10);
            if (end != p + n || colon + 1 == end || port < 1 || port > 65535) {
                snprintf(err, errlen, "REDIS_URL has an invalid port (got \"%s\")", shown);
                goto out_fail;
            }
            s->port = (int)port;
        }
        u->nseeds++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
out_fail:
    rcluster_url_free(u);
    return -1;
}

static bool arg_is(const char *a, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(a, word, n) == 0;
}

enum rcluster_route rcluster_route(int argc, const char **argv, const size_t *lens, int *key)
{
    *key = -1;
    if (argc < 1)
        return RCL_KEYLESS;
    const char *c = argv[0];
    size_t n = rcluster_arglen(argv, lens, 0);
    if (arg_is(c, n, "MULTI"))
        return RCL_MULTI;
    if (arg_is(c, n, "EXEC"))
        return RCL_EXEC;
    if (arg_is(c, n, "DISCARD"))
        return RCL_DISCARD;
    if (arg_is(c, n, "EVAL") || arg_is(c, n, "EVALSHA") || arg_is(c, n, "EVAL_RO") ||
        arg_is(c, n, "EVALSHA_RO") || arg_is(c, n, "FCALL") || arg_is(c, n, "FCALL_RO")) {
        size_t nl = argc < 4 ? 0 : rcluster_arglen(argv, lens, 2);
        if (nl == 0 || nl > 9)
            return RCL_KEYLESS;
        long nk = 0;
        for (size_t i = 0; i < nl; i++) {
            if (argv[2][i] < '0' || argv[2][i] > '9')
                return RCL_KEYLESS;
            nk = nk * 10 + (argv[2][i] - '0');
        }
        if (nk < 1)
            return RCL_KEYLESS;
        *key = 3;
        return RCL_KEYED;
    }
    if (arg_is(c, n, "XREAD") || arg_is(c, n, "XREADGROUP")) {
        for (int i = 1; i + 1 < argc; i++)
            if (arg_is(argv[i], rcluster_arglen(argv, lens, i), "STREAMS")) {
                *key = i + 1;
                return RCL_KEYED;
            }
        return RCL_KEYLESS;
    }
    if (arg_is(c, n, "XGROUP") || arg_is(c, n, "XINFO") || arg_is(c, n, "OBJECT") ||
        arg_is(c, n, "MEMORY")) {
        if (argc < 3)
            return RCL_KEYLESS;
        *key = 2;
        return RCL_KEYED;
    }
    static const char *const keyless[] = {
        "PING",   "INFO",  "CLUSTER",  "SCRIPT",  "TIME",    "ASKING",   "READONLY", "AUTH",
        "SELECT", "HELLO", "CLIENT",   "CONFIG",  "DBSIZE",  "FLUSHALL", "FLUSHDB",  "SCAN",
        "KEYS",   "WAIT",  "FUNCTION", "COMMAND", "PUBLISH", "ECHO",     "RANDOMKEY"};
    for (size_t i = 0; i < sizeof keyless / sizeof *keyless; i++)
        if (arg_is(c, n, keyless[i]))
            return RCL_KEYLESS;
    if (argc < 2)
        return RCL_KEYLESS;
    *key = 1;
    return RCL_KEYED;
}

enum rcluster_action rcluster_reply_action(const redisReply *reply, struct cluster_redirect *rd)
{
    memset(rd, 0, sizeof *rd);
    if (!reply)
        return RCL_PASS_REFRESH;
    if (reply->type != REDIS_REPLY_ERROR || !reply->str)
        return RCL_PASS;
    if (cluster_redirect_parse(reply->str, reply->len, rd))
        return RCL_FOLLOW;
    if (rds_is_error(reply, "TRYAGAIN"))
        return RCL_TRYAGAIN;
    if (rds_is_error(reply, "CLUSTERDOWN"))
        return RCL_PASS_REFRESH;
    return RCL_PASS;
}

/* ---- the router ------------------------------------------------------------------------- */

struct node {
    struct rcluster *c;
    struct cluster_node addr;
    struct rds *conn;
    bool retire; /* not a master of the current map: freed by the next gc pass */
};

struct rcluster {
    struct event_base *base;
    char *name;
    struct rds *owner;
    struct rcluster_url url;
    struct node **nodes; /* stable pointers: commands in flight keep one */
    int nnodes;
    struct cluster_map map;
    bool have_map;
    struct node **by_map; /* map.nnodes entries: the connection of each master, NULL else */
    bool refreshing;      /* a CLUSTER SLOTS is outstanding */
    bool refresh_wanted;  /* re-read at the next chance (tick or a node coming up) */
    int64_t refreshed_ms;
    bool up;
    bool freeing;
    struct event *tick_ev; /* every RCL_TICK_MS: refresh when wanted or due */
    struct event *gc_ev;   /* zero delay: frees retired nodes outside their callbacks */
    rcluster_state_fn *on_state;
    void *arg;
    struct rcmd *blk;     /* the MULTI block being collected */
    struct rcmd *waiting; /* commands whose resend timer is armed */
};

/* One argument vector, copied. */
struct part {
    int argc;
    char **argv;
    size_t *lens;
};

/* A command (one part) or a MULTI block (MULTI, commands, EXEC) with what routing needs to
 * resend it. Freed once its outcome is delivered and none of its replies is still due. */
struct rcmd {
    struct rcluster *c;
    rds_reply_fn *cb;
    void *priv;
    bool keyed;
    unsigned slot;
    struct part *parts;
    int nparts;
    int refs;      /* replies still due from the attempt in flight */
    int redirects; /* MOVED/ASK/TRYAGAIN followed so far */
    bool direct;   /* the next attempt goes to `to`, not to the map's master */
    bool asking;   /* ... after ASKING (an ASK redirection) */
    struct cluster_node to;
    struct cluster_node sent_to; /* the node of the attempt in flight */
    bool redirected;             /* a queued part answered MOVED/ASK in this attempt */
    struct cluster_redirect rd;
    bool abandoned;             /* a send failed midway: the parts sent finish it */
    bool abandoned_cb;          /* ... and then the caller gets NULL (it was promised a reply) */
    struct event *retry_ev;     /* a delayed resend */
    struct rcmd *wprev, *wnext; /* in c->waiting while retry_ev is armed */
};

static void wait_add(struct rcluster *c, struct rcmd *rc)
{
    rc->wprev = NULL;
    rc->wnext = c->waiting;
    if (c->waiting)
        c->waiting->wprev = rc;
    c->waiting = rc;
}

static void wait_del(struct rcluster *c, struct rcmd *rc)
{
    if (rc->wprev)
        rc->wprev->wnext = rc->wnext;
    else
        c->waiting = rc->wnext;
    if (rc->wnext)
        rc->wnext->wprev = rc->wprev;
    rc->wprev = rc->wnext = NULL;
}

static void rcmd_free(struct rcmd *rc)
{
    for (int i = 0; i < rc->nparts; i++) {
        for (int k = 0; k < rc->parts[i].argc; k++)
            free(rc->parts[i].argv[k]);
        free(rc->parts[i].argv);
        free(rc->parts[i].lens);
    }
    free(rc->parts);
    if (rc->retry_ev)
        event_free(rc->retry_ev);
    free(rc);
}

static void rcmd_add_part(struct rcmd *rc, int argc, const char **argv, const size_t *lens)
{
    rc->parts = xrealloc(rc->parts, (size_t)(rc->nparts + 1) * sizeof *rc->parts);
    struct part *p = &rc->parts[rc->nparts++];
    p->argc = argc;
    p->argv = xcalloc((size_t)argc, sizeof *p->argv);
    p->lens = xcalloc((size_t)argc, sizeof *p->lens);
    for (int i = 0; i < argc; i++) {
        size_t n = rcluster_arglen(argv, lens, i);
        p->argv[i] = xmalloc(n + 1);
        memcpy(p->argv[i], argv[i], n);
        p->argv[i][n] = '\0';
        p->lens[i] = n;
    }
}

static void refresh(struct rcluster *c);

static void set_up(struct rcluster *c)
{
    bool up = c->have_map && cluster_map_complete(&c->map);
    for (int i = 0; up && i < c->map.nnodes; i++)
        if (c->by_map[i] && !rds_up(c->by_map[i]->conn))
            up = false;
    if (up == c->up)
        return;
    c->up = up;
    if (up)
        log_info(c->name, "Redis Cluster ready: %d slot ranges, every master connected",
                 c->map.nranges);
    else
        c->refresh_wanted = true;
    if (c->on_state)
        c->on_state(up, c->arg);
}

static void node_state(struct rds *r, bool up, void *arg)
{
    (void)r;
    struct node *n = arg;
    struct rcluster *c = n->c;
    if (c->freeing)
        return;
    if (!up || !c->have_map)
        c->refresh_wanted = true; /* a master lost may be a failover */
    if (up && c->refresh_wanted)
        refresh(c);
    set_up(c);
}

static struct node *node_find(struct rcluster *c, const struct cluster_node *a)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i]->addr.port == a->port && strcmp(c->nodes[i]->addr.host, a->host) == 0)
            return c->nodes[i];
    return NULL;
}

/* The node of an address, connecting to it when new (kept until a map says it is no master).
 * NULL only when its URL cannot be formed. */
static struct node *node_get(struct rcluster *c, const struct cluster_node *a)
{
    struct node *n = node_find(c, a);
    if (n)
        return n;
    n = xcalloc(1, sizeof *n);
    n->c = c;
    n->addr = *a;
    char url[600], name[320], err[256];
    if (c->url.password)
        snprintf(url, sizeof url, "redis://:%s@%s:%d", c->url.password, a->host, a->port);
    else
        snprintf(url, sizeof url, "redis://%s:%d", a->host, a->port);
    snprintf(name, sizeof name, "%s@%s:%d", c->name, a->host, a->port);
    n->conn = rds_new(c->base, url, name, node_state, n, err, sizeof err);
    if (!n->conn) {
        log_error(c->name, "cannot use cluster node %s:%d: %s", a->host, a->port, err);
        free(n);
        return NULL;
    }
    c->nodes = xrealloc(c->nodes, (size_t)(c->nnodes + 1) * sizeof *c->nodes);
    c->nodes[c->nnodes++] = n;
    return n;
}

static void on_gc(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rcluster *c = arg;
    int kept = 0;
    for (int i = 0; i < c->nnodes; i++) {
        struct node *n = c->nodes[i];
        if (!n->retire) {
            c->nodes[kept++] = n;
            continue;
        }
        log_info(c->name, "closing the connection to %s:%d: not a master in the slot map",
                 n->addr.host, n->addr.port);
        rds_free(n->conn); /* pending callbacks run now, with NULL, while n is still valid */
        free(n);
    }
    c->nnodes = kept;
}

/* Takes over m as the current map. asked: the node that answered (its host replaces an empty
 * one). Connects to new masters; other nodes are closed by the gc pass. */
static void apply_map(struct rcluster *c, struct cluster_map *m, const struct node *asked)
{
    for (int i = 0; i < m->nnodes; i++)
        if (!m->nodes[i].host[0])
            memcpy(m->nodes[i].host, asked->addr.host, sizeof m->nodes[i].host);
    cluster_map_free(&c->map);
    c->map = *m;
    c->have_map = true;
    free(c->by_map);
    c->by_map = xcalloc((size_t)c->map.nnodes, sizeof *c->by_map);
    for (int i = 0; i < c->nnodes; i++)
        c->nodes[i]->retire = true;
    for (int r = 0; r < c->map.nranges; r++) {
        int mi = c->map.ranges[r].master;
        if (!c->by_map[mi])
            c->by_map[mi] = node_get(c, &c->map.nodes[mi]);
        if (c->by_map[mi])
            c->by_map[mi]->retire = false;
    }
    bool retired = false;
    for (int i = 0; i < c->nnodes; i++)
        retired |= c->nodes[i]->retire;
    if (retired)
        event_active(c->gc_ev, EV_TIMEOUT, 0);
    log_debug(c->name, "slot map read: %d ranges, %d nodes", c->map.nranges, c->map.nnodes);
    set_up(c);
}

static void slots_read(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct node *n = priv;
    struct rcluster *c = n->c;
    c->refreshing = false;
    if (c->freeing)
        return;
    if (!reply) {
        c->refresh_wanted = true; /* the tick asks another node */
        return;
    }
    struct cluster_map m;
    char err[256];
    if (cluster_map_parse(&m, reply, err, sizeof err) < 0) {
        log_warn(c->name, "%s:%d: %s (asking again within %d ms)", n->addr.host, n->addr.port, err,
                 RCL_TICK_MS);
        c->refresh_wanted = true;
        return;
    }
    apply_map(c, &m, n);
    /* A master not promoted or not connected yet: keep asking until every slot is served. */
    c->refresh_wanted = c->refresh_wanted || !c->up;
}

/* Sends CLUSTER SLOTS to a connected node (a master of the map first); with none connected,
 * connects to the seeds and the map's nodes again (the first up asks). */
static void refresh(struct rcluster *c)
{
    if (c->refreshing || c->freeing)
        return;
    struct node *to = NULL;
    for (int i = 0; i < c->nnodes && !to; i++)
        if (!c->nodes[i]->retire && rds_up(c->nodes[i]->conn))
            to = c->nodes[i];
    for (int i = 0; i < c->nnodes && !to; i++)
        if (rds_up(c->nodes[i]->conn))
            to = c->nodes[i];
    if (!to) {
        for (int i = 0; i < c->url.nseeds; i++) {
            struct node *n = node_get(c, &c->url.seeds[i]);
            if (n)
                n->retire = false;
        }
        for (int i = 0; c->have_map && i < c->map.nnodes; i++) {
            struct node *n = node_get(c, &c->map.nodes[i]);
            if (n)
                n->retire = false;
        }
        c->refresh_wanted = true;
        return;
    }
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t lens[] = {7, 5};
    if (rds_cmd(to->conn, slots_read, to, 2, argv, lens) == 0) {
        c->refreshing = true;
        c->refresh_wanted = false;
        c->refreshed_ms = clock_mono_ms();
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rcluster *c = arg;
    if (c->refresh_wanted || !c->up || clock_mono_ms() - c->refreshed_ms >= RCL_REFRESH_EVERY_MS)
        refresh(c);
}

/* The node of the next attempt: the redirection's, the slot's master, or any connected master
 * for a keyless command. NULL when there is none. */
static struct node *target(struct rcluster *c, const struct rcmd *rc)
{
    if (rc->direct)
        return node_get(c, &rc->to);
    if (!c->have_map)
        return NULL;
    if (rc->keyed) {
        int mi = c->map.owner[rc->slot];
        return mi >= 0 ? c->by_map[mi] : NULL;
    }
    for (int i = 0; i < c->map.nnodes; i++)
        if (c->by_map[i] && rds_up(c->by_map[i]->conn))
            return c->by_map[i];
    return NULL;
}

static void on_part(struct rds *r, redisReply *reply, void *priv);
static void on_last(struct rds *r, redisReply *reply, void *priv);

/* Sends every part of rc to its node, pipelined (ASKING first after an ASK). 0, or -1 when
 * the node is not connected or a part could not be sent (rc->refs parts then still answer). */
static int send_attempt(struct rcmd *rc)
{
    struct node *n = target(rc->c, rc);
    if (!n || !rds_up(n->conn))
        return -1;
    rc->sent_to = n->addr;
    rc->redirected = false;
    if (rc->asking) {
        const char *argv[] = {"ASKING"};
        size_t lens[] = {6};
        if (rds_cmd(n->conn, NULL, NULL, 1, argv, lens) < 0)
            return -1;
    }
    for (int i = 0; i < rc->nparts; i++) {
        struct part *p = &rc->parts[i];
        bool last = i + 1 == rc->nparts;
        if (rds_cmd(n->conn, last ? on_last : on_part, rc, p->argc, (const char **)p->argv,
                    p->lens) < 0)
            return -1;
        rc->refs++;
    }
    rc->direct = rc->asking = false;
    return 0;
}

/* The caller's outcome: its callback (when promised) with reply, then rc is freed. */
static void finish(struct rcmd *rc, redisReply *reply, bool call)
{
    if (call && rc->cb)
        rc->cb(rc->c->owner, reply, rc->priv);
    rcmd_free(rc);
}

/* A send of a resend failed: finished now if nothing of it went out, else by its last reply. */
static void resend_failed(struct rcmd *rc)
{
    if (rc->refs == 0) {
        finish(rc, NULL, true); /* as a connection lost before the reply */
    } else {
        rc->abandoned = true;
        rc->abandoned_cb = true;
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct rcmd *rc = arg;
    wait_del(rc->c, rc);
    if (send_attempt(rc) < 0)
        resend_failed(rc);
}

/* A reply to MULTI or a queued command of a block: a redirection is remembered (EXEC then
 * answers EXECABORT and the whole block is resent). */
static void on_part(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct rcmd *rc = priv;
    struct cluster_redirect rd;
    if (rcluster_reply_action(reply, &rd) == RCL_FOLLOW && !rc->redirected) {
        rc->redirected = true;
        rc->rd = rd;
    }
    if (--rc->refs == 0 && rc->abandoned)
        finish(rc, NULL, rc->abandoned_cb);
}

/* The reply to a command, or to a block's EXEC: followed (MOVED, ASK, TRYAGAIN), or passed
 * to the caller. */
static void on_last(struct rds *r, redisReply *reply, void *priv)
{
    (void)r;
    struct rcmd *rc = priv;
    struct rcluster *c = rc->c;
    rc->refs--;
    if (rc->abandoned) {
        if (rc->refs == 0)
            finish(rc, NULL, rc->abandoned_cb);
        return;
    }
    struct cluster_redirect rd;
    enum rcluster_action act = rcluster_reply_action(reply, &rd);
    if (rc->nparts > 1 && rc->redirected && rds_is_error(reply, "EXECABORT")) {
        act = RCL_FOLLOW;
        rd = rc->rd;
    }
    if ((act == RCL_FOLLOW && rd.kind == CLUSTER_MOVED) || act == RCL_PASS_REFRESH) {
        c->refresh_wanted = true;
        if (act == RCL_FOLLOW)
            refresh(c);
    }
    bool follow = act == RCL_FOLLOW || act == RCL_TRYAGAIN;
    if (!follow || c->freeing || rc->refs > 0 || rc->redirects >= RCLUSTER_REDIRECTS_MAX) {
        if (follow && rc->redirects >= RCLUSTER_REDIRECTS_MAX)
            log_warn(c->name, "giving up after %d redirections: %s", rc->redirects, reply->str);
        finish(rc, reply, true);
        return;
    }
    rc->redirects++;
    if (act == RCL_FOLLOW) {
        log_debug(c->name, "following %s %u %s:%d (%s)", rd.kind == CLUSTER_ASK ? "ASK" : "MOVED",
                  rd.slot, rd.node.host, rd.node.port, rc->parts[0].argv[0]);
        rc->direct = true;
        rc->asking = rd.kind == CLUSTER_ASK;
        rc->to = rd.node;
        if (!rc->to.host[0])
            memcpy(rc->to.host, rc->sent_to.host, sizeof rc->to.host);
        struct node *n = node_get(c, &rc->to);
        if (n && rds_up(n->conn)) {
            if (send_attempt(rc) == 0)
                return;
            if (rc->refs > 0) {
                rc->abandoned = rc->abandoned_cb = true;
                return;
            }
            finish(rc, reply, true); /* the redirection error: the caller sees a failure */
            return;
        }
        if (!n) {
            finish(rc, reply, true);
            return;
        }
    }
    /* TRYAGAIN, or the named node is still connecting: resend a little later. */
    if (act == RCL_TRYAGAIN)
        log_debug(c->name, "TRYAGAIN (%s): resending in %ld ms", rc->parts[0].argv[0],
                  RCL_RETRY_MS * (long)rc->redirects);
    if (!rc->retry_ev)
        rc->retry_ev = xnonnull(evtimer_new(c->base, on_retry, rc), "evtimer_new");
    long ms = RCL_RETRY_MS * rc->redirects;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(rc->retry_ev, &tv);
    wait_add(c, rc);
}

static void on_state_none(bool up, void *arg)
{
    (void)up, (void)arg;
}

struct rcluster *rcluster_new(struct event_base *base, const char *url, const char *name,
                              struct rds *owner, rcluster_state_fn *on_state, void *arg, char *err,
                              size_t errlen)
{
    struct rcluster *c = xcalloc(1, sizeof *c);
    if (rcluster_parse_url(url, &c->url, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    c->base = base;
    c->name = xstrdup(name);
    c->owner = owner;
    c->on_state = on_state ? on_state : on_state_none;
    c->arg = arg;
    c->tick_ev = xnonnull(event_new(base, -1, EV_PERSIST, on_tick, c), "event_new");
    struct timeval tv = {RCL_TICK_MS / 1000, (RCL_TICK_MS % 1000) * 1000};
    event_add(c->tick_ev, &tv);
    c->gc_ev = xnonnull(evtimer_new(base, on_gc, c), "evtimer_new");
    c->refresh_wanted = true;
    refresh(c); /* nothing connected: connects to the seeds */
    return c;
}

void rcluster_free(struct rcluster *c)
{
    if (!c)
        return;
    c->freeing = true;
    while (c->waiting) {
        struct rcmd *rc = c->waiting;
        wait_del(c, rc);
        finish(rc, NULL, true);
    }
    for (int i = 0; i < c->nnodes; i++) {
        rds_free(c->nodes[i]->conn); /* pending commands finish with NULL */
        free(c->nodes[i]);
    }
    if (c->blk)
        rcmd_free(c->blk);
    free(c->nodes);
    free(c->by_map);
    cluster_map_free(&c->map);
    event_free(c->tick_ev);
    event_free(c->gc_ev);
    rcluster_url_free(&c->url);
    free(c->name);
    free(c);
}

bool rcluster_up(const struct rcluster *c)
{
    return c->up;
}

int rcluster_cmd(struct rcluster *c, rds_reply_fn *cb, void *priv, int argc, const char **argv,
                 const size_t *lens)
{
    if (c->freeing)
        return -1;
    int key;
    enum rcluster_route route = rcluster_route(argc, argv, lens, &key);
    if (route == RCL_DISCARD) {
        if (c->blk)
            rcmd_free(c->blk);
        c->blk = NULL;
        return -1; /* nothing was sent: no reply comes */
    }
    if (c->blk || route == RCL_MULTI) {
        if (route == RCL_MULTI && c->blk) {
            log_error(c->name, "MULTI inside a MULTI block: the first block is dropped");
            rcmd_free(c->blk);
            c->blk = NULL;
        }
        if (route != RCL_EXEC && cb) {
            log_error(c->name, "a command inside MULTI with a callback (refused)");
            return -1;
        }
        if (!c->blk)
            c->blk = xcalloc(1, sizeof *c->blk);
        struct rcmd *b = c->blk;
        if (route == RCL_KEYED && !b->keyed) {
            b->keyed = true;
            b->slot = cluster_slot(argv[key], rcluster_arglen(argv, lens, key));
        }
        rcmd_add_part(b, argc, argv, lens);
        if (route != RCL_EXEC)
            return 0;
        c->blk = NULL;
        b->c = c;
        b->cb = cb;
        b->priv = priv;
        if (send_attempt(b) == 0)
            return 0;
        if (b->refs > 0) {
            b->abandoned = true; /* the caller hears -1: no callback */
            return -1;
        }
        rcmd_free(b);
        return -1;
    }
    if (route == RCL_EXEC) {
        log_error(c->name, "EXEC without MULTI (refused)");
        return -1;
    }
    struct rcmd *rc = xcalloc(1, sizeof *rc);
    rc->c = c;
    rc->cb = cb;
    rc->priv = priv;
    if (route == RCL_KEYED) {
        rc->keyed = true;
        rc->slot = cluster_slot(argv[key], rcluster_arglen(argv, lens, key));
    }
    rcmd_add_part(rc, argc, argv, lens);
    if (send_attempt(rc) == 0)
        return 0;
    if (!c->up)
        c->refresh_wanted = true;
    rcmd_free(rc); /* one part: nothing went out */
    return -1;
}
