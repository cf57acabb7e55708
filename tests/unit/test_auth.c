/* Unit tests for broker/auth.c: loading WEBHOOK_API_KEYS and checking Authorization values. */
#include <string.h>

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

int main(int argc, char **argv)
{
    (void)argc;
    test_load();
    test_check();
    return unit_done(argv[0]);
}
