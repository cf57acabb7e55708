/* Registration-time SSRF check of webhook URLs: https-only mode, then the host resolved off the
 * event loop and every address it resolves to checked by the guard (common/netguard.h). */
#ifndef WH_URLGUARD_H
#define WH_URLGUARD_H

#include <stddef.h>

#include "broker.h"
#include "valid.h"

enum urlguard_verdict {
    URLGUARD_ALLOWED, /* the URL may be registered */
    URLGUARD_REFUSED, /* 400 url_not_allowed: reason says why */
    URLGUARD_BUSY,    /* 503: too many lookups waiting (RESOLVE_QUEUE_MAX), or shutting down */
};

/* reason is NULL when allowed, else a message for the client (valid during the call). */
typedef void urlguard_cb(void *arg, enum urlguard_verdict verdict, const char *reason);

/* Reads the guard settings from b->cfg and starts the resolver threads. 0, or -1 with a
 * reason. */
int urlguard_start(struct broker *b, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Checks the host of a URL valid_webhook_url() accepted and calls cb exactly once: at once when
 * no lookup is needed (guard off, refused scheme, address literal) or when RESOLVE_QUEUE_MAX
 * lookups are already waiting or under way (BUSY), else from the event loop when the lookup
 * finishes or RESOLVE_TIMEOUT passes, whichever comes first. A name that does not exist is
 * refused; a lookup that fails for another reason (no DNS server answering) or does not finish
 * in time lets the URL through, since the worker checks the address it dials at every delivery
 * anyway (decision 15). */
void urlguard_check(const struct url_host *url, urlguard_cb *cb, void *arg);

/* At exit, before the HTTP side is freed: answers every check still waiting (BUSY), gives the
 * lookups under way STOP_JOIN_MS to finish, and leaves threads still blocked in getaddrinfo()
 * to free their lookup themselves. Frees everything else. */
void urlguard_stop(void);

#endif
