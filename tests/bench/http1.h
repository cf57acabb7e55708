/* Strict HTTP/1.x message-head parsing for the bench tools: request heads for the receiver,
 * response heads for the load generator. Pure functions over a byte range; nothing allocated. */
#ifndef BENCH_HTTP1_H
#define BENCH_HTTP1_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP1_MAX_HEAD 65536 /* a head longer than this is malformed */

/* What the parser found in one head. Pointers point into the parsed bytes (valid as long as
 * they are). */
struct http1_head {
    size_t head_len;    /* bytes up to and including the blank line */
    int minor;          /* HTTP/1.<minor>: 0 or 1 */
    const char *method; /* requests */
    size_t method_len;
    const char *target; /* requests: origin-form "/path?query" */
    size_t target_len;
    int status;               /* responses: 100..599 */
    long long content_length; /* -1: no Content-Length header */
    bool chunked;             /* Transfer-Encoding present (the bench tools refuse it) */
    bool conn_close;          /* Connection: close */
    bool conn_keep_alive;     /* Connection: keep-alive */
    bool expect_continue;     /* Expect: 100-continue */
    unsigned seen;            /* bit i set when header want[i] was present (even if empty) */
};

/* Parses the head at p[0..len). want: lower-case header names to look for (at most 32), their
 * presence reported in h->seen. Returns 1 when a whole head was parsed, 0 when more bytes are
 * needed, -1 when malformed (bad syntax, conflicting Content-Length, longer than
 * HTTP1_MAX_HEAD). */
int http1_parse_request(const char *p, size_t len, const char *const *want, size_t nwant,
                        struct http1_head *h) __attribute__((warn_unused_result));
int http1_parse_response(const char *p, size_t len, struct http1_head *h)
    __attribute__((warn_unused_result));

/* Whether the connection stays open after this message (HTTP/1.1 unless "close", HTTP/1.0
 * only with "keep-alive"). */
bool http1_keep_alive(const struct http1_head *h);

#endif
