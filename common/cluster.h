/* Redis Cluster's pure logic, no I/O: the hash slot of a key (CRC16/XMODEM of its hash tag,
 * mod 16384), the slot map read from a CLUSTER SLOTS reply, and MOVED/ASK redirections.
 * The routing layer over common/rds.c (docs/decisions.md 43) is built on these. */
#ifndef WH_CLUSTER_H
#define WH_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis.h>

#define CLUSTER_SLOTS 16384
#define CLUSTER_HOST_MAX 256 /* bytes, NUL included */

/* CRC16/XMODEM (poly 0x1021, init 0, not reflected, no final xor): "123456789" -> 0x31C3. */
uint16_t cluster_crc16(const char *buf, size_t len);

/* The hash slot of a key: CRC16 of the hash tag (the bytes between the first '{' and the first
 * '}' after it, when there is at least one), else of the whole key; mod 16384. */
unsigned cluster_slot(const char *key, size_t len);

/* One node's address. host "" means "the host the CLUSTER SLOTS or redirecting connection
 * used" (Redis sends an empty or NULL endpoint when it has no better one). */
struct cluster_node {
    char host[CLUSTER_HOST_MAX];
    int port;
};

/* One slot range [lo, hi] with its master and replicas (indexes into the map's nodes). */
struct cluster_range {
    unsigned lo, hi;
    int master;
    int *replicas; /* owned by the map */
    int nreplicas;
};

/* The slot map. Nodes are distinct by host:port (a master of several ranges appears once),
 * so one connection per master is one connection per nodes[] entry that masters a range. */
struct cluster_map {
    struct cluster_node *nodes;
    int nnodes;
    struct cluster_range *ranges;
    int nranges;
    int16_t *owner; /* CLUSTER_SLOTS entries: the master's index in nodes, -1 when uncovered */
};

/* Builds the map from a CLUSTER SLOTS reply (an array of [lo, hi, master, replica...], each
 * node [host, port, id, ...]). Strict: wrong types, slots outside 0..16383, lo > hi,
 * overlapping ranges, ports outside 1..65535, a host too long or "?" (unknown endpoint), or no
 * range at all give -1 with a reason in err and m left empty. The reply is only read (the
 * caller still owns it); on 0 the caller releases m with cluster_map_free. */
int cluster_map_parse(struct cluster_map *m, const redisReply *reply, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void cluster_map_free(struct cluster_map *m); /* frees what m holds; m is empty afterwards */

/* The master of a slot, NULL when the slot is uncovered or out of range (borrowed from m). */
const struct cluster_node *cluster_map_master(const struct cluster_map *m, unsigned slot);
/* True when every slot has a master. */
bool cluster_map_complete(const struct cluster_map *m);

enum cluster_redirect_kind { CLUSTER_REDIRECT_NONE, CLUSTER_MOVED, CLUSTER_ASK };

/* A redirection: MOVED (the slot lives elsewhere: refresh the map, resend there) or ASK (the
 * slot is migrating: send ASKING then the command to that node, once; keep the map). */
struct cluster_redirect {
    enum cluster_redirect_kind kind;
    unsigned slot;
    struct cluster_node node;
};

/* Parses an error reply's text (hiredis' reply->str, without the '-'): exactly
 * "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>", slot 0..16383 in decimal, port
 * 1..65535, the host everything before the last ':' (IPv6 addresses come unbracketed; it may
 * be empty: the same host). Anything else is not a redirection: false, out->kind NONE. */
bool cluster_redirect_parse(const char *err, size_t len, struct cluster_redirect *out)
    __attribute__((warn_unused_result));

#endif
