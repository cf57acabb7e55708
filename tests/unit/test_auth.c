/* Unit tests for broker/auth.c: loading WEBHOOK_API_KEYS, checking Authorization values, and
 * the api_keys table's copy (auth_key_put, auth_key_drop) giving each key its principal. */
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "../../broker/auth.h"
#include "unit.h"

#define K1 "test-key-0123456789abcdef"
#define K2 "second-test-key-fedcba9876543210"

static bool check(const char *v)
{
    return auth_check(v, strlen(v), NULL);
}

static void test_load(void)
{
    char err[256];
    CHECK_EQ_INT(auth_load("", err, sizeof err), -1);
    CHECK_EQ_INT(auth_load(" , ", err, sizeof err), -1);
    CHECK_EQ_INT(auth_load("short", err, sizeof err), -1);
    CHECK_EQ_INT(auth_load("has space-in-the-middle-0123", err, sizeof err), -1);
    char longkey[300];
    memset(longkey, 'k', 257);
    longkey[257] = '\0';
    CHECK_EQ_INT(auth_load(longkey, err, sizeof err), -1);
    longkey[256] = '\0';
    CHECK_EQ_INT(auth_load(longkey, err, sizeof err), 0);
    char value[300] = "Bearer ";
    memcpy(value + 7, longkey, 257); /* the 256-byte key and its NUL */
    CHECK(check(value));
    CHECK_EQ_INT(auth_load(K1 ", " K2, err, sizeof err), 0);
}

static void test_check(void)
{
    CHECK(check("Bearer " K1));
    CHECK(check("Bearer " K2));
    CHECK(check("bearer " K1));
    CHECK(check("BEARER   " K2));
    CHECK(check("  Bearer " K1 " \r"));
    CHECK(!check(""));
    CHECK(!check("Bearer"));
    CHECK(!check("Bearer "));
    CHECK(!check("Basic " K1));
    CHECK(!check(K1));
    CHECK(!check("Bearer " K1 "x"));
    CHECK(!check("Bearer x" K1));
    CHECK(!check("Bearer test-key-0123456789abcde")); /* a prefix */
    CHECK(!check("Bearer " K1 K2));
    /* a NUL after a valid key is not the key (the padding is zeros too) */
    const char nul[] = "Bearer " K1 "\0";
    CHECK(!auth_check(nul, sizeof nul - 1 + 1, NULL));
    char huge[6000];
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'x', sizeof huge - 8);
    huge[sizeof huge - 1] = '\0';
    CHECK(!check(huge));
}

/* A table key as keys.c makes one: "whk_" and 64 hex digits (n: a distinct filler). */
static void table_key(char out[69], char n)
{
    memcpy(out, "whk_", 4);
    for (int i = 0; i < 64; i++)
        out[4 + i] = "0123456789abcdef"[(n + i) & 15];
    out[68] = '\0';
}

static void put(const char *key, unsigned roles, const char *tenant, const char *id)
{
    unsigned char sha[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), sha);
    struct principal who = {.roles = roles};
    snprintf(who.tenant, sizeof who.tenant, "%s", tenant);
    snprintf(who.key_id, sizeof who.key_id, "%s", id);
    auth_key_put(sha, &who);
}

/* The principal of "Bearer <key>", or roles 0 when refused (then who must be all zero). */
static struct principal who_of(const char *key)
{
    char v[400];
    snprintf(v, sizeof v, "Bearer %s", key);
    struct principal who;
    memset(&who, 0x5a, sizeof who);
    bool ok = auth_check(v, strlen(v), &who);
    CHECK(ok == (who.roles != 0));
    if (!ok)
        CHECK(who.roles == 0 && who.tenant[0] == '\0' && who.key_id[0] == '\0');
    return who;
}

#define ID_A "01a237d7-0000-7000-8000-00000000000a"
#define ID_B "01a237d7-0000-7000-8000-00000000000b"
#define ID_C "01a237d7-0000-7000-8000-00000000000c"

