/* Endpoint verification at registration ("verify": true): a signed challenge POSTed to the
 * webhook URL, which must echo it back; libcurl multi on the broker's event loop. */
#ifndef WH_VERIFY_H
#define WH_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "broker.h"

#define VERIFY_TIMEOUT_MS 10000 /* the whole challenge request: connect, send, answer */
#define VERIFY_MAX_INFLIGHT 32  /* challenges under way; a registration beyond gets 503 */
#define VERIFY_BODY_MAX 65536   /* the most response body read */
#define VERIFY_EXCERPT_MAX 200  /* the most response body quoted in a failure message */

enum verify_result {
    VERIFY_OK,      /* 2xx within the time, body {"challenge": <the one sent>} */
    VERIFY_FAILED,  /* 422 verification_failed: detail says what came back */
    VERIFY_REFUSED, /* 400 url_not_allowed: the SSRF guard refused every address dialled */
    VERIFY_BUSY,    /* 503: VERIFY_MAX_INFLIGHT reached, or the broker is shutting down */
};

/* detail is NULL for VERIFY_OK, else a message for the client (valid during the call). */
typedef void verify_cb(void *arg, enum verify_result result, const char *detail);

/* Reads the guard settings from b->cfg and sets up the multi handle on b->base. 0, or -1 with
 * a reason. */
int verify_start(struct broker *b, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Sends the challenge to url (an http(s) URL valid_webhook_url() accepted), signed with secret
 * (the "whsec_" text the registration stores) and carrying headers (the subscription's custom
 * headers as a JSON object of strings, or NULL for none). Borrows every argument for the call
 * only. Calls cb exactly once: at once when VERIFY_MAX_INFLIGHT challenges are under way (BUSY)
 * or the request cannot be built (FAILED), else from the event loop when the exchange ends. */
void verify_check(const char *url, const char *secret, const char *headers, verify_cb *cb,
                  void *arg);

/* The verdict on a response: VERIFY_OK when status is 2xx and body[0..len) is a JSON object
 * whose "challenge" member is the string challenge; else VERIFY_FAILED with what came back
 * (status, why, a sanitised excerpt of the body) in why. Pure. */
enum verify_result verify_judge(const char *challenge, long status, const char *body, size_t len,
                                bool truncated, char *why, size_t whylen);

/* At exit, before the HTTP side is freed: answers every challenge under way (BUSY), stops its
 * transfer and frees everything. */
void verify_stop(void);

#endif
