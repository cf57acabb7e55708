/* libFuzzer target: valid_header (common/valid.c) on custom header names and values. */
/* The input is split at the first NUL or ':' into name and value. */
#include "valid.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* NUL-terminated heap copy of exactly n + 1 bytes; caller frees. */
static char *copy(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cut = 0;
    while (cut < size && data[cut] != '\0' && data[cut] != ':')
        cut++;
    char *name = copy(data, cut);
    char *value = cut < size ? copy(data + cut + 1, size - cut - 1) : copy(data, 0);
    char err[300];
    err[0] = '\0';
    if (valid_header(name, value, err, sizeof err) == 0) {
        size_t nlen = strlen(name), vlen = strlen(value);
        if (nlen == 0 || nlen > HEADER_NAME_MAX || vlen > HEADER_VALUE_MAX ||
            strpbrk(value, "\r\n") || strpbrk(name, " :\t\r\n"))
            abort();
    } else if (err[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    char tiny[5];
    (void)valid_header(name, value, tiny, sizeof tiny);
    (void)valid_header(name, value, NULL, 0);
    free(value);
    free(name);
    return 0;
}
