/* API keys of the management and trigger API: loading WEBHOOK_API_KEYS and checking the value
 * of a presented Authorization header in constant time. */
#ifndef WH_AUTH_H
#define WH_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Parses WEBHOOK_API_KEYS ("k1,k2"): 0, or -1 with a reason in err (never quoting a key). */
int auth_load(const char *list, char *err, size_t errlen) __attribute__((warn_unused_result));

/* True when value[0..n) (an Authorization header's value, surrounding white space and a
 * trailing CR allowed) is "Bearer <key>" with a configured key, the scheme in any case. */
bool auth_check(const char *value, size_t n);

#endif
