/* Unit tests for common/keys.c: the index rebuild token shares the ready mark's Redis Cluster
 * hash slot (one script touches both), whatever the prefix; the event index keys of global and
 * tenant subscriptions (decision 44) and their parsing back; in cluster mode (decision 48) the
 * event index keys share the ready mark's slot, and redis:// keys stay byte-identical. */
#include <string.h>

#include "cluster.h"
#include "keys.h"
#include "unit.h"
#include "valid.h"

/* The part of a key Redis Cluster hashes: the first {...} with something inside, else all. */
static void hashed_part(const char *key, char *out, size_t outlen)
{
    const char *open = strchr(key, '{');
    const char *close = open ? strchr(open + 1, '}') : NULL;
    if (open && close && close > open + 1)
        snprintf(out, outlen, "%.*s", (int)(close - open - 1), open + 1);
    else
        snprintf(out, outlen, "%s", key);
}

static void check_prefix(const char *prefix)
{
    char ready[KEY_MAX], token[KEY_MAX], a[KEY_MAX], b[KEY_MAX];
    CHECK(keys_set_prefix(prefix) == 0);
    CHECK_EQ_INT(key_index_ready(ready), strlen(ready));
    CHECK_EQ_INT(key_index_rebuild(token), strlen(token));
    CHECK(strcmp(ready, token) != 0);
    hashed_part(ready, a, sizeof a);
    hashed_part(token, b, sizeof b);
    CHECK_STR(a, b);
}

static void check_event_keys(void)
{
    char k[KEY_MAX], tenant[TENANT_ID_MAX + 1];
    const char *name;
    size_t nlen;
    CHECK(keys_set_prefix("wh:") == 0);
    CHECK_EQ_INT(key_event(k, NULL, "order.paid", 10), strlen("wh:event:order.paid"));
    CHECK_STR(k, "wh:event:order.paid"); /* global: the bytes of before tenants */
    key_event(k, "", "order.paid", 10);
    CHECK_STR(k, "wh:event:order.paid");
    key_event(k, "acme", "order.*", 7);
    CHECK_STR(k, "wh:event:@acme:order.*");
    key_event(k, "a_b-9", "*", 1);
    CHECK_STR(k, "wh:event:@a_b-9:*");
    /* parsed back */
    CHECK(key_event_parse(k, strlen(k), tenant, &name, &nlen) == 0);
    CHECK_STR(tenant, "a_b-9");
    CHECK(nlen == 1 && name[0] == '*');
    key_event(k, NULL, "x:y.z", 5); /* ':' in a global name is not a tenant */
    CHECK(key_event_parse(k, strlen(k), tenant, &name, &nlen) == 0);
    CHECK_STR(tenant, "");
    CHECK(nlen == 5 && memcmp(name, "x:y.z", 5) == 0);
    key_event(k, "acme", "x:y", 3); /* the first ':' ends the tenant */
    CHECK(key_event_parse(k, strlen(k), tenant, &name, &nlen) == 0);
    CHECK_STR(tenant, "acme");
    CHECK(nlen == 3 && memcmp(name, "x:y", 3) == 0);
    static const char *const bad[] = {"wh:event:@acme", "wh:event:@:x", "wh:event:@a.b:x",
                                      "wh:index-ready", "wx:event:a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(key_event_parse(bad[i], strlen(bad[i]), tenant, &name, &nlen) < 0);
    CHECK(keys_set_prefix("app:") == 0);
    key_event(k, "acme", "a", 1);
    CHECK_STR(k, "app:event:@acme:a");
    CHECK(key_event_parse(k, strlen(k), tenant, &name, &nlen) == 0);
    CHECK_STR(tenant, "acme");
    CHECK(keys_set_prefix("wh:") == 0);
}

static unsigned slot_of(const char *key)
{
    return cluster_slot(key, strlen(key));
}

/* Cluster mode: every event index key (global, tenant, pattern, any prefix) is in the slot of
 * the ready mark, the rebuild token and the patterns mark; parsing follows the mode; the other
 * families do not change. */
static void check_cluster_keys(const char *prefix)
{
    char ready[KEY_MAX], token[KEY_MAX], pats[KEY_MAX], k[KEY_MAX], want[KEY_MAX], jobs[KEY_MAX];
    char tenant[TENANT_ID_MAX + 1];
    const char *name;
    size_t nlen;
    CHECK(keys_set_prefix(prefix) == 0);
    key_jobs(jobs, 3);
    keys_set_cluster(true);
    key_index_ready(ready);
    key_index_rebuild(token);
    key_index_patterns(pats);
    snprintf(want, sizeof want, "{%sindex-ready}:ready", prefix);
    CHECK_STR(ready, want);
    unsigned s = slot_of(ready);
    CHECK_EQ_INT(slot_of(token), s);
    CHECK_EQ_INT(slot_of(pats), s);
    static const char *const names[] = {"order.paid", "order.*", "*", "a", "x:y.z", "zz9"};
    static const char *const tenants[] = {NULL, "", "acme", "a_b-9"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        for (size_t t = 0; t < sizeof tenants / sizeof tenants[0]; t++) {
            size_t len = key_event(k, tenants[t], names[i], strlen(names[i]));
            CHECK_EQ_INT(len, strlen(k));
            CHECK_EQ_INT(slot_of(k), s);
            if (tenants[t] && *tenants[t])
                snprintf(want, sizeof want, "{%sindex-ready}:event:@%s:%s", prefix, tenants[t],
                         names[i]);
            else
                snprintf(want, sizeof want, "{%sindex-ready}:event:%s", prefix, names[i]);
            CHECK_STR(k, want);
            CHECK(key_event_parse(k, len, tenant, &name, &nlen) == 0);
            CHECK_STR(tenant, tenants[t] ? tenants[t] : "");
            CHECK(nlen == strlen(names[i]) && memcmp(name, names[i], nlen) == 0);
        }
    }
    /* a single-server key is not an index key of a cluster, nor the marks */
    snprintf(k, sizeof k, "%sevent:a", prefix);
    CHECK(key_event_parse(k, strlen(k), tenant, &name, &nlen) < 0);
    CHECK(key_event_parse(token, strlen(token), tenant, &name, &nlen) < 0);
    CHECK(key_event_parse(pats, strlen(pats), tenant, &name, &nlen) < 0);
    key_jobs(k, 3); /* the partitions keep their own tags */
    CHECK_STR(k, jobs);
    keys_set_cluster(false);
    key_index_ready(k);
    CHECK_EQ_INT(slot_of(k), s); /* the untagged mark of before: same slot, another key */
    snprintf(want, sizeof want, "%sindex-ready", prefix);
    CHECK_STR(k, want);
    key_event(k, "acme", "a", 1);
    snprintf(want, sizeof want, "%sevent:@acme:a", prefix);
    CHECK_STR(k, want);
    CHECK(keys_set_prefix("wh:") == 0);
}

int main(int argc, char **argv)
{
    check_event_keys();
    check_cluster_keys("wh:");
    check_cluster_keys("app.webhooks:");
    check_cluster_keys("");
    check_event_keys(); /* back to single-server keys, byte for byte */
    (void)argc;
    check_prefix("wh:");
    check_prefix("app.webhooks:");
    check_prefix("");
    char token[KEY_MAX];
    CHECK(keys_set_prefix("wh:") == 0);
    key_index_rebuild(token);
    CHECK_STR(token, "{wh:index-ready}:rebuild");
    CHECK(keys_set_prefix("{x}:") < 0); /* why the token's tag can wrap the whole ready key */
    return unit_done(argv[0]);
}
