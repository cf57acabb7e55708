/* PostgreSQL schema: numbered migrations, applied at start-up under an advisory lock and
 * recorded in schema_migrations. */
#ifndef WH_SCHEMA_H
#define WH_SCHEMA_H

/* The whole set-up script (one transaction, idempotent); caller frees. */
char *schema_setup_sql(void);
/* The same, followed by the settings of the broker's and workers' sessions: every statement
 * they run is an index lookup, and sequential scans are turned off so that a prepared
 * statement's cached generic plan, made while a table was nearly empty, cannot become a scan
 * of every job once the table has grown (docs/decisions.md). JIT compilation is turned off
 * too: with sequential scans priced at 1e10, the rare statement that can only scan (a count
 * over a small table) crossed jit_above_cost and was compiled on every run, at 0.7 to 2 s of
 * CPU each (found by the API keys' reload, decision 45). A statement has 25 s
 * (statement_timeout), under the 30 s after which common/pg.c gives up on a connection that
 * does not answer: a slow statement fails alone instead of taking down the connection and
 * every request queued behind it; and client_connection_check_interval ends a statement whose
 * client has gone, which used to run on to its end (decision 51). Caller frees. */
char *schema_daemon_setup_sql(void);
int schema_version(void); /* newest migration number */

/* How long an Idempotency-Key holds its first event (an SQL interval): a repeat within it is
 * answered with that event; after it the key is free (the broker's keyed commit and the
 * reconciler's purge both use it). */
/* The daemons' statement_timeout (schema_daemon_setup_sql), in seconds: below common/pg.c's
 * 30 s without an answer (decision 51). */
#define SCHEMA_STATEMENT_TIMEOUT_S 25
#define SCHEMA_IDEMPOTENCY_TTL "interval '24 hours'"

#endif
