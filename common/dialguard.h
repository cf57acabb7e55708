/* The SSRF guard at libcurl's dial: a CURLOPT_OPENSOCKETFUNCTION that checks the address libcurl
 * is about to connect to (after its own resolution, so a name that changes its answer between
 * checks cannot slip past) and records, per transfer, what it refused. Decision 15. */
#ifndef WH_DIALGUARD_H
#define WH_DIALGUARD_H

#include <stdbool.h>

#include <curl/curl.h>

#include "netguard.h"

/* One transfer's dials: CURLOPT_OPENSOCKETDATA for dialguard_open_socket. */
struct dialguard {
    const struct netguard *guard; /* the settings checked (borrowed) */
    bool refused;                 /* an address was refused */
    bool dialled;                 /* an address passed: a failure now is the connection's */
    char why[256];                /* the last refusal */
};

/* Ready for a new transfer checked against g (borrowed: it must outlive the transfer). */
void dialguard_reset(struct dialguard *d, const struct netguard *g);

/* CURLOPT_OPENSOCKETFUNCTION, with a struct dialguard (or NULL: every socket refused, nothing
 * recorded) as CURLOPT_OPENSOCKETDATA. Opens the socket when the address is an IP connection
 * the guard allows; else records the reason and fails this connection attempt, and libcurl
 * tries the host's next address, if any. */
curl_socket_t dialguard_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a);

/* True when a transfer that ended with res failed because the guard refused every address it
 * reached: nothing was sent, the destination itself is refused. */
bool dialguard_refused_all(const struct dialguard *d, CURLcode res);

#endif
