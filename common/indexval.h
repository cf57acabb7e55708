/* The value of an event index entry (wh:event:<name>, field URL):
 * {"id":"<uuid>","status":"active"}. The one encoder and the one decoder, used by the broker and
 * the reconciler. Pure functions. */
#ifndef WH_INDEXVAL_H
#define WH_INDEXVAL_H

#include <stdbool.h>
#include <stddef.h>

#include "ids.h"

/* Bytes of an encoded value, and of a buffer that holds one with its NUL. */
#define INDEXVAL_LEN 63
#define INDEXVAL_SIZE (INDEXVAL_LEN + 1)
#define INDEXVAL_STATUS_MAX 16

struct indexval {
    char id[ID_LEN + 1];                  /* lowercase, NUL-terminated */
    char status[INDEXVAL_STATUS_MAX + 1]; /* "active" for every value written today */
};

/* Writes the value of an active subscription id (a valid id, ID_LEN bytes) into out
 * (INDEXVAL_SIZE bytes), NUL-terminated; returns its length (INDEXVAL_LEN). */
size_t indexval_encode(char *out, const char *id);

/* Parses v[0..n) (not NUL-terminated): exactly {"id":"<uuid>","status":"<a-z, 1 to 16>"} with
 * nothing before, after or in between. true and *out filled, or false for anything else. */
bool indexval_decode(const char *v, size_t n, struct indexval *out)
    __attribute__((warn_unused_result));

#endif
