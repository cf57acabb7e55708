/* Unit tests for common/dialguard.c, the SSRF guard at libcurl's dial: a refused address fails
 * the attempt and is recorded with its reason, an allowed one gets a socket and marks the
 * transfer dialled, sockets that are not IP connections and a missing record are refused, and
 * "refused every address" holds only when nothing was dialled and the transfer failed. No
 * connection is made: the sockets opened are closed unused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "dialguard.h"
#include "unit.h"

static struct curl_sockaddr loopback(void)
{
    struct curl_sockaddr a;
    memset(&a, 0, sizeof a);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    a.family = AF_INET;
    a.socktype = SOCK_STREAM;
    a.protocol = IPPROTO_TCP;
    a.addrlen = sizeof sin;
    memcpy(&a.addr, &sin, sizeof sin);
    return a;
}

int main(int argc, char **argv)
{
    (void)argc;
    char err[256];
    struct netguard strict, open;
    CHECK(netguard_init(&strict, false, false, "", err, sizeof err) == 0);
    CHECK(netguard_init(&open, true, false, "", err, sizeof err) == 0);
    struct curl_sockaddr a = loopback();
    struct dialguard d;

    /* refused: no socket, the reason kept, the transfer's failure is the guard's */
    dialguard_reset(&d, &strict);
    CHECK(!d.refused && !d.dialled);
    CHECK(dialguard_open_socket(&d, CURLSOCKTYPE_IPCXN, &a) == CURL_SOCKET_BAD);
    CHECK(d.refused && !d.dialled);
    CHECK(strstr(d.why, "127.0.0.1") && strstr(d.why, "loopback"));
    CHECK(dialguard_refused_all(&d, CURLE_COULDNT_CONNECT));
    CHECK(!dialguard_refused_all(&d, CURLE_OK));

    /* reset for the next attempt forgets the refusal */
    dialguard_reset(&d, &open);
    CHECK(!d.refused && !d.dialled && d.guard == &open);

    /* allowed: a socket, and a failure now is the connection's */
    curl_socket_t s = dialguard_open_socket(&d, CURLSOCKTYPE_IPCXN, &a);
    CHECK(s != CURL_SOCKET_BAD);
    if (s != CURL_SOCKET_BAD)
        close(s);
    CHECK(d.dialled && !d.refused);
    CHECK(!dialguard_refused_all(&d, CURLE_COULDNT_CONNECT));

    /* one address refused, another dialled: not refused outright */
    dialguard_reset(&d, &strict);
    CHECK(dialguard_open_socket(&d, CURLSOCKTYPE_IPCXN, &a) == CURL_SOCKET_BAD);
    d.guard = &open;
    s = dialguard_open_socket(&d, CURLSOCKTYPE_IPCXN, &a);
    CHECK(s != CURL_SOCKET_BAD);
    if (s != CURL_SOCKET_BAD)
        close(s);
    CHECK(d.refused && d.dialled);
    CHECK(!dialguard_refused_all(&d, CURLE_COULDNT_CONNECT));

    /* not an IP connection: refused even when the guard is off */
    dialguard_reset(&d, &open);
    CHECK(dialguard_open_socket(&d, CURLSOCKTYPE_ACCEPT, &a) == CURL_SOCKET_BAD);
    CHECK(d.refused && !d.dialled);
    CHECK_STR(d.why, "refusing a socket that is not an IP connection");

    /* no record (a pooled handle detached from its job): refused */
    CHECK(dialguard_open_socket(NULL, CURLSOCKTYPE_IPCXN, &a) == CURL_SOCKET_BAD);
    return unit_done(argv[0]);
}
