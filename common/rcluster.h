/* Redis Cluster routing over common/rds.c: a redis-cluster:// URL's seeds, the slot map read
 * with CLUSTER SLOTS, one struct rds per master, each command sent to the master of its key's
 * slot, MOVED (refresh the map, resend) and ASK (ASKING + resend once) followed, MULTI...EXEC
 * blocks collected and sent whole to one master. rds_new/rds_cmd use it for a
 * redis-cluster:// URL; callers keep using the struct rds API (docs/decisions.md 48). */
#ifndef WH_RCLUSTER_H
#define WH_RCLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis.h>

#include "cluster.h"
#include "rds.h"

#define RCLUSTER_SEEDS_MAX 16
#define RCLUSTER_REDIRECTS_MAX 5 /* then the caller gets the last redirection error */

/* redis-cluster://[:password@]host:port[,host:port...] (port 6379 by default, no /db: a
 * cluster has only db 0). */
struct rcluster_url {
    struct cluster_node seeds[RCLUSTER_SEEDS_MAX];
    int nseeds;
    char *password; /* owned; NULL when none */
};

/* True when url starts with redis-cluster://. */
bool rcluster_is_url(const char *url);
/* 0, or -1 with a reason (the password masked) in err. The caller frees u->password
 * (rcluster_url_free). */
int rcluster_parse_url(const char *url, struct rcluster_url *u, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void rcluster_url_free(struct rcluster_url *u);

/* The length of argument i: lens[i], or strlen(argv[i]) when lens is NULL (hiredis' rule for
 * redisCommandArgv). */
static inline size_t rcluster_arglen(const char **argv, const size_t *lens, int i)
{
    return lens ? lens[i] : strlen(argv[i]);
}

/* How a command is routed: by the key at argv[*key] (KEYED), to any master (KEYLESS), or as a
 * part of a transaction block. */
enum rcluster_route { RCL_KEYED, RCL_KEYLESS, RCL_MULTI, RCL_EXEC, RCL_DISCARD };

/* The route of a command and, for RCL_KEYED, the index of its first key: argv[1] for most,
 * the first of numkeys for EVAL/EVALSHA/FCALL, the first stream after STREAMS for XREAD and
 * XREADGROUP, argv[2] for XGROUP/XINFO subcommands. lens may be NULL (rcluster_arglen). Pure. */
enum rcluster_route rcluster_route(int argc, const char **argv, const size_t *lens, int *key);

/* What a reply asks of the router: pass it to the caller, follow a MOVED or an ASK (the
 * redirection in *rd), retry later (TRYAGAIN: a multi-key command during a migration), or pass
 * it and re-read the map (CLUSTERDOWN, or a NULL reply: the connection went away). Pure. */
enum rcluster_action { RCL_PASS, RCL_FOLLOW, RCL_TRYAGAIN, RCL_PASS_REFRESH };
enum rcluster_action rcluster_reply_action(const redisReply *reply, struct cluster_redirect *rd);

struct rcluster;
typedef void rcluster_state_fn(bool up, void *arg);

/* Starts connecting to the seeds; owner is the struct rds handed to reply callbacks. NULL with
 * a reason in err when the URL is malformed. */
struct rcluster *rcluster_new(struct event_base *base, const char *url, const char *name,
                              struct rds *owner, rcluster_state_fn *on_state, void *arg, char *err,
                              size_t errlen);
/* Pending callbacks run with NULL replies. Not from one of c's callbacks. */
void rcluster_free(struct rcluster *c);
/* The map covers every slot and every master's connection is up. */
bool rcluster_up(const struct rcluster *c);
/* rds_cmd's contract. MULTI and the commands after it are collected (0, no callback allowed:
 * -1 when one is given) and sent with EXEC, whose callback gets EXEC's reply; EXEC's -1 drops
 * the block. Arguments are copied. */
int rcluster_cmd(struct rcluster *c, rds_reply_fn *cb, void *priv, int argc, const char **argv,
                 const size_t *lens) __attribute__((warn_unused_result));

#endif
