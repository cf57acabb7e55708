/* Unit tests for the pure parts of common/rcluster.c: the redis-cluster:// URL, the routing
 * of each command our binaries send (its key's position, MULTI/EXEC), and what a reply asks of
 * the router (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a lost connection). */
#include <stdlib.h>

#include "rcluster.h"
#include "unit.h"

static void test_url(void)
{
    struct rcluster_url u;
    char err[512];
    CHECK_EQ_INT(
        rcluster_parse_url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001,h", &u, err, sizeof err),
        0);
    CHECK_EQ_INT(u.nseeds, 3);
    CHECK_STR(u.seeds[0].host, "127.0.0.1");
    CHECK_EQ_INT(u.seeds[0].port, 7000);
    CHECK_EQ_INT(u.seeds[1].port, 7001);
    CHECK_STR(u.seeds[2].host, "h");
    CHECK_EQ_INT(u.seeds[2].port, 6379);
    CHECK(u.password == NULL);
    rcluster_url_free(&u);

    CHECK_EQ_INT(rcluster_parse_url("redis-cluster://:s3cret@a:1,b:2", &u, err, sizeof err), 0);
    CHECK_STR(u.password, "s3cret");
    CHECK_EQ_INT(u.nseeds, 2);
    CHECK_STR(u.seeds[1].host, "b");
    rcluster_url_free(&u);
    CHECK(u.password == NULL);

    CHECK(rcluster_is_url("redis-cluster://a:1"));
    CHECK(!rcluster_is_url("redis://a:1"));

    static const struct {
        const char *url, *want;
    } bad[] = {
        {"redis://:s3cret@a:1", "must start with redis-cluster://"},
        {"redis-cluster://:s3cret@a:1/0", "only database 0"},
        {"redis-cluster://:s3cret@a:1,", "without a host"},
        {"redis-cluster://:s3cret@a:1,,b:2", "without a host"},
        {"redis-cluster://:s3cret@:1", "without a host"},
        {"redis-cluster://:s3cret@a:0", "invalid port"},
        {"redis-cluster://:s3cret@a:65536", "invalid port"},
        {"redis-cluster://:s3cret@a:", "invalid port"},
        {"redis-cluster://:s3cret@a:1x", "invalid port"},
        {"redis-cluster://:s3cret@a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9,a:10,a:11,a:12,a:13,a:14,"
         "a:15,a:16,a:17",
         "more than 16"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        CHECK_EQ_INT(rcluster_parse_url(bad[i].url, &u, err, sizeof err), -1);
        if (!CHECK(strstr(err, bad[i].want) != NULL))
            fprintf(stderr, "    %s: %s\n", bad[i].url, err);
        CHECK(strstr(err, "s3cret") == NULL);
        CHECK(u.password == NULL);
    }
}

/* The route of a command given as a space-separated string (no argument has a space). */
static enum rcluster_route route_of(const char *cmd, int *key)
{
    static char buf[512];
    const char *argv[32];
    size_t lens[32];
    int argc = 0;
    snprintf(buf, sizeof buf, "%s", cmd);
    for (char *p = buf; *p && argc < 32;) {
        char *sp = strchr(p, ' ');
        argv[argc] = p;
        lens[argc++] = sp ? (size_t)(sp - p) : strlen(p);
        if (!sp)
            break;
        p = sp + 1;
    }
    return rcluster_route(argc, argv, lens, key);
}

static void check_route(const char *cmd, enum rcluster_route want, int want_key)
{
    int key;
    enum rcluster_route got = route_of(cmd, &key);
    CHECK_EQ_INT(got, want);
    if (!CHECK(key == want_key))
        fprintf(stderr, "    %s: key %d, want %d\n", cmd, key, want_key);
}

static void test_route(void)
{
    /* Every command shape our binaries send (decision 43's audit). */
    check_route("XADD wh:{3}:jobs * d m", RCL_KEYED, 1);
    check_route("SET wh:{3}:payload:e v EX 60", RCL_KEYED, 1);
    check_route("SADD wh:{3}:live a b", RCL_KEYED, 1);
    check_route("MGET wh:index-ready {wh:index-ready}:patterns", RCL_KEYED, 1);
    check_route("HGETALL wh:event:order.created", RCL_KEYED, 1);
    check_route("XACK wh:{0}:jobs workers 1-1", RCL_KEYED, 1);
    check_route("XAUTOCLAIM wh:{0}:jobs workers c 6000 0-0 COUNT 32", RCL_KEYED, 1);
    check_route("XPENDING wh:{0}:jobs workers", RCL_KEYED, 1);
    check_route("XRANGE wh:{0}:jobs - + COUNT 1", RCL_KEYED, 1);
    check_route("XGROUP CREATE wh:{2}:jobs workers 0 MKSTREAM", RCL_KEYED, 2);
    check_route("XINFO GROUPS wh:{2}:jobs", RCL_KEYED, 2);
    check_route("XREADGROUP GROUP workers c COUNT 10 BLOCK 1000 STREAMS wh:{1}:jobs >", RCL_KEYED,
                9);
    check_route("xreadgroup group workers c streams wh:{1}:jobs >", RCL_KEYED, 5);
    check_route("XREAD COUNT 1 STREAMS k 0", RCL_KEYED, 4);
    check_route("XREAD COUNT 1", RCL_KEYLESS, -1);
    check_route("EVAL return 2 wh:{1}:retry wh:{1}:jobs 5", RCL_KEYED, 3);
    check_route("EVALSHA abc 1 k", RCL_KEYED, 3);
    check_route("EVAL return 0", RCL_KEYLESS, -1);
    check_route("EVAL return 0 x", RCL_KEYLESS, -1);
    check_route("EVAL return x1 k", RCL_KEYLESS, -1);
    check_route("EVAL return 1", RCL_KEYLESS, -1);
    check_route("MULTI", RCL_MULTI, -1);
    check_route("exec", RCL_EXEC, -1);
    check_route("DISCARD", RCL_DISCARD, -1);
    check_route("PING", RCL_KEYLESS, -1);
    check_route("CLUSTER SLOTS", RCL_KEYLESS, -1);
    check_route("SCAN 0 MATCH wh:event:* COUNT 500", RCL_KEYLESS, -1);
    check_route("INFO", RCL_KEYLESS, -1);
    check_route("GET", RCL_KEYLESS, -1);
    int key;
    CHECK_EQ_INT(rcluster_route(0, NULL, NULL, &key), RCL_KEYLESS);
    /* lens NULL: strlen of each argument, as redisCommandArgv takes it (the reconciler). */
    const char *eval[] = {"EVAL", "return 1", "1", "wh:{2}:ctl:x"};
    CHECK_EQ_INT(rcluster_route(4, eval, NULL, &key), RCL_KEYED);
    CHECK_EQ_INT(key, 3);
    const char *multi[] = {"MULTI"};
    CHECK_EQ_INT(rcluster_route(1, multi, NULL, &key), RCL_MULTI);
    const char *xr[] = {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "k", ">"};
    CHECK_EQ_INT(rcluster_route(7, xr, NULL, &key), RCL_KEYED);
    CHECK_EQ_INT(key, 5);
    CHECK_EQ_INT(rcluster_arglen(xr, NULL, 0), 10);
}

static void check_action(const char *err, enum rcluster_action want,
                         enum cluster_redirect_kind kind, unsigned slot, const char *host, int port)
{
    redisReply r = {.type = REDIS_REPLY_ERROR, .str = (char *)err, .len = strlen(err)};
    struct cluster_redirect rd;
    CHECK_EQ_INT(rcluster_reply_action(&r, &rd), want);
    CHECK_EQ_INT(rd.kind, kind);
    if (kind != CLUSTER_REDIRECT_NONE) {
        CHECK_EQ_INT(rd.slot, slot);
        CHECK_STR(rd.node.host, host);
        CHECK_EQ_INT(rd.node.port, port);
    }
}

static void test_action(void)
{
    struct cluster_redirect rd;
    CHECK_EQ_INT(rcluster_reply_action(NULL, &rd), RCL_PASS_REFRESH);
    redisReply ok = {.type = REDIS_REPLY_STATUS, .str = (char *)"OK", .len = 2};
    CHECK_EQ_INT(rcluster_reply_action(&ok, &rd), RCL_PASS);
    redisReply n = {.type = REDIS_REPLY_INTEGER, .integer = 3};
    CHECK_EQ_INT(rcluster_reply_action(&n, &rd), RCL_PASS);
    /* "MOVED" as a string value is data, not a redirection */
    redisReply s = {.type = REDIS_REPLY_STRING, .str = (char *)"MOVED 1 h:1", .len = 11};
    CHECK_EQ_INT(rcluster_reply_action(&s, &rd), RCL_PASS);
    check_action("MOVED 3999 127.0.0.1:6381", RCL_FOLLOW, CLUSTER_MOVED, 3999, "127.0.0.1", 6381);
    check_action("ASK 12182 10.0.0.2:7002", RCL_FOLLOW, CLUSTER_ASK, 12182, "10.0.0.2", 7002);
    check_action("MOVED 1 :7000", RCL_FOLLOW, CLUSTER_MOVED, 1, "", 7000);
    check_action("TRYAGAIN Multiple keys request during rehashing of slot", RCL_TRYAGAIN,
                 CLUSTER_REDIRECT_NONE, 0, NULL, 0);
    check_action("CLUSTERDOWN The cluster is down", RCL_PASS_REFRESH, CLUSTER_REDIRECT_NONE, 0,
                 NULL, 0);
    check_action("CROSSSLOT Keys in request don't hash to the same slot", RCL_PASS,
                 CLUSTER_REDIRECT_NONE, 0, NULL, 0);
    check_action("EXECABORT Transaction discarded because of previous errors.", RCL_PASS,
                 CLUSTER_REDIRECT_NONE, 0, NULL, 0);
    check_action("MOVED 16384 h:1", RCL_PASS, CLUSTER_REDIRECT_NONE, 0, NULL, 0);
    check_action("NOGROUP No such key", RCL_PASS, CLUSTER_REDIRECT_NONE, 0, NULL, 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_url();
    test_route();
    test_action();
    return unit_done(argv[0]);
}
