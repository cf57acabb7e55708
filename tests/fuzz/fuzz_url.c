/* libFuzzer target: valid_webhook_url (common/valid.c) on arbitrary bytes. */
/* The host an accepted URL yields is what the SSRF guard classifies, so anything the system
 * resolver would read as an IPv4 number ("127.1", "0x7f.1") must come out in the one literal
 * form the guard parses itself. */
#include "valid.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *url = (const char *)data; /* not NUL-terminated: ASan catches over-reads */
    char err[256];
    err[0] = '\0';
    struct url_host h = {.name = ""};
    if (valid_webhook_url(url, size, &h, err, sizeof err) != 0) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    /* What is accepted has none of the bytes the contract refuses. */
    if (size == 0 || size > WEBHOOK_URL_MAX || memchr(url, '\0', size) || memchr(url, '\r', size) ||
        memchr(url, '\n', size) || memchr(url, ' ', size) || memchr(url, '\t', size) ||
        memchr(url, '\\', size) || memchr(url, '#', size))
        abort();
    const char *host = h.name;
    if (host[0] == '\0' || strchr(host, '[') || strchr(host, ']') || strchr(host, '%'))
        abort();
    struct in_addr a4, b4;
    if (inet_aton(host, &a4) == 1 &&
        (inet_pton(AF_INET, host, &b4) != 1 || a4.s_addr != b4.s_addr))
        abort();
    if ((size >= 6 && strncasecmp(url, "https:", 6) == 0) != h.https)
        abort();
    return 0;
}
