/* The value of an event index entry (wh:event:<name>, field URL):
 * {"id":"<uuid>","status":"active"}, or with the subscription's payload filter
 * {"id":"<uuid>","status":"active","filter":<the filter column as PostgreSQL prints it>}
 * (decision 30). The one encoder and the one decoder, used by the broker and the reconciler.
 * Pure functions. */
#ifndef WH_INDEXVAL_H
#define WH_INDEXVAL_H

#include <stdbool.h>
#include <stddef.h>

#include "ids.h"
#include "mem.h"

/* Bytes of an encoded value without a filter, and of a buffer that holds one with its NUL. */
#define INDEXVAL_LEN 63
#define INDEXVAL_SIZE (INDEXVAL_LEN + 1)
#define INDEXVAL_STATUS_MAX 16

struct indexval {
    char id[ID_LEN + 1];                  /* lowercase, NUL-terminated */
    char status[INDEXVAL_STATUS_MAX + 1]; /* "active" for every value written today */
    const char *filter;                   /* the filter's JSON text (borrowed from the value,
                                             not NUL-terminated), NULL when none */
    size_t filter_len;
};

/* Writes the value of an active subscription id (a valid id, ID_LEN bytes) into out
 * (INDEXVAL_SIZE bytes), NUL-terminated; returns its length (INDEXVAL_LEN). */
size_t indexval_encode(char *out, const char *id);

/* Appends the value of an active subscription id with the filter text filter[0..flen) (NULL:
 * none, and the value is indexval_encode's, byte for byte) to b. */
void indexval_encode_filter(struct buf *b, const char *id, const char *filter, size_t flen);

/* Parses v[0..n) (not NUL-terminated): exactly {"id":"<uuid>","status":"<a-z, 1 to 16>"} with
 * nothing before, after or in between, or the same with ,"filter":<text starting with "{">
 * before the closing brace (the text is not checked here: common/filter.h parses it). true and
 * *out filled (out->filter points into v), or false for anything else. */
bool indexval_decode(const char *v, size_t n, struct indexval *out)
    __attribute__((warn_unused_result));

#endif
