/* The libcurl client of webhookctl: one blocking request to the broker, its status and body. */
#ifndef WH_CLI_HTTP_H
#define WH_CLI_HTTP_H

#include <stddef.h>

#include "cli.h"
#include "mem.h"

struct http_req {
    const char *method; /* "GET", "POST", "PATCH", "PUT", "DELETE" */
    const char *path;   /* "/api/v0/...", with its query; appended to c->api_url */
    const char *body;   /* NULL: none (Content-Length 0 for a POST) */
    size_t body_len;
    const char *idem_key; /* Idempotency-Key header, or NULL */
    bool auth;            /* send Authorization: Bearer <c->api_key> */
};

/* Sends the request; 0 with *status and body (caller frees with buf_free) when an HTTP answer
 * came back, whatever its status; -1 with the reason in err when none did (cannot resolve or
 * connect, connection reset, timeout). */
int http_send(const struct cli *c, const struct http_req *rq, long *status, struct buf *body,
              char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
