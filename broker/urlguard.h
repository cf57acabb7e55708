/* Registration-time SSRF check of webhook URLs: https-only mode, then the host resolved off the
 * event loop and every address it resolves to checked by the guard (common/netguard.h). */
#ifndef WH_URLGUARD_H
#define WH_URLGUARD_H

#include <stddef.h>

#include "broker.h"
#include "valid.h"

/* refused is NULL when the URL may be registered, else the reason (valid during the call). */
typedef void urlguard_cb(void *arg, const char *refused);

/* Reads the guard settings from b->cfg and starts the resolver threads. 0, or -1 with a
 * reason. */
int urlguard_start(struct broker *b, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Checks the host of a URL valid_webhook_url() accepted and calls cb exactly once: at once when
 * no lookup is needed (guard off, refused scheme, address literal), else from the event loop
 * when the lookup finishes. A name that does not exist is refused; a lookup that fails for
 * another reason (no DNS server answering) lets the URL through, since the worker checks the
 * address it dials at every delivery anyway. */
void urlguard_check(const struct url_host *url, urlguard_cb *cb, void *arg);

/* Stops the threads (waits for lookups under way) and drops queued checks without calling
 * them back. */
void urlguard_stop(void);

#endif
