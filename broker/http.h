/* The HTTP front: evhttp with limits, routing to handlers, request contexts that survive the
 * client going away, and JSON responses and errors. */
#ifndef WH_HTTP_H
#define WH_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>
#include <event2/http.h>

#include "auth.h"
#include "broker.h"
#include "mem.h"

struct req {
    struct broker *b;
    struct evhttp_request *ev; /* NULL once the client has gone away */
    struct evhttp_connection *conn;
    char id[24];      /* request id for logs */
    const char *body; /* the whole body, contiguous; valid until the reply */
    size_t body_len;
    const char *query; /* raw query string or NULL */
    char seg[4][256];  /* decoded path segments after the route prefix */
    int nseg;
    bool trigger; /* a request to /api/v0/trigger-event: its answer counts in wh_triggers_total */
    struct principal who; /* the key's roles and tenant (zero for routes without a key) */
};

/* The tenant whose data a request may touch: NULL when it may touch everything (an admin
 * key), else the key's tenant (a tenant key: only that tenant's subscriptions, their jobs,
 * events and recoveries; another tenant's, or a global one, must answer as if it did not
 * exist, 404). */
const char *req_tenant_scope(const struct req *r);

int http_start(struct broker *b, char *err, size_t errlen) __attribute__((warn_unused_result));
void http_stop_accepting(void);
void http_free(void);

/* Send the response and free the request. body may be NULL; it is consumed (freed). */
void http_reply(struct req *r, int status, struct buf *body);
/* Send len bytes of data as they are (no newline added; data is only read) and free the
 * request. */
void http_reply_bytes(struct req *r, int status, const void *data, size_t len);
/* The same with the given Content-Type and Cache-Control (both only read) instead of
 * application/json and no-store: the console's files. */
void http_reply_typed(struct req *r, int status, const char *ctype, const char *cache,
                      const void *data, size_t len);
void http_error(struct req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answers a failed database query: 503 when the database could not be reached (res NULL),
 * else 500 with the server's error. */
void http_db_error(struct req *r, PGresult *res, const char *err);

/* Appends ,"key":<column> to a JSON object: a string (escaped) or a number as PostgreSQL
 * printed it; null when the column is NULL. */
void http_col_str(struct buf *b, const char *key, PGresult *res, int row, int col);
void http_col_num(struct buf *b, const char *key, PGresult *res, int row, int col);

/* Checks Content-Type (application/json) and that there is a body; replies and returns false
 * when not. */
bool http_require_json_body(struct req *r);

/* The body of a management request: one JSON object without duplicate keys (Content-Type and
 * strict validation as above). NULL after replying (415, 400); the caller cJSON_Delete()s it. */
cJSON *http_body_object(struct req *r);

/* Query parameter lookup (percent-decoded); returns a malloc'd string or NULL. */
char *http_query_param(struct req *r, const char *name);

#endif
