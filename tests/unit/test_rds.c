/* Unit tests for the pure parts of common/rds.c: REDIS_URL parsing, its error messages, and
 * password masking (a password never appears in a message). */
#include <stdlib.h>

#include "rds.h"
#include "unit.h"

static void check_mask(const char *url, const char *want)
{
    char out[256];
    rds_mask_url(url, out, sizeof out);
    CHECK_STR(out, want);
}

static void test_mask(void)
{
    check_mask("redis://user:s3cret@host:6380/2", "redis://user:****@host:6380/2");
    check_mask("redis://:s3cret@127.0.0.1:6379", "redis://:****@127.0.0.1:6379");
    check_mask("redis://s3cret@host", "redis://****@host");
    check_mask("redis://host:6379/1", "redis://host:6379/1");
    check_mask("redis://u:p@ss@w@rd@host", "redis://u:****@host");
    check_mask("http://u:s3cret@host", "http://u:****@host");
    check_mask("u:s3cret@host", "u:****@host");
    check_mask("", "");
    char small[12];
    rds_mask_url("redis://u:s3cret@host", small, sizeof small);
    CHECK_STR(small, "redis://u:*");
}

static void check_error(const char *url, const char *want_part)
{
    struct rds_addr a;
    char err[512] = "";
    CHECK_EQ_INT(rds_parse_url(url, &a, err, sizeof err), -1);
    CHECK(strstr(err, want_part) != NULL);
    CHECK(strstr(err, "s3cret") == NULL);
    CHECK(a.password == NULL);
}

static void test_parse(void)
{
    struct rds_addr a;
    char err[512];
    CHECK_EQ_INT(rds_parse_url("redis://user:s3cret@example.org:6380/3", &a, err, sizeof err), 0);
    CHECK_STR(a.host, "example.org");
    CHECK_EQ_INT(a.port, 6380);
    CHECK_EQ_INT(a.db, 3);
    CHECK_STR(a.password, "s3cret");
    free(a.password);

    CHECK_EQ_INT(rds_parse_url("redis://127.0.0.1", &a, err, sizeof err), 0);
    CHECK_STR(a.host, "127.0.0.1");
    CHECK_EQ_INT(a.port, 6379);
    CHECK_EQ_INT(a.db, 0);
    CHECK(a.password == NULL);

    check_error("rediss://:s3cret@host", "must start with redis:// (got \"rediss://:****@host\")");
    check_error("redis://:s3cret@:6379", "has no host (got \"redis://:****@:6379\")");
    check_error("redis://:s3cret@host:99999", "invalid port (got \"redis://:****@host:99999\")");
    check_error("redis://:s3cret@host:12x", "invalid port");
    check_error("redis://:s3cret@host/x", "invalid database number (got \"redis://:****@host/x\")");
    check_error("redis://:s3cret@host/1001", "invalid database number");
}

int main(int argc, char **argv)
{
    (void)argc;
    test_mask();
    test_parse();
    return unit_done(argv[0]);
}
