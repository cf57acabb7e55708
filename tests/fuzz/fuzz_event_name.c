/* libFuzzer target: path_segment_decode then valid_event_name (common/valid.c). */
/* The same steps as the broker's route for /events/{name}. */
#include "valid.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes into a heap buffer of exactly cap bytes (ASan catches overflows) and checks the
 * result; returns the decoded length or -1. */
static long decode_checked(const char *in, size_t n, size_t cap)
{
    char *out = malloc(cap);
    if (!out)
        abort();
    long len = path_segment_decode(in, n, out, cap);
    if (len >= 0) {
        if ((size_t)len >= cap || (size_t)len > n || out[len] != '\0' ||
            memchr(out, '\0', (size_t)len))
            abort();
        bool ok = valid_event_name(out, (size_t)len);
        if (ok) {
            for (long i = 0; i < len; i++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-",
                            out[i]))
                    abort();
            if (len > EVENT_NAME_MAX)
                abort();
        }
    }
    free(out);
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    decode_checked(in, size, 256); /* the broker's segment buffer (struct request.seg) */
    decode_checked(in, size, EVENT_NAME_MAX + 1);
    decode_checked(in, size, 1 + size % 7); /* small buffers: the bound check itself */
    (void)valid_event_name(in, size);       /* undecoded bytes too */
    return 0;
}
