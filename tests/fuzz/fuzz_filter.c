/* libFuzzer target: filter_parse and filter_match (common/filter.c). The input is a filter, a
 * NUL byte and a payload (without a NUL the filter is also the payload). Checks that a refusal
 * names "filter", that an accepted filter is within the limits and compiles the same from its
 * tree, and that matching never fails, whatever the payload. */
#include "filter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nul = memchr(p, '\0', size);
    size_t flen = nul ? (size_t)(nul - p) : size;
    const char *payload = nul ? nul + 1 : p;
    size_t plen = nul ? size - flen - 1 : size;
    char err[256];
    err[0] = '\0';
    struct filter *f = filter_parse(p, flen, err, sizeof err);
    if (!f) {
        if (strncmp(err, "filter", 6) != 0) {
            fprintf(stderr, "fuzz_filter: a refusal without \"filter\": \"%s\"\n", err);
            abort();
        }
        return 0;
    }
    cJSON *doc = cJSON_ParseWithLength(p, flen);
    if (!doc)
        abort(); /* accepted, so it parsed */
    char *compact = cJSON_PrintUnformatted(doc);
    if (!compact || strlen(compact) > FILTER_MAX_BYTES)
        abort();
    cJSON_free(compact);
    struct filter *again = filter_compile(doc, err, sizeof err);
    if (!again)
        abort();
    cJSON *pl = cJSON_ParseWithLength(payload, plen);
    bool m1 = filter_match(f, pl), m2 = filter_match(again, pl);
    if (m1 != m2)
        abort();                /* deterministic */
    (void)filter_match(f, doc); /* the filter as a payload: operators as keys, deep nesting */
    cJSON_Delete(pl);
    cJSON_Delete(doc);
    filter_free(again);
    filter_free(f);
    return 0;
}
