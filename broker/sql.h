/* SQL fragments shared by the broker's handlers (timestamps as RFC 3339 UTC with ms). */
#ifndef WH_BROKER_SQL_H
#define WH_BROKER_SQL_H

#define SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Columns read by sub_json(): keep in this order. */
#define SQL_SUB_COLS                                                                               \
    "id, event_name, url, secret, headers::text, status, " SQL_TS("created_at") ", " SQL_TS(      \
        "updated_at")

#endif
