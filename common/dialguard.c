/* The SSRF guard at libcurl's dial: a CURLOPT_OPENSOCKETFUNCTION that checks the address libcurl
 * is about to connect to and records, per transfer, what it refused. */
#include "dialguard.h"

#include <stdio.h>
#include <sys/socket.h>

void dialguard_reset(struct dialguard *d, const struct netguard *g)
{
    d->guard = g;
    d->refused = d->dialled = false;
}

curl_socket_t dialguard_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct dialguard *d = clientp;
    char why[256];
    if (purpose != CURLSOCKTYPE_IPCXN || !d ||
        netguard_allows(d->guard, &a->addr, a->addrlen, why, sizeof why) < 0) {
        if (d) {
            if (purpose != CURLSOCKTYPE_IPCXN)
                snprintf(why, sizeof why, "refusing a socket that is not an IP connection");
            d->refused = true;
            snprintf(d->why, sizeof d->why, "%s", why);
        }
        return CURL_SOCKET_BAD;
    }
    d->dialled = true; /* a failure now is the connection's, not the guard's */
    return socket(a->family, a->socktype, a->protocol);
}

bool dialguard_refused_all(const struct dialguard *d, CURLcode res)
{
    return d->refused && !d->dialled && res != CURLE_OK;
}
