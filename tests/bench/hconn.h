/* Keep-alive HTTP/1.1 client connection on libevent for the load generator: one request at a
 * time, Content-Length (or read-until-close) responses, reconnects when the server closed it. */
#ifndef BENCH_HCONN_H
#define BENCH_HCONN_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct hconn;

/* The outcome of one request. status 0: transport error, err says which. body is valid until
 * the callback returns. */
struct hconn_result {
    long status;
    const char *body;
    size_t len;
    const char *err;
    bool connected; /* a new connection was opened for this request */
};

/* Called once per hconn_send that returned 0, from the event loop. It may call hconn_send on
 * the same connection again, but must not free it. */
typedef void (*hconn_cb)(void *arg, const struct hconn_result *res);

/* A connection to addr (copied); it connects on the first request. Caller frees (hconn_free). */
struct hconn *hconn_new(struct event_base *base, const struct sockaddr *addr, socklen_t alen);

/* Sends the whole request req[0..len), borrowed until cb is called, and calls cb with the
 * response or an error within timeout_ms. A request on a reused connection that the server
 * closed before answering is sent once more on a new one. Returns -1 (message in err) when it
 * could not even start; cb is then not called. The connection must be idle. */
int hconn_send(struct hconn *c, const char *req, size_t len, long timeout_ms, hconn_cb cb,
               void *arg, char *err, size_t errlen) __attribute__((warn_unused_result));

bool hconn_busy(const struct hconn *c);

/* Closes and frees; a request in flight is dropped without its callback. NULL is fine. */
void hconn_free(struct hconn *c);

#endif
