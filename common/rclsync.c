/* The blocking Redis Cluster router of the reconciler: slot map, one context per master,
 * MOVED/ASK followed, MULTI blocks kept on one master. */
#include "rclsync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "log.h"
#include "mem.h"
#include "rcluster.h"

struct snode {
    struct cluster_node addr;
    redisContext *ctx; /* NULL until used, or after an error */
};

struct rclsync {
    struct rcluster_url url;
    int timeout_s;
    struct cluster_map map;
    struct snode *nodes; /* one per map node; only masters get a context */
    int *masters;        /* indexes into nodes of the masters, in map order */
    int nmasters;
    int multi_node; /* the node of the open MULTI block, -1 when none or not chosen yet */
    bool in_multi;  /* MULTI was asked for; sent with the first keyed command */
};

static redisContext *dial(const struct rclsync *s, const struct cluster_node *a, char *err,
                          size_t errlen)
{
    struct timeval tv = {s->timeout_s, 0};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", a->host, a->port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (s->url.password) {
        const char *argv[] = {"AUTH", s->url.password};
        size_t lens[] = {4, strlen(s->url.password)};
        redisReply *rep = redisCommandArgv(c, 2, argv, lens);
        bool ok = rep && rep->type != REDIS_REPLY_ERROR;
        if (!ok)
            snprintf(err, errlen, "Redis at %s:%d refused AUTH: %s", a->host, a->port,
                     rep && rep->str ? rep->str : c->errstr);
        freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static void drop_nodes(struct rclsync *s)
{
    for (int i = 0; s->nodes && i < s->map.nnodes; i++)
        if (s->nodes[i].ctx)
            redisFree(s->nodes[i].ctx);
    free(s->nodes);
    free(s->masters);
    s->nodes = NULL;
    s->masters = NULL;
    s->nmasters = 0;
    cluster_map_free(&s->map);
}

/* (Re)reads the map from a seed or a known master. 0 or -1 (err). */
static int read_map(struct rclsync *s, char *err, size_t errlen)
{
    struct cluster_node tries[RCLUSTER_SEEDS_MAX + 64];
    int n = 0;
    for (int i = 0; i < s->nmasters && n < 64; i++)
        tries[n++] = s->nodes[s->masters[i]].addr;
    for (int i = 0; i < s->url.nseeds; i++)
        tries[n++] = s->url.seeds[i];
    drop_nodes(s);
    for (int t = 0; t < n; t++) {
        redisContext *c = dial(s, &tries[t], err, errlen);
        if (!c)
            continue;
        redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
        struct cluster_map m;
        int rc = rep ? cluster_map_parse(&m, rep, err, errlen) : -1;
        if (!rep)
            snprintf(err, errlen, "CLUSTER SLOTS at %s:%d: %s", tries[t].host, tries[t].port,
                     c->errstr);
        freeReplyObject(rep);
        redisFree(c);
        if (rc < 0)
            continue;
        if (!cluster_map_complete(&m)) {
            snprintf(err, errlen, "the Redis Cluster does not serve every slot");
            cluster_map_free(&m);
            continue;
        }
        for (int i = 0; i < m.nnodes; i++)
            if (!m.nodes[i].host[0])
                memcpy(m.nodes[i].host, tries[t].host, sizeof m.nodes[i].host);
        s->map = m;
        s->nodes = xcalloc((size_t)m.nnodes, sizeof *s->nodes);
        s->masters = xcalloc((size_t)m.nnodes, sizeof *s->masters);
        for (int i = 0; i < m.nnodes; i++)
            s->nodes[i].addr = m.nodes[i];
        for (int r = 0; r < m.nranges; r++) {
            bool seen = false;
            for (int k = 0; k < s->nmasters; k++)
                seen |= s->masters[k] == m.ranges[r].master;
            if (!seen)
                s->masters[s->nmasters++] = m.ranges[r].master;
        }
        return 0;
    }
    return -1;
}

static redisContext *ctx_of(struct rclsync *s, int node, char *err, size_t errlen)
{
    struct snode *n = &s->nodes[node];
    if (!n->ctx)
        n->ctx = dial(s, &n->addr, err, errlen);
    return n->ctx;
}

/* The node index of an address in the map, -1 when it is not there. */
static int node_at(const struct rclsync *s, const struct cluster_node *a)
{
    for (int i = 0; i < s->map.nnodes; i++)
        if (s->nodes[i].addr.port == a->port && strcmp(s->nodes[i].addr.host, a->host) == 0)
            return i;
    return -1;
}

/* One command on node, NULL on a connection error (context dropped, reason in err). */
static redisReply *on_node(struct rclsync *s, int node, int argc, const char **argv,
                           const size_t *lens, char *err, size_t errlen)
{
    redisContext *c = ctx_of(s, node, err, errlen);
    if (!c)
        return NULL;
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    if (!rep) {
        snprintf(err, errlen, "%.*s at %s:%d failed: %s", (int)rcluster_arglen(argv, lens, 0),
                 argv[0], s->nodes[node].addr.host, s->nodes[node].addr.port, c->errstr);
        redisFree(c);
        s->nodes[node].ctx = NULL;
    }
    return rep;
}

struct rclsync *rclsync_new(const char *url, int timeout_s, char *err, size_t errlen)
{
    struct rclsync *s = xcalloc(1, sizeof *s);
    s->timeout_s = timeout_s;
    s->multi_node = -1;
    if (rcluster_parse_url(url, &s->url, err, errlen) < 0) {
        free(s);
        return NULL;
    }
    if (read_map(s, err, errlen) < 0)
        goto out_fail;
    for (int i = 0; i < s->nmasters; i++)
        if (!ctx_of(s, s->masters[i], err, errlen))
            goto out_fail;
    return s;
out_fail:
    rclsync_free(s);
    return NULL;
}

void rclsync_free(struct rclsync *s)
{
    if (!s)
        return;
    drop_nodes(s);
    rcluster_url_free(&s->url);
    free(s);
}

int rclsync_masters(const struct rclsync *s)
{
    return s->nmasters;
}

redisReply *rclsync_cmd_master(struct rclsync *s, int i, int argc, const char **argv,
                               const size_t *lens, char *err, size_t errlen)
{
    if (i < 0 || i >= s->nmasters) {
        snprintf(err, errlen, "no master %d", i);
        return NULL;
    }
    return on_node(s, s->masters[i], argc, argv, lens, err, errlen);
}

/* A +OK status reply made by hiredis' own reader, so the caller frees it as any other. */
static redisReply *ok_reply(void)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    if (rd && redisReaderFeed(rd, "+OK\r\n", 5) == REDIS_OK)
        (void)redisReaderGetReply(rd, &rep);
    if (rd)
        redisReaderFree(rd);
    return rep;
}

