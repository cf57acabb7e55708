/* Redis Cluster's pure logic, no I/O: the hash slot of a key (CRC16/XMODEM of its hash tag,
 * mod 16384), the slot map read from a CLUSTER SLOTS reply, and MOVED/ASK redirections. */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

uint16_t cluster_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1)
            return cluster_crc16(open + 1, (size_t)(close - open - 1)) & (CLUSTER_SLOTS - 1);
    }
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}

void cluster_map_free(struct cluster_map *m)
{
    for (int i = 0; i < m->nranges; i++)
        free(m->ranges[i].replicas);
    free(m->ranges);
    free(m->nodes);
    free(m->owner);
    memset(m, 0, sizeof *m);
}

/* A slot bound: an integer in 0..16383. */
static bool slot_of(const redisReply *r, unsigned *out)
{
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0 || r->integer >= CLUSTER_SLOTS)
        return false;
    *out = (unsigned)r->integer;
    return true;
}

/* The index in m->nodes of the node a reply element describes, added if new; -1 when the
 * element is malformed (reason in err). */
static int node_of(struct cluster_map *m, const redisReply *r, char *err, size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        snprintf(err, errlen, "CLUSTER SLOTS: a node is not an array [host, port, ...]");
        return -1;
    }
    const redisReply *h = r->element[0], *p = r->element[1];
    struct cluster_node n = {.host = ""};
    if (h->type == REDIS_REPLY_STRING) {
        if (h->len >= sizeof n.host || memchr(h->str, '\0', h->len)) {
            snprintf(err, errlen, "CLUSTER SLOTS: a node's host is too long or not text");
            return -1;
        }
        if (h->len == 1 && h->str[0] == '?') {
            snprintf(err, errlen, "CLUSTER SLOTS: a node's endpoint is unknown (\"?\")");
            return -1;
        }
        memcpy(n.host, h->str, h->len);
        n.host[h->len] = '\0';
    } else if (h->type != REDIS_REPLY_NIL) {
        snprintf(err, errlen, "CLUSTER SLOTS: a node's host is not a string");
        return -1;
    }
    if (p->type != REDIS_REPLY_INTEGER || p->integer < 1 || p->integer > 65535) {
        snprintf(err, errlen, "CLUSTER SLOTS: a node's port is not in 1..65535");
        return -1;
    }
    n.port = (int)p->integer;
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == n.port && strcmp(m->nodes[i].host, n.host) == 0)
            return i;
    m->nodes = xrealloc(m->nodes, (size_t)(m->nnodes + 1) * sizeof *m->nodes);
    m->nodes[m->nnodes] = n;
    return m->nnodes++;
}

static int range_of(struct cluster_map *m, const redisReply *e, char *err, size_t errlen)
{
    struct cluster_range rg = {0};
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) {
        snprintf(err, errlen, "CLUSTER SLOTS: a range is not an array [lo, hi, master, ...]");
        return -1;
    }
    if (!slot_of(e->element[0], &rg.lo) || !slot_of(e->element[1], &rg.hi) || rg.lo > rg.hi) {
        snprintf(err, errlen, "CLUSTER SLOTS: a range's bounds are not slots lo <= hi");
        return -1;
    }
    if ((rg.master = node_of(m, e->element[2], err, errlen)) < 0)
        return -1;
    for (unsigned s = rg.lo; s <= rg.hi; s++) {
        if (m->owner[s] >= 0) {
            snprintf(err, errlen, "CLUSTER SLOTS: slot %u is in two ranges", s);
            return -1;
        }
        m->owner[s] = (int16_t)rg.master;
    }
    rg.nreplicas = (int)e->elements - 3;
    rg.replicas = rg.nreplicas ? xcalloc((size_t)rg.nreplicas, sizeof *rg.replicas) : NULL;
    m->ranges = xrealloc(m->ranges, (size_t)(m->nranges + 1) * sizeof *m->ranges);
    m->ranges[m->nranges++] = rg; /* owned by m from here, so freed on every path */
    for (int i = 0; i < rg.nreplicas; i++)
        if ((rg.replicas[i] = node_of(m, e->element[3 + i], err, errlen)) < 0)
            return -1;
    return 0;
}

int cluster_map_parse(struct cluster_map *m, const redisReply *reply, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s",
                 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no slot ranges");
        return -1;
    }
    m->owner = xmalloc(CLUSTER_SLOTS * sizeof *m->owner);
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        m->owner[s] = -1;
    for (size_t i = 0; i < reply->elements; i++) {
        if (range_of(m, reply->element[i], err, errlen) < 0) {
            cluster_map_free(m);
            return -1;
        }
    }
    return 0;
}

const struct cluster_node *cluster_map_master(const struct cluster_map *m, unsigned slot)
{
    if (!m->owner || slot >= CLUSTER_SLOTS || m->owner[slot] < 0)
        return NULL;
    return &m->nodes[m->owner[slot]];
}

bool cluster_map_complete(const struct cluster_map *m)
{
    for (unsigned s = 0; m->owner && s < CLUSTER_SLOTS; s++)
        if (m->owner[s] < 0)
            return false;
    return m->owner != NULL;
}

/* A decimal number of 1..maxdigits digits without sign or leading zero (but "0"), at most max. */
static bool number(const char *s, size_t n, int maxdigits, long max, long *out)
{
    if (n == 0 || (int)n > maxdigits || (s[0] == '0' && n > 1))
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

bool cluster_redirect_parse(const char *err, size_t len, struct cluster_redirect *out)
{
    memset(out, 0, sizeof *out);
    if (!err)
        return false;
    enum cluster_redirect_kind kind;
    size_t at;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        kind = CLUSTER_MOVED;
        at = 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        kind = CLUSTER_ASK;
        at = 4;
    } else {
        return false;
    }
    const char *slot = err + at, *sp = memchr(slot, ' ', len - at);
    if (!sp)
        return false;
    long v;
    if (!number(slot, (size_t)(sp - slot), 5, CLUSTER_SLOTS - 1, &v))
        return false;
    const char *addr = sp + 1, *end = err + len;
    const char *colon = NULL;
    for (const char *c = addr; c < end; c++) {
        if (*c == ' ' || *c == '\0' || *c == '\r' || *c == '\n' || *c == '\t')
            return false;
        if (*c == ':')
            colon = c;
    }
    long port;
    if (!colon || (size_t)(colon - addr) >= sizeof out->node.host ||
        !number(colon + 1, (size_t)(end - colon - 1), 5, 65535, &port) || port == 0)
        return false;
    out->kind = kind;
    out->slot = (unsigned)v;
    memcpy(out->node.host, addr, (size_t)(colon - addr));
    out->node.host[colon - addr] = '\0';
    out->node.port = (int)port;
    return true;
}
