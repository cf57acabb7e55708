/* SQL fragments shared by the broker's handlers (timestamps as RFC 3339 UTC with ms). */
#ifndef WH_BROKER_SQL_H
#define WH_BROKER_SQL_H

#define SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* When the previous secret stops signing; NULL unless it still does. */
#define SQL_SUB_PREV_EXPIRES                                                                       \
    "CASE WHEN previous_secret_expires_at > now() "                                                \
    "THEN " SQL_TS("previous_secret_expires_at") " END"

/* Columns read by sub_json(): keep in this order. The ninth is SQL_SUB_PREV_EXPIRES (the
 * previous secret itself is never read); the controls follow (decision 24): description,
 * paused_at, disabled_at, disabled_reason, rate_limit, retry_policy, timeout_seconds (the
 * settings NULL when default); then the payload shape (decision 31): payload_shape,
 * payload_fields (json: the text as stored); then ordered (decision 33); then the payload
 * filter (decision 30; NULL when none, its text is what the event index carries); then
 * batching (decision 40; NULL when off); then the event names (decision 39), whose first is
 * the second column (the answers' eventName); then the tenant (decision 44). */
#define SQL_SUB_COLS                                                                               \
    "id, event_names[1], url, secret, headers::text, status, " SQL_TS("created_at") ", " SQL_TS(  \
        "updated_at") ", " SQL_SUB_PREV_EXPIRES ", description, " SQL_TS("paused_at") ", "         \
        SQL_TS("disabled_at") ", disabled_reason, rate_limit::text, retry_policy::text, "        \
        "timeout_seconds, payload_shape, payload_fields::text, ordered, " SQL_SUB_FILTER_COL       \
        ", batching::text, array_to_json(event_names)::text, tenant"
#define SQL_SUB_NCOLS 23 /* a query's own columns follow SQL_SUB_COLS */
#define SQL_SUB_BATCHING 20 /* batching (decision 40), NULL when off */
#define SQL_SUB_FILTER_COL "filter::text" /* column 19 */
#define SQL_SUB_FILTER 19
#define SQL_SUB_NAMES 21 /* the event names (decision 39) as a JSON array */
#define SQL_SUB_TENANT 22 /* the tenant (decision 44), NULL for a global subscription */

/* A subscription's health from its row (decision 29): disabled, paused, circuit_open (also
 * while a probe is due), failing (consecutive failures), healthy. */
#define SQL_SUB_HEALTH                                                                             \
    "CASE WHEN disabled_at IS NOT NULL THEN 'disabled' WHEN paused_at IS NOT NULL THEN 'paused' "  \
    "WHEN circuit_open_until IS NOT NULL THEN 'circuit_open' WHEN failures > 0 THEN 'failing' "    \
    "ELSE 'healthy' END"

#endif
