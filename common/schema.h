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

/* Decision 39: a job is inserted only for a subscription s whose names match the event's name n
 * now (the index may be stale after a PATCH of the names), and carries the name unless the
 * subscription is plain (plain_until NULL: only ever its one exact name event_name, which the
 * job search then knows). Plain subscriptions, every one from before decision 39, are matched
 * by one comparison; wh_name_keys (migration 15) only runs for the others. */
#define SQL_SUB_MATCHES(n)                                                                         \
    "CASE WHEN s.plain_until IS NULL THEN s.event_name = " n                                       \
    " ELSE s.event_names && wh_name_keys(" n ") END"
/* Decision 44: a job only for a subscription of the event's tenant t (both NULL: global), so an
 * index entry in the wrong hash can never deliver one tenant's event to another. */
#define SQL_SUB_TENANT(t) "s.tenant IS NOT DISTINCT FROM " t
#define SQL_JOB_NAME(n) "CASE WHEN s.plain_until IS NOT NULL THEN " n " END"
/* A job of a trigger is written only for a subscription s that is active and not disabled and
 * matches the event's name n and tenant t (a paused one gets its jobs: they wait). */
#define SQL_SUB_TAKES(n, t)                                                                        \
    "s.status = 'active' AND s.disabled_at IS NULL AND " SQL_SUB_MATCHES(n) " AND "                \
    SQL_SUB_TENANT(t)

/* Bytes per job in events.fanout (migration 18): job id, subscription id, partition. */
#define SCHEMA_FANOUT_ENTRY 34
#define SCHEMA_FANOUT_STRIDE SCHEMA_STR(SCHEMA_FANOUT_ENTRY) /* as SQL text */

/* The jobs listed in the lists `fanout` of the events o (a FROM item whose fanout was read
 * once: a stored list is TOASTed, and each substr of the stored value would fetch it again):
 * rows (ev, event_name, tenant, id, sub, part). */
#define SQL_FANOUT_ENTRIES                                                                         \
    "SELECT o.id AS ev, o.event_name, o.tenant, "                                                  \
    "  encode(substr(o.fanout, g * " SCHEMA_FANOUT_STRIDE " + 1, 16), 'hex')::uuid AS id, "        \
    "  encode(substr(o.fanout, g * " SCHEMA_FANOUT_STRIDE " + 17, 16), 'hex')::uuid AS sub, "      \
    "  get_byte(o.fanout, g * " SCHEMA_FANOUT_STRIDE " + 32) * 256 "                               \
    "  + get_byte(o.fanout, g * " SCHEMA_FANOUT_STRIDE " + 33) AS part "                           \
    "FROM o, generate_series(0, length(o.fanout) / " SCHEMA_FANOUT_STRIDE " - 1) g"

/* The second half of a deferred fan-out (docs/decisions.md 54), run by the broker that
 * committed the events and by the reconciler for a list a broker left behind: for the events
 * $1 (uuid[]) whose job list is still waiting, writes the listed jobs whose subscription still
 * takes them (SQL_SUB_TAKES, the check a plain commit makes; its URL and job name as the
 * subscription has them now) and empties the lists, in one transaction. The row lock makes the
 * two callers take turns: the second finds the list empty and writes nothing. Returns the ids
 * of the jobs written, which the caller (the broker) enqueues. The batch's subscriptions are
 * read once each (s: a primary-key probe per distinct subscription, LATERAL ... LIMIT 1) and
 * joined to the jobs by a hash: a plain join was planned as a scan of every active
 * subscription, once per job in the generic plan (6 s for 12,000 jobs), and a probe per job
 * cost 4 µs a job. */
#define SCHEMA_FANOUT_SQL                                                                          \
    "WITH o AS MATERIALIZED (SELECT id, event_name, tenant, fanout || ''::bytea AS fanout "       \
    "  FROM events WHERE id = ANY($1::uuid[]) AND fanout IS NOT NULL FOR UPDATE), "                \
    "c AS (UPDATE events e SET fanout = NULL FROM o WHERE e.id = o.id), "                          \
    "f AS MATERIALIZED (" SQL_FANOUT_ENTRIES "), "                                                 \
    "s AS MATERIALIZED (SELECT x.* FROM (SELECT DISTINCT sub FROM f) d CROSS JOIN LATERAL "        \
    "  (SELECT s.id, s.url, s.status, s.disabled_at, s.plain_until, s.event_name, "                \
    "  s.event_names, s.tenant FROM subscriptions s WHERE s.id = d.sub LIMIT 1) x), "              \
    "j AS (INSERT INTO jobs (id, event_id, subscription_id, url, partition, event_name) "         \
    "  SELECT f.id, f.ev, f.sub, s.url, f.part, " SQL_JOB_NAME("f.event_name") " "                 \
    "  FROM f JOIN s ON s.id = f.sub AND " SQL_SUB_TAKES("f.event_name", "f.tenant") " "           \
    "  ON CONFLICT (id) DO NOTHING RETURNING id) "                                                 \
    "SELECT id FROM j"

/* The oldest job of subscription `sub` (an SQL expression) still listed in an event whose
 * fan-out is waiting, or NULL: one term of an ordered subscription's head (decision 54), read
 * through the partial index events_fanout; only the lists holding the subscription's id are
 * unpacked, each read once (OFFSET 0 keeps d a subquery evaluated once per row). */
#define SCHEMA_LISTED_HEAD(sub)                                                                    \
    "(SELECT encode(substr(d.b, g * " SCHEMA_FANOUT_STRIDE " + 1, 16), 'hex')::uuid AS id FROM "   \
    "  (SELECT e.fanout || ''::bytea AS b FROM events e WHERE e.fanout IS NOT NULL "               \
    "    AND position(uuid_send(" sub ") IN e.fanout) > 0 OFFSET 0) d, "                           \
    "  generate_series(0, length(d.b) / " SCHEMA_FANOUT_STRIDE " - 1) g "                          \
    "  WHERE substr(d.b, g * " SCHEMA_FANOUT_STRIDE " + 17, 16) = uuid_send(" sub ") "             \
    "  ORDER BY 1 LIMIT 1)"

/* An ordered subscription's head (decision 33), an SQL expression: the smallest id among its
 * queued jobs, its retrying jobs (two probes of jobs_subscription (subscription_id, status,
 * id)) and the jobs still listed by a waiting fan-out (decision 54); NULL when it has none. The
 * worker's batch lookup and the reconciler's pass over held subscriptions both decide by it. */
#define SCHEMA_ORDERED_HEAD(sub)                                                                   \
    "LEAST((SELECT hj.id FROM jobs hj WHERE hj.subscription_id = " sub                             \
    " AND hj.status = 'queued' ORDER BY hj.id LIMIT 1), "                                          \
    "(SELECT hj.id FROM jobs hj WHERE hj.subscription_id = " sub                                   \
    " AND hj.status = 'retrying' ORDER BY hj.id LIMIT 1), " SCHEMA_LISTED_HEAD(sub) ")"

/* A number macro as SQL text (SCHEMA_FANOUT_STRIDE) */
#define SCHEMA_STR_(x) #x
#define SCHEMA_STR(x) SCHEMA_STR_(x)

#endif
