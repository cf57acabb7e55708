/* Strict JSON validation (RFC 8259) of request bodies, without building a tree, plus the checks
 * cJSON 1.7.15 does not make (duplicate keys). Pure functions. */
#ifndef WH_JSONV_H
#define WH_JSONV_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#define JSONV_MAX_DEPTH 64

/* Validates that p[0..n) is exactly one JSON value with optional surrounding whitespace
 * (space, tab, CR, LF). Rejects: trailing garbage, invalid UTF-8 anywhere, raw control
 * characters in strings, "\u0000" escapes, unpaired surrogate escapes, invalid escapes,
 * leading zeros, nesting deeper than JSONV_MAX_DEPTH, an empty body, and numbers whose
 * magnitude overflows a double (e.g. 1e400). On failure returns -1 and writes a short
 * human-readable reason with the byte offset into err ("invalid JSON at byte 12: ...").
 * Returns 0 when valid. Never reads past p + n. */
int jsonv_validate(const char *p, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* True when the object (not recursive) has two members with the same name.
 * NULL or a non-object yields false. */
bool jsonv_has_dup_keys(const cJSON *obj);

#endif
