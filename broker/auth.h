/* API keys of the management and trigger API: loading WEBHOOK_API_KEYS and checking the value
 * of a presented Authorization header in constant time. */
#ifndef WH_AUTH_H
#define WH_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Roles of an API key (issue 13, decision 44): a key has one or more. */
#define ROLE_ADMIN 1u    /* everything */
#define ROLE_PRODUCER 2u /* triggers events (of its tenant only, when the key has one) */
#define ROLE_TENANT 4u   /* manages its tenant's subscriptions and sees their deliveries */
#define TENANT_MAX 64    /* a tenant id: 1..64 of A-Z a-z 0-9 _ - */

/* Who sent a request: the roles and tenant of the key it presented. */
struct principal {
    unsigned roles;              /* ROLE_* bits; 0: no valid key */
    char tenant[TENANT_MAX + 1]; /* "": not limited to a tenant (admin keys, global producers) */
    char key_id[37];             /* the api_keys id; "" for a WEBHOOK_API_KEYS key */
};

/* Parses WEBHOOK_API_KEYS ("k1,k2"): 0, or -1 with a reason in err (never quoting a key). */
int auth_load(const char *list, char *err, size_t errlen) __attribute__((warn_unused_result));

/* True when value[0..n) (an Authorization header's value, surrounding white space and a
 * trailing CR allowed) is "Bearer <key>" with a configured key, the scheme in any case; then
 * *who (when not NULL) is that key's principal. */
bool auth_check(const char *value, size_t n, struct principal *who);

#endif