static void test_table_keys(void)
{
    char err[256];
    CHECK_EQ_INT(auth_load(K1 ", " K2, err, sizeof err), 0);
    char a[69], b[69], c[69];
    table_key(a, 1);
    table_key(b, 2);
    table_key(c, 3);
    CHECK(!who_of(a).roles); /* nothing loaded yet */

    put(a, ROLE_PRODUCER, "", ID_A);
    put(b, ROLE_TENANT | ROLE_PRODUCER, "acme", ID_B);
    put(c, ROLE_ADMIN, "", ID_C);
    struct principal w = who_of(a);
    CHECK_EQ_INT(w.roles, ROLE_PRODUCER);
    CHECK_STR(w.tenant, "");
    CHECK_STR(w.key_id, ID_A);
    w = who_of(b);
    CHECK_EQ_INT(w.roles, ROLE_TENANT | ROLE_PRODUCER);
    CHECK_STR(w.tenant, "acme");
    CHECK_STR(w.key_id, ID_B);
    w = who_of(c);
    CHECK_EQ_INT(w.roles, ROLE_ADMIN);
    CHECK_STR(w.key_id, ID_C);
    /* The scheme in any case, blanks around, as for environment keys. */
    char v[100];
    snprintf(v, sizeof v, "  bEaReR   %s \r", b);
    CHECK(auth_check(v, strlen(v), NULL));

    /* An environment key is admin, without a tenant or a key id. */
    w = who_of(K1);
    CHECK_EQ_INT(w.roles, ROLE_ADMIN);
    CHECK_STR(w.tenant, "");
    CHECK_STR(w.key_id, "");
    CHECK_EQ_INT(who_of(K2).roles, ROLE_ADMIN);

    /* Near misses: one digit changed, one more or one fewer, another case, the hex part alone,
     * the key twice, a NUL after it. */
    char near[200];
    snprintf(near, sizeof near, "%s", a);
    near[67] = near[67] == '0' ? '1' : '0';
    CHECK(!who_of(near).roles);
    snprintf(near, sizeof near, "%s0", a);
    CHECK(!who_of(near).roles);
    snprintf(near, sizeof near, "%.67s", a);
    CHECK(!who_of(near).roles);
    snprintf(near, sizeof near, "WHK_%s", a + 4);
    CHECK(!who_of(near).roles);
    CHECK(!who_of(a + 4).roles);
    snprintf(near, sizeof near, "%s%s", a, a);
    CHECK(!who_of(near).roles);
    char nul[100];
    int n = snprintf(nul, sizeof nul, "Bearer %s", a);
    CHECK(!auth_check(nul, (size_t)n + 1, NULL));
    CHECK(!who_of("whk_").roles);
    /* Over-long values: refused whatever they start with, and a presented key longer than any
     * key (257 bytes and more) is not hashed into a match either. */
    char huge[8000];
    memset(huge, 'f', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    memcpy(huge, a, 68);
    CHECK(!who_of(huge).roles);
    char big[300];
    memset(big, 'a', 257);
    big[257] = '\0';
    put(big, ROLE_PRODUCER, "", "01a237d7-0000-7000-8000-0000000000ff");
    CHECK(!who_of(big).roles); /* longer than any key can be: never looked up */
    auth_key_drop("01a237d7-0000-7000-8000-0000000000ff");

    /* Re-putting an id replaces its entry (no duplicate left behind). */
    put(a, ROLE_PRODUCER, "globex", ID_A);
    CHECK_STR(who_of(a).tenant, "globex");
    auth_key_drop(ID_A);
    CHECK(!who_of(a).roles);

    /* Dropping: only that key; the others and the environment keys keep working; dropping an
     * unknown or already dropped id changes nothing. */
    auth_key_drop(ID_B);
    CHECK(!who_of(b).roles);
    CHECK_EQ_INT(who_of(c).roles, ROLE_ADMIN);
    auth_key_drop(ID_B);
    auth_key_drop("01a237d7-0000-7000-8000-000000000999");
    CHECK_EQ_INT(who_of(c).roles, ROLE_ADMIN);
    CHECK_EQ_INT(who_of(K2).roles, ROLE_ADMIN);
    auth_key_drop(ID_C);
    CHECK(!who_of(c).roles);
    CHECK_EQ_INT(who_of(K1).roles, ROLE_ADMIN);

    /* Many keys: each found (the copy is sorted by hash for bsearch), then all dropped. */
    char keys[200][69];
    char ids[200][37];
    for (int i = 0; i < 200; i++) {
        snprintf(keys[i], sizeof keys[i], "whk_%064d", i);
        snprintf(ids[i], sizeof ids[i], "01a237d7-0000-7000-8000-%012d", i);
        put(keys[i], ROLE_TENANT, "t", ids[i]);
    }
    int found = 0;
    for (int i = 0; i < 200; i++)
        found += strcmp(who_of(keys[i]).key_id, ids[i]) == 0;
    CHECK_EQ_INT(found, 200);
    for (int i = 0; i < 200; i += 2)
        auth_key_drop(ids[i]);
    found = 0;
    for (int i = 0; i < 200; i++)
        found += who_of(keys[i]).roles != 0;
    CHECK_EQ_INT(found, 100);
    CHECK(!who_of(keys[0]).roles && who_of(keys[1]).roles == ROLE_TENANT);
    auth_free();
    CHECK(!who_of(keys[1]).roles);
    CHECK_EQ_INT(who_of(K1).roles, ROLE_ADMIN);
}

static void test_roles(void)
{
    CHECK_EQ_INT(auth_roles_parse("admin", 5), ROLE_ADMIN);
    CHECK_EQ_INT(auth_roles_parse("producer", 8), ROLE_PRODUCER);
    CHECK_EQ_INT(auth_roles_parse("tenant", 6), ROLE_TENANT);
    CHECK_EQ_INT(auth_roles_parse("Admin", 5), 0);
    CHECK_EQ_INT(auth_roles_parse("admin", 4), 0);
    CHECK_EQ_INT(auth_roles_list("producer,tenant"), ROLE_PRODUCER | ROLE_TENANT);
    CHECK_EQ_INT(auth_roles_list("admin"), ROLE_ADMIN);
    CHECK_EQ_INT(auth_roles_list(""), 0);
    CHECK_EQ_INT(auth_roles_parse("tenants", 7), 0);
    CHECK_EQ_INT(auth_roles_parse("", 0), 0);
    struct buf b = {0};
    auth_roles_json(&b, ROLE_TENANT | ROLE_ADMIN | ROLE_PRODUCER);
    buf_addc(&b, '\0');
    CHECK_STR(b.data, "[\"admin\",\"producer\",\"tenant\"]");
    buf_free(&b);
    auth_roles_json(&b, ROLE_TENANT | ROLE_PRODUCER);
    buf_addc(&b, '\0');
    CHECK_STR(b.data, "[\"producer\",\"tenant\"]");
    buf_free(&b);
    auth_roles_json(&b, 0);
    buf_addc(&b, '\0');
    CHECK_STR(b.data, "[]");
    buf_free(&b);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_load();
    test_check();
    test_table_keys();
    test_roles();
    return unit_done(argv[0]);
}
