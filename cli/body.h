/* Request bodies from the command line: --data as JSON text, @file or - (stdin), and JSON
 * objects built from flags (merged over --data). */
#ifndef WH_CLI_BODY_H
#define WH_CLI_BODY_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "mem.h"

/* The bytes of spec: "@path" reads the file, "-" reads stdin, anything else is the text
 * itself. 0, or -1 with the reason in err. out is caller-owned (buf_free). */
int body_read(const char *spec, struct buf *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* spec (as body_read) parsed as a JSON object; NULL with the reason in err. Caller frees. */
cJSON *body_object(const char *spec, char *err, size_t errlen);

/* text parsed as one JSON value (for flags that take JSON: --filter); NULL with err. */
cJSON *body_json_value(const char *flag, const char *text, char *err, size_t errlen);

/* A number from a flag's text: NULL with err unless all of it is a finite number. */
cJSON *body_number(const char *flag, const char *text, char *err, size_t errlen);

/* Sets obj[key] = item, replacing a member of that name. Takes item. */
void body_set(cJSON *obj, const char *key, cJSON *item);

/* The compact JSON of obj, into out. */
void body_print(const cJSON *obj, struct buf *out);

#endif
