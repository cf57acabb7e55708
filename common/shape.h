/* Payload shape (issue 11, docs/decisions.md 31): the body a subscription receives, built from
 * the event's payload: as triggered ("raw") or in the Standard Webhooks envelope, with constant
 * fields (payloadFields) merged at the top level. The setting's checks for the broker, the body
 * for the worker. Pure functions. */
#ifndef WH_SHAPE_H
#define WH_SHAPE_H

#include <stdbool.h>
#include <stddef.h>

#include <cJSON.h>

#include "mem.h"

enum shape {
    SHAPE_RAW = 0,  /* the payload as triggered (the default; stored as NULL) */
    SHAPE_ENVELOPE, /* {"id","type","timestamp","data"} */
};

#define SHAPE_FIELDS_MAX 20     /* members of payloadFields */
#define SHAPE_FIELDS_BYTES 4096 /* its canonical (compact) text */
#define SHAPE_KEY_MAX 128       /* bytes of UTF-8 in one of its keys */
#define SHAPE_TS_LEN 24         /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */

/* "raw" or "envelope" into *out; -1 for anything else. */
int shape_parse(const char *s, enum shape *out) __attribute__((warn_unused_result));

/* Checks a payloadFields value: an object of at most SHAPE_FIELDS_MAX members with distinct
 * keys of 1 to SHAPE_KEY_MAX bytes of UTF-8 (values any JSON), whose compact text (cJSON's, the
 * canonical form stored and delivered) is at most SHAPE_FIELDS_BYTES. 0 with that text appended
 * to canon; -1 with a message naming the field in err. */
int shape_fields_check(const cJSON *v, struct buf *canon, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The creation time a UUIDv7 id carries (its first 48 bits, Unix milliseconds) as RFC 3339 UTC
 * with milliseconds into out (SHAPE_TS_LEN + 1 bytes). -1 when id does not start with a UUID's
 * hex digits or the year is past 9999. */
int shape_timestamp(const char *id, char *out) __attribute__((warn_unused_result));

/* Appends to out the body that is delivered for payload[0..plen) (valid JSON, as the broker
 * validated it), fields[0..flen) (a JSON object as shape_fields_check made it, or NULL) and the
 * event's id (a UUIDv7) and name:
 * - SHAPE_ENVELOPE: {"id":<event id>,"type":<name>,"timestamp":<the id's time>,"data":<payload
 *   bytes, outer whitespace trimmed>} followed by the fields whose key is none of the four.
 * - SHAPE_RAW: for a payload that is an object, its bytes with the fields whose key the payload
 *   does not have (keys compared decoded, "\u0061" is "a") inserted before its closing brace;
 *   any other payload, or no field left, is appended unchanged.
 * The event's own keys always win; fields never replace anything. */
void shape_body(struct buf *out, enum shape kind, const char *payload, size_t plen,
                const char *fields, size_t flen, const char *event_id, const char *event_name);

#endif
