/* libFuzzer target: valid_webhook_url (common/valid.c) on arbitrary bytes. */
#include "valid.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    if (valid_webhook_url(url, size, err, sizeof err) != 0) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    /* What is accepted has none of the bytes the contract refuses. */
    if (size == 0 || size > WEBHOOK_URL_MAX || memchr(url, '\0', size) || memchr(url, '\r', size) ||
        memchr(url, '\n', size) || memchr(url, ' ', size) || memchr(url, '\t', size) ||
        memchr(url, '\\', size) || memchr(url, '#', size))
        abort();
    return 0;
}
