/* An asynchronous Redis connection on the event loop (hiredis + its libevent adapter) that
 * reconnects with backoff, plus an argument-vector builder for binary-safe commands. */
#ifndef WH_RDS_H
#define WH_RDS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <hiredis.h>

struct rds;

struct rds_addr {
    char host[256];
    int port;
    int db;
    char *password; /* owned; NULL when none */
};

/* Parses redis://[:password@]host[:port][/db] (port 6379, db 0 by default). 0, or -1 with a
 * reason in err. The caller frees a->password. */
int rds_parse_url(const char *url, struct rds_addr *a, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes url into out (truncated to outlen) with its password, if any, replaced by ****:
 * redis://user:****@host:port/db. For logs and error messages. */
void rds_mask_url(const char *url, char *out, size_t outlen);

/* reply is NULL when the connection was lost before the reply came; it is freed by hiredis
 * after the callback returns (copy what you keep). */
typedef void rds_reply_fn(struct rds *r, redisReply *reply, void *priv);
/* Called on every transition: up after connecting and AUTH/SELECT succeeding, down when
 * lost. A refused AUTH/SELECT is logged (never the password) and retried with backoff. */
typedef void rds_state_fn(struct rds *r, bool up, void *arg);

/* Parses redis://[:password@]host[:port][/db], or redis-cluster://[:password@]host:port[,...]
 * (common/rcluster.h: the same API routed over one connection per master). Returns NULL with a reason in err when the URL
 * is malformed (the password masked); otherwise starts connecting at once. name appears in logs. */
struct rds *rds_new(struct event_base *base, const char *url, const char *name,
                    rds_state_fn *on_state, void *arg, char *err, size_t errlen);
void rds_free(struct rds *r);
bool rds_up(const struct rds *r);
/* Made from a redis-cluster:// URL. Such a handle differs in three ways: replies of commands
 * to different slots may come in any order; a blocking command holds its master's connection
 * (use a handle of its own); MULTI...EXEC is sent when EXEC is, and the commands inside take
 * no callback. */
bool rds_is_cluster(const struct rds *r);

/* Sends a command. Returns -1 (and never calls cb) when not connected; otherwise cb is called
 * exactly once, with NULL if the connection drops first. cb may be NULL (reply ignored). The
 * argument memory is copied before return. */
int rds_cmd(struct rds *r, rds_reply_fn *cb, void *priv, int argc, const char **argv,
            const size_t *lens) __attribute__((warn_unused_result));

/* True for an error reply whose text starts with prefix (e.g. "NOGROUP"). */
bool rds_is_error(const redisReply *reply, const char *prefix);

/* Argument vector builder; strings added with rargs_add are borrowed (must outlive the send),
 * numbers are formatted into the builder's own storage. */
struct rargs {
    int argc, cap;
    const char **argv;
    size_t *lens;
    char **owned;
    int nowned, capowned;
};
void rargs_add(struct rargs *a, const char *p, size_t n);
void rargs_adds(struct rargs *a, const char *s);
void rargs_addll(struct rargs *a, long long v);
int rargs_send(struct rargs *a, struct rds *r, rds_reply_fn *cb, void *priv)
    __attribute__((warn_unused_result));
void rargs_reset(struct rargs *a); /* empties, keeps the arrays */
void rargs_free(struct rargs *a);

#endif
