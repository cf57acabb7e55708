/* Aligned text output of API answers: tables of lists (one column per chosen field) and
 * "key: value" blocks of single objects. */
#ifndef WH_CLI_TABLE_H
#define WH_CLI_TABLE_H

#include <cJSON.h>
#include <stdio.h>

/* A column: its header and the member it shows ("lastHour.delivered": a dotted path). */
struct col {
    const char *header;
    const char *field;
};

/* The text of a value in a cell: a string on one line (trailing blanks dropped, \n \r \t
 * escaped, other control characters shown as '?'), a number
 * (integers without a fraction), true/false, "-" for null or a missing member, compact JSON
 * for an object or array. Caller frees. */
char *table_cell(const cJSON *v);

/* The member at a dotted path of an object, or NULL. */
const cJSON *table_get(const cJSON *obj, const char *path);

/* Prints a table of the objects of arr, one column per entry of cols (ended by {NULL}),
 * columns padded to their widest cell and separated by two spaces. */
void table_print(FILE *f, const cJSON *arr, const struct col *cols);

/* Prints the members of obj as aligned "key: value" lines, leaving out the keys in skip
 * (NULL-terminated, may be NULL). Nested objects and arrays are compact JSON. */
void table_kv(FILE *f, const cJSON *obj, const char *const *skip);

#endif
