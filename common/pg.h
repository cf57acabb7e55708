/* A non-blocking PostgreSQL connection on the event loop: a FIFO of parameterised queries sent
 * one at a time, set-up SQL (migrations) run on every connect, reconnection with backoff. Also
 * the text-array literal builder used to send whole batches as one statement. */
#ifndef WH_PG_H
#define WH_PG_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "mem.h"

struct pg;

/* res is the statement's result (freed after the callback returns) or NULL; err is NULL on
 * success, else a one-line reason (res may still be set for a server-side error). */
typedef void pg_result_fn(void *priv, PGresult *res, const char *err);
typedef void pg_state_fn(struct pg *p, bool up, void *arg);

/* Starts connecting at once. setup_sql (may be NULL) runs as one simple query after every
 * connect, before any queued query; the connection counts as up only once it succeeded. */
struct pg *pg_new(struct event_base *base, const char *conninfo, const char *name,
                  const char *setup_sql, pg_state_fn *on_state, void *arg);
void pg_free(struct pg *p); /* queued callbacks get err "shutting down" */
bool pg_up(const struct pg *p);
struct event_base *pg_base(const struct pg *p); /* the loop the connection runs on */

/* Queues one statement. values[i] NULL = SQL NULL; lengths/formats may be NULL (all text).
 * Everything is copied. result_format 0 text, 1 binary. Returns -1 (cb not called) when the
 * connection is down; otherwise cb is called exactly once. */
int pg_query(struct pg *p, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *formats, int result_format, pg_result_fn *cb,
             void *priv) __attribute__((warn_unused_result));

/* The same, as a named prepared statement: prepared on first use on each connection (again
 * after a reconnect), so repeated statements skip parsing and planning. name must be a string
 * that lives as long as the process (a literal). */
int pg_query_prepared(struct pg *p, const char *name, const char *sql, int nparams,
                      const char *const *values, const int *lengths, const int *formats,
                      int result_format, pg_result_fn *cb, void *priv)
    __attribute__((warn_unused_result));

/* Text array literal for a $n::type[] parameter: pgarr_begin, then elements, then pgarr_end.
 * Elements are always double-quoted with " and \ escaped. */
void pgarr_begin(struct buf *b);
void pgarr_add(struct buf *b, const char *s, size_t n);
void pgarr_addll(struct buf *b, long long v);
void pgarr_null(struct buf *b);
void pgarr_end(struct buf *b);

#endif
