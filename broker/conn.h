/* Connections of the HTTP front, beneath evhttp: the connection cap (503), the whole-request
 * deadline (408), the header limits (431), the early refusal of a declared body over the
 * limit (413) or of a body without a valid API key (401), each answered with a JSON error and
 * a bounded lingering close. Every size limit of a request is decided here. */
#ifndef WH_CONN_H
#define WH_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

struct conn_limits {
    long max_connections;  /* open connections; the next one is answered 503 and closed */
    long deadline_ms;      /* first byte of a request to its last, whatever the pace */
    long max_header_bytes; /* request line + headers, CRLFs included */
    long max_headers;      /* header lines */
    long max_body;         /* a larger Content-Length is refused before the body is read */
};

/* What a refused connection or request is answered with. */
struct conn_refusal {
    int status; /* 0: none */
    const char *code;
    char msg[192];
};

/* Takes over the connections evhttp accepts on listener (evhttp_set_bevcb), sets evhttp's own
 * header and body limits (backstops behind ours), and pauses
 * accepting briefly when the process runs out of descriptors. Raises RLIMIT_NOFILE when it
 * is below what max_connections needs; when it cannot, lowers the cap and says so. *lim is
 * copied. 0, or -1 with a reason in err. */
int conn_attach(struct event_base *base, struct evhttp *http, struct evconnlistener *listener,
                const struct conn_limits *lim, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* True, with *out set to the 413 answer, when a body of len bytes is over MAX_BODY_BYTES
 * (LLONG_MAX: longer than could be counted). */
bool conn_body_too_large(long long len, struct conn_refusal *out);

/* Call before the listener is freed (draining). */
void conn_stop_accepting(void);

/* Call after evhttp_free(): frees what is left (lingering sockets, bookkeeping). */
void conn_free(void);

/* gone(arg) is called if the connection closes while a handler owns its request. */
typedef void conn_gone_fn(void *arg);

/* A complete request arrived on evcon: stops its deadline and remembers gone(arg) until
 * conn_request_end(). Returns true, with *out filled, when the request must be refused
 * instead (a pipelined request already over a limit, or a connection being closed): the
 * caller answers with that status and "Connection: close" at once. */
bool conn_request_begin(struct evhttp_connection *evcon, conn_gone_fn *gone, void *arg,
                        struct conn_refusal *out);

/* Call before sending the reply: forgets gone, and watches for the next request (bytes a
 * client pipelined behind this request start its deadline now). */
void conn_request_end(struct evhttp_connection *evcon);

#endif