redisReply *rclsync_cmd(struct rclsync *s, int argc, const char **argv, const size_t *lens,
                        char *err, size_t errlen)
{
    int key;
    enum rcluster_route route = rcluster_route(argc, argv, lens, &key);
    if (route == RCL_MULTI) {
        s->in_multi = true;
        s->multi_node = -1;
        return ok_reply();
    }
    if (route == RCL_EXEC || route == RCL_DISCARD) {
        int node = s->multi_node;
        bool sent = s->in_multi && node >= 0;
        s->in_multi = false;
        s->multi_node = -1;
        if (!sent) { /* an empty block: nothing was sent */
            snprintf(err, errlen, "EXEC without a keyed command in the block");
            return NULL;
        }
        return on_node(s, node, argc, argv, lens, err, errlen);
    }
    if (s->in_multi && s->multi_node >= 0)
        return on_node(s, s->multi_node, argc, argv, lens, err, errlen);
    int node = -1;
    if (route == RCL_KEYED && s->map.owner) {
        int o = s->map.owner[cluster_slot(argv[key], rcluster_arglen(argv, lens, key))];
        node = o;
    } else if (s->nmasters) {
        node = s->masters[0];
    }
    if (node < 0) {
        snprintf(err, errlen, "no master serves the slot");
        return NULL;
    }
    if (s->in_multi) { /* the block's first keyed command decides its master */
        const char *multi[] = {"MULTI"};
        size_t ml[] = {5};
        redisReply *rep = on_node(s, node, 1, multi, ml, err, errlen);
        if (!rep)
            return NULL;
        freeReplyObject(rep);
        s->multi_node = node;
        return on_node(s, node, argc, argv, lens, err, errlen);
    }
    bool asking = false;
    for (int hop = 0;; hop++) {
        if (asking) {
            const char *a[] = {"ASKING"};
            size_t al[] = {6};
            redisReply *ar = on_node(s, node, 1, a, al, err, errlen);
            if (!ar)
                return NULL;
            freeReplyObject(ar);
        }
        redisReply *rep = on_node(s, node, argc, argv, lens, err, errlen);
        struct cluster_redirect rd;
        if (!rep || hop >= RCLUSTER_REDIRECTS_MAX || rcluster_reply_action(rep, &rd) != RCL_FOLLOW)
            return rep;
        freeReplyObject(rep);
        if (!rd.node.host[0])
            memcpy(rd.node.host, s->nodes[node].addr.host, sizeof rd.node.host);
        if (rd.kind == CLUSTER_MOVED && read_map(s, err, errlen) < 0)
            return NULL;
        node = node_at(s, &rd.node);
        if (node < 0) {
            snprintf(err, errlen, "redirected to %s:%d, which the slot map does not list",
                     rd.node.host, rd.node.port);
            return NULL;
        }
        asking = rd.kind == CLUSTER_ASK;
        log_debug("redis", "following %s %u %s:%d", asking ? "ASK" : "MOVED", rd.slot, rd.node.host,
                  rd.node.port);
    }
}
