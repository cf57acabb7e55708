/* A subscription's event names (decision 39): each an exact event name, a prefix pattern
 * "<prefix>.*" (every name starting with "<prefix>.") or "*" (every triggered event); the
 * validation of a list, the matching rule, and the patterns that match a given name (what a
 * trigger reads from the event index). Pure functions. */
#ifndef WH_EVNAMES_H
#define WH_EVNAMES_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "mem.h"
#include "valid.h"

#define EVNAMES_MAX 100 /* names in one subscription */
/* A prefix pattern's prefix has at most EVNAMES_DEPTH - 1 dots, so a trigger of any name reads
 * at most EVNAMES_DEPTH prefix keys (one per dot among the name's first EVNAMES_DEPTH dots). */
#define EVNAMES_DEPTH 8
/* The patterns that can match one name: itself, a prefix pattern per dot, "*". */
#define EVNAMES_KEYS_MAX (EVNAMES_DEPTH + 2)
#define EVNAME_SIZE (EVENT_NAME_MAX + 1) /* an entry with its NUL */

enum evname_kind { EVNAME_INVALID = -1, EVNAME_EXACT, EVNAME_PREFIX, EVNAME_ALL };

/* What s[0..n) is: an exact name (valid_event_name), a prefix pattern (a valid name of at most
 * EVENT_NAME_MAX - 2 bytes with at most EVNAMES_DEPTH - 1 dots, then ".*"), "*", or invalid. */
enum evname_kind evname_kind(const char *s, size_t n);

/* Whether an event named name (NUL-terminated) is delivered to a subscription listing pat
 * (NUL-terminated, a valid entry). "*" matches every name except the broker's operational
 * events (EVENT_NAME_RESERVED), which are matched only by names and patterns of their own. */
bool evname_matches(const char *pat, const char *name);

/* The entries that match the event name name[0..n) (a valid name), most specific first: the
 * name, then "<prefix>.*" for each dot among its first EVNAMES_DEPTH dots (shortest prefix
 * first, none for a dot at position 0), then "*" (not for a reserved name). Each is written
 * NUL-terminated into out[i] (EVNAME_SIZE bytes each); returns how many (1 to
 * EVNAMES_KEYS_MAX). */
int evname_keys(const char *name, size_t n, char out[][EVNAME_SIZE]);

/* The canonical list: entries sorted (byte order) without duplicates. */
struct evnames {
    int n;
    char **v; /* owned */
};

void evnames_free(struct evnames *e);

/* Parses a subscription's "eventNames" (an array, arr) and/or "eventName" (a string, one), at
 * least one of them given: 1 to EVNAMES_MAX valid entries, no duplicate, "*" only alone, both
 * fields only when they say the same (eventName equal to the list's only entry). 0 with out
 * filled (sorted), or -1 with a message naming the field in err. */
int evnames_parse(const cJSON *arr, const cJSON *one, struct evnames *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Appends the PostgreSQL array literal of names[0..n) ({a,b.*,*}: no quoting is needed, entries
 * never hold a comma, brace, quote, backslash or space) to b. */
void evnames_pg_array(struct buf *b, char *const *names, int n);

/* Whether any entry starts with EVENT_NAME_RESERVED / all do. */
bool evnames_any_reserved(const struct evnames *e);
bool evnames_all_reserved(const struct evnames *e);

#endif
