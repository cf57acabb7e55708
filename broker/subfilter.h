/* The fan-out's payload filters (decision 30): each subscription's filter compiled once and
 * cached by subscription id (checked against the filter text the index or PostgreSQL gave,
 * so a changed filter is compiled again), the payload parsed once per trigger and only when
 * a subscription has a filter. */
#ifndef WH_BROKER_SUBFILTER_H
#define WH_BROKER_SUBFILTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

/* One trigger's payload: p[0..n) borrowed; parsed on the first filter met. */
struct subfilter_payload {
    const char *p;
    size_t n;
    cJSON *doc;
    bool parsed;
};

/* Whether the payload matches subscription sub's (ID_LEN bytes) filter, whose JSON text is
 * text[0..len). A filter that cannot be read (a hand-made row) or a payload that cannot be
 * parsed matches nothing, with a warning logged under rid. */
bool subfilter_match(struct subfilter_payload *pl, const char *sub, const char *text, size_t len,
                     const char *rid);

/* Frees the payload's tree (the struct stays). */
void subfilter_payload_done(struct subfilter_payload *pl);

/* Frees the cache (at exit). */
void subfilter_free(void);

#endif
