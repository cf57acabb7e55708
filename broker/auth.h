/* API keys of the management and trigger API: WEBHOOK_API_KEYS (admin keys, compared in
 * constant time) and the api_keys table's keys (a copy in memory, reloaded when the table
 * changes), and the principal (roles, tenant) of a presented Authorization header. */
#ifndef WH_AUTH_H
#define WH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem.h"
#include "pg.h"

/* Roles of an API key (issue 13, decision 45): a key has one or more. */
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

/* The api_keys table's keys in memory. auth_start opens the reload's own PostgreSQL
 * connection ("pg-auth"; setup_sql as for the others: it counts as up once migrated; both
 * strings copied) and loads the keys once it is up; the broker's periodic tick calls
 * auth_tick, which reloads them when the table changed (so a key made or revoked on another
 * broker takes effect here within a fraction of a second). keys.c applies its own changes at
 * once with auth_key_put (sha: the SHA-256 of the whole key; *who copied) and auth_key_drop;
 * a reload under way meanwhile cannot undo them. auth_ready: the table's keys were loaded at
 * least once (GET /readyz waits for it). auth_free closes the connection and frees the copy. */
void auth_start(struct event_base *base, const char *conninfo, const char *setup_sql);
void auth_tick(int64_t now_mono_ms);
bool auth_ready(void);
void auth_key_put(const unsigned char sha[32], const struct principal *who);
void auth_key_drop(const char *key_id);
void auth_free(void);

/* One role's name ("admin", "producer", "tenant"; n bytes): its ROLE_ bit, or 0. */
unsigned auth_roles_parse(const char *s, size_t n);
/* The ROLE_ bits of a comma-separated list of role names (as array_to_string(roles, ',')
 * gives them); unknown names add nothing. */
unsigned auth_roles_list(const char *csv);
/* The name of one ROLE_ bit. */
const char *auth_role_name(unsigned bit);
/* Appends the roles as a JSON array of names, in the order admin, producer, tenant. */
void auth_roles_json(struct buf *b, unsigned roles);

#endif
