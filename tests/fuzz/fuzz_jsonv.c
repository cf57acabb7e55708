/* libFuzzer target: jsonv_validate (common/jsonv.c), and cJSON parsing what it accepts. */
#include "jsonv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Calls jsonv_has_dup_keys on every object in the tree. */
static void walk(const cJSON *node, int depth)
{
    if (depth > JSONV_MAX_DEPTH + 2)
        abort(); /* deeper than the validator allows */
    (void)jsonv_has_dup_keys(node);
    for (const cJSON *c = node->child; c; c = c->next)
        walk(c, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    char err[160];
    err[0] = '\0';
    if (jsonv_validate(p, size, err, sizeof err) != 0) {
        /* The reason names a byte offset inside the input (or just past its end). */
        size_t at;
        if (sscanf(err, "invalid JSON at byte %zu:", &at) != 1 || at > size) {
            fprintf(stderr, "fuzz_jsonv: bad error text \"%s\" for %zu bytes\n", err, size);
            abort();
        }
        char tiny[8];
        if (jsonv_validate(p, size, tiny, sizeof tiny) == 0 || strlen(tiny) >= sizeof tiny)
            abort();
        if (jsonv_validate(p, size, NULL, 0) == 0)
            abort();
        return 0;
    }
    cJSON *doc = cJSON_ParseWithLength(p, size);
    if (!doc) {
        fprintf(stderr,
                "fuzz_jsonv: jsonv_validate accepted what cJSON_ParseWithLength refuses "
                "(cJSON error near byte %td)\n",
                cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - p : (ptrdiff_t)-1);
        abort();
    }
    walk(doc, 0);
    cJSON_Delete(doc);
    return 0;
}
