/* Subscription payload filters (docs/api.md "Filters"): a JSON document in the operator syntax
 * ({"data.amount": {"$gte": 100}, "$or": [...]}) validated and compiled once, then matched
 * against parsed payloads. Pure functions; a compiled filter is immutable (share it freely
 * within one thread). */
#ifndef WH_FILTER_H
#define WH_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#define FILTER_MAX_BYTES 4096  /* the filter as compact JSON */
#define FILTER_MAX_DEPTH 8     /* nested objects and arrays, the filter object itself is 1 */
#define FILTER_MAX_LIST 100    /* elements of $in, $nin, $and, $or */
#define FILTER_MAX_SEGMENTS 32 /* dot-separated segments of one field path */

struct filter;

/* Validates doc (the "filter" member of a request, or a stored filter) and compiles it. NULL
 * with a message naming the problem and where ("filter.data.amount: $gt needs a number or
 * string") in err (errlen bytes, may be 0) when invalid. Caller frees with filter_free. doc is
 * not kept. */
struct filter *filter_compile(const cJSON *doc, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* filter_compile of the JSON text p[0..n) (not NUL-terminated). */
struct filter *filter_parse(const char *p, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether payload (any JSON value) matches. Never fails: a type mismatch is "no match". */
bool filter_match(const struct filter *f, const cJSON *payload);

void filter_free(struct filter *f); /* NULL is fine */

#endif
