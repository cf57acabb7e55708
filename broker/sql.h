/* SQL fragments shared by the broker's handlers (timestamps as RFC 3339 UTC with ms). */
#ifndef WH_BROKER_SQL_H
#define WH_BROKER_SQL_H

#define SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Columns read by sub_json(): keep in this order. The last one is when the previous secret
 * stops signing, NULL unless it still does (the previous secret itself is never read). */
#define SQL_SUB_COLS                                                                               \
    "id, event_name, url, secret, headers::text, status, " SQL_TS("created_at") ", " SQL_TS(      \
        "updated_at") ", CASE WHEN previous_secret_expires_at > now() THEN "                       \
                      SQL_TS("previous_secret_expires_at") " END"
#define SQL_SUB_NCOLS 9 /* a query's own columns follow SQL_SUB_COLS */

#endif
