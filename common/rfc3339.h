/* RFC 3339 timestamps as the API takes them (?since=, "until", cursors): strict parsing to
 * microseconds since 1970 UTC, and the same instant written as PostgreSQL timestamptz input.
 * Pure functions. */
#ifndef WH_RFC3339_H
#define WH_RFC3339_H

#include <stdint.h>

#define RFC3339_MIN_US 0LL                    /* 1970-01-01T00:00:00Z */
#define RFC3339_MAX_US 253402300799999999LL   /* 9999-12-31T23:59:59.999999Z */
#define RFC3339_PG_MAX 64

/* YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM), 'T' and 'Z' in either case, a real calendar
 * date from 1970 on, no leap second, no finer fraction than PostgreSQL keeps (refused rather
 * than rounded). 0 with *us, or -1. */
int rfc3339_parse(const char *s, int64_t *us) __attribute__((warn_unused_result));

/* us as "YYYY-MM-DD HH:MM:SS.ffffff+00" (PostgreSQL timestamptz input, UTC). out:
 * RFC3339_PG_MAX bytes. */
void rfc3339_pg(int64_t us, char out[RFC3339_PG_MAX]);

#endif
