/* The blocking twin of common/rcluster.c for the reconciler: a redis-cluster:// URL's slot map
 * read once per connection, one blocking hiredis context per master, each command sent to the
 * master of its key's slot, MOVED (map re-read, resend) and ASK (ASKING + resend) followed,
 * MULTI...EXEC sent to the master of the block's first key. docs/decisions.md 48. */
#ifndef WH_RCLSYNC_H
#define WH_RCLSYNC_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis.h>

struct rclsync;

/* Connects to the first seed that answers, reads the map and connects to every master, with
 * timeout_s on connects and commands. NULL with a reason (the password masked) in err. */
struct rclsync *rclsync_new(const char *url, int timeout_s, char *err, size_t errlen);
void rclsync_free(struct rclsync *s);

/* Sends one command where it belongs; NULL on a connection error (the reason in err; the
 * connection is dropped and the next command reconnects). Caller frees the reply. MULTI answers
 * +OK at once and is sent with the block's first keyed command. */
redisReply *rclsync_cmd(struct rclsync *s, int argc, const char **argv, const size_t *lens,
                        char *err, size_t errlen);

/* The masters (for commands each must see, such as SCAN): their number, and one command sent
 * to master i (0 .. n-1), no redirection followed. */
int rclsync_masters(const struct rclsync *s);
redisReply *rclsync_cmd_master(struct rclsync *s, int i, int argc, const char **argv,
                               const size_t *lens, char *err, size_t errlen);

#endif
