/* Unit tests for common/cfg.c: defaults, environment, flags, ranges, host:port parsing; the
 * start-up's QUEUE_PARTITIONS by REDIS_URL and the key names' cluster mode. */
#include "cfg.h"
#include "keys.h"
#include "unit.h"

#include <string.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static char *listen_addr;
static long workers;
static bool verbose;
static long timeout_ms;
static char *env_only;

static const struct cfg_opt opts[] = {
    {"WHTEST_LISTEN", "listen", CFG_STR, "127.0.0.1:8080", 0, 0, "address to bind", &listen_addr},
    {"WHTEST_WORKERS", "workers", CFG_INT, "4", 1, 64, "worker count", &workers},
    {"WHTEST_VERBOSE", "verbose", CFG_BOOL, "false", 0, 0, "log more", &verbose},
    {"WHTEST_TIMEOUT", "timeout", CFG_MS, "2.5", 1, 60000, "request timeout", &timeout_ms},
    {"WHTEST_ENV_ONLY", NULL, CFG_STR, "x", 0, 0, "no flag", &env_only},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static char err[256];

static void clear_env(void)
{
    for (size_t i = 0; i < NOPTS; i++)
        unsetenv(opts[i].env);
}

/* cfg_load takes argv as main() gets it; string literals are const, so copy the pointers. */
static int load(int argc, const char *const *args)
{
    char *argv[16];
    for (int i = 0; i < argc && i < 16; i++)
        argv[i] = (char *)args[i];
    err[0] = '\0';
    return cfg_load(opts, NOPTS, argc, argv, "usage: test", "test 0.0", err, sizeof err);
}

#define ARGS(...) ((const char *const[]){"prog", __VA_ARGS__})
#define LOAD(...) load((int)(sizeof ARGS(__VA_ARGS__) / sizeof(char *)), ARGS(__VA_ARGS__))
#define LOAD0() load(1, ARGS(NULL))

static void test_defaults(void)
{
    clear_env();
    CHECK_EQ_INT(LOAD0(), 0);
    CHECK_STR(listen_addr, "127.0.0.1:8080");
    CHECK_EQ_INT(workers, 4);
    CHECK(!verbose);
    CHECK_EQ_INT(timeout_ms, 2500);
    CHECK_STR(env_only, "x");
}

static void test_env(void)
{
    clear_env();
    setenv("WHTEST_LISTEN", "0.0.0.0:9000", 1);
    setenv("WHTEST_WORKERS", "8", 1);
    setenv("WHTEST_VERBOSE", "yes", 1);
    setenv("WHTEST_TIMEOUT", "0.25", 1);
    setenv("WHTEST_ENV_ONLY", "from env", 1);
    CHECK_EQ_INT(LOAD0(), 0);
    CHECK_STR(listen_addr, "0.0.0.0:9000");
    CHECK_EQ_INT(workers, 8);
    CHECK(verbose);
    CHECK_EQ_INT(timeout_ms, 250);
    CHECK_STR(env_only, "from env");

    /* Flags win over the environment. */
    CHECK_EQ_INT(LOAD("--workers", "16", "--listen=[::1]:7000"), 0);
    CHECK_EQ_INT(workers, 16);
    CHECK_STR(listen_addr, "[::1]:7000");
    CHECK_EQ_INT(timeout_ms, 250);

    setenv("WHTEST_WORKERS", "lots", 1);
    CHECK_EQ_INT(LOAD0(), -1);
    CHECK(strstr(err, "WHTEST_WORKERS") != NULL);
    setenv("WHTEST_WORKERS", "65", 1);
    CHECK_EQ_INT(LOAD0(), -1);
    CHECK(strstr(err, "between 1 and 64") != NULL);
    setenv("WHTEST_WORKERS", "", 1);
    CHECK_EQ_INT(LOAD0(), -1);
    clear_env();
    setenv("WHTEST_VERBOSE", "maybe", 1);
    CHECK_EQ_INT(LOAD0(), -1);
    CHECK(strstr(err, "boolean") != NULL);
    clear_env();
}

static void test_flags(void)
{
    clear_env();
    CHECK_EQ_INT(LOAD("--workers", "2", "--timeout", "1.5"), 0);
    CHECK_EQ_INT(workers, 2);
    CHECK_EQ_INT(timeout_ms, 1500);
    CHECK_EQ_INT(LOAD("--workers=3", "--timeout=0.001"), 0);
    CHECK_EQ_INT(workers, 3);
    CHECK_EQ_INT(timeout_ms, 1);
    CHECK_EQ_INT(LOAD("--timeout=60"), 0);
    CHECK_EQ_INT(timeout_ms, 60000);
    CHECK_EQ_INT(LOAD("--timeout", "0.0125"), 0);
    CHECK_EQ_INT(timeout_ms, 13); /* rounded to the nearest ms */

    /* Booleans: bare flag means true; =value parses. */
    CHECK_EQ_INT(LOAD("--verbose"), 0);
    CHECK(verbose);
    CHECK_EQ_INT(LOAD("--verbose=false"), 0);
    CHECK(!verbose);
    CHECK_EQ_INT(LOAD("--verbose=on", "--workers", "5"), 0);
    CHECK(verbose);
    CHECK_EQ_INT(workers, 5);
    CHECK_EQ_INT(LOAD("--verbose=2"), -1);

    /* Range errors. */
    CHECK_EQ_INT(LOAD("--workers", "0"), -1);
    CHECK(strstr(err, "--workers") != NULL);
    CHECK_EQ_INT(LOAD("--workers=65"), -1);
    CHECK_EQ_INT(LOAD("--workers=99999999999999999999999"), -1);
    CHECK_EQ_INT(LOAD("--workers=4x"), -1);
    CHECK_EQ_INT(LOAD("--timeout=60.001"), -1);
    CHECK(strstr(err, "seconds") != NULL);
    CHECK_EQ_INT(LOAD("--timeout=0"), -1);
    CHECK_EQ_INT(LOAD("--timeout=-1"), -1);
    CHECK_EQ_INT(LOAD("--timeout=abc"), -1);
    CHECK_EQ_INT(LOAD("--timeout=nan"), -1);

    /* Unknown, malformed and incomplete flags. */
    CHECK_EQ_INT(LOAD("--nope"), -1);
    CHECK(strstr(err, "unknown option") != NULL);
    CHECK_EQ_INT(LOAD("--nope=1"), -1);
    CHECK_EQ_INT(LOAD("--work", "1"), -1); /* no prefix matching */
    CHECK_EQ_INT(LOAD("--env-only", "1"), -1);
    CHECK_EQ_INT(LOAD("workers"), -1);
    CHECK(strstr(err, "unexpected argument") != NULL);
    CHECK_EQ_INT(LOAD("--workers"), -1);
    CHECK(strstr(err, "needs a value") != NULL);

    /* --version and --help print (to /dev/null here) and ask the caller to exit. */
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    CHECK(saved >= 0 && devnull >= 0 && dup2(devnull, STDOUT_FILENO) == STDOUT_FILENO);
    int version_rc = LOAD("--version");
    int help_rc = LOAD("--workers", "2", "--help");
    fflush(stdout);
    CHECK(dup2(saved, STDOUT_FILENO) == STDOUT_FILENO);
    close(devnull);
    close(saved);
    CHECK_EQ_INT(version_rc, 1);
    CHECK_EQ_INT(help_rc, 1);
}

static void test_hostport(void)
{
    char host[64];
    int port = -1;
    CHECK_EQ_INT(cfg_parse_hostport("127.0.0.1:8080", host, sizeof host, &port), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 8080);
    CHECK_EQ_INT(cfg_parse_hostport("[::1]:8080", host, sizeof host, &port), 0);
    CHECK_STR(host, "::1");
    CHECK_EQ_INT(port, 8080);
    CHECK_EQ_INT(cfg_parse_hostport("0.0.0.0:0", host, sizeof host, &port), 0);
    CHECK_STR(host, "0.0.0.0");
    CHECK_EQ_INT(port, 0);
    CHECK_EQ_INT(cfg_parse_hostport("localhost:65535", host, sizeof host, &port), 0);
    CHECK_STR(host, "localhost");
    CHECK_EQ_INT(port, 65535);

    static const char *const bad[] = {
        "localhost", ":8080", "host:",     "host:65536", "host:-1", "host:80x",
        "[::1]8080", "[::1]", "[::1:8080", "[]:80",      "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = cfg_parse_hostport(bad[i], host, sizeof host, &port);
        if (!unit_check(rc == -1, __FILE__, __LINE__, "bad host:port refused"))
            fprintf(stderr, "    \"%s\" was accepted\n", bad[i]);
    }
    /* The host must fit, NUL included. */
    char small[5];
    CHECK_EQ_INT(cfg_parse_hostport("abcd:1", small, sizeof small, &port), 0);
    CHECK_STR(small, "abcd");
    CHECK_EQ_INT(cfg_parse_hostport("abcde:1", small, sizeof small, &port), -1);
}

/* cfg_startup with the shared entries: QUEUE_PARTITIONS unset (or 0) is 1 on redis://, 16 on
 * redis-cluster://, an explicit value wins; a cluster URL switches the event index keys to the
 * ready mark's hash tag (decision 48), a redis:// URL switches them back. */
static void test_startup_partitions(void)
{
    static char *url, *prefix, *level, *format;
    static long parts;
    static const struct cfg_opt shared[] = {
        CFG_OPT_REDIS_URL(&url),   CFG_OPT_REDIS_PREFIX(&prefix), CFG_OPT_PARTITIONS(&parts),
        CFG_OPT_LOG_LEVEL(&level), CFG_OPT_LOG_FORMAT(&format),
    };
    size_t n = sizeof shared / sizeof shared[0];
    static const struct {
        const char *url, *parts;
        long want;
        bool cluster;
    } cases[] = {
        {NULL, NULL, CFG_PARTITIONS_SINGLE, false},
        {"redis://127.0.0.1:6379", NULL, 1, false},
        {"redis-cluster://127.0.0.1:7000,127.0.0.1:7001", NULL, CFG_PARTITIONS_CLUSTER, true},
        {"redis-cluster://127.0.0.1:7000", "0", 16, true},
        {"redis-cluster://127.0.0.1:7000", "4", 4, true},
        {"redis://127.0.0.1:6379", "8", 8, false},
    };
    char *argv[] = {(char *)"prog", NULL};
    char key[KEY_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t j = 0; j < n; j++)
            unsetenv(shared[j].env);
        if (cases[i].url)
            setenv("REDIS_URL", cases[i].url, 1);
        if (cases[i].parts)
            setenv("QUEUE_PARTITIONS", cases[i].parts, 1);
        CHECK_EQ_INT(
            cfg_startup("test", shared, n, 1, argv, "usage", "0", &level, &format, &prefix), -1);
        CHECK_EQ_INT(parts, cases[i].want);
        key_event(key, NULL, "a", 1);
        CHECK_STR(key, cases[i].cluster ? "{wh:index-ready}:event:a" : "wh:event:a");
        cfg_free(shared, n);
    }
    setenv("QUEUE_PARTITIONS", "-1", 1);
    CHECK_EQ_INT(cfg_startup("test", shared, n, 1, argv, "usage", "0", &level, &format, &prefix),
                 2);
    unsetenv("QUEUE_PARTITIONS");
    unsetenv("REDIS_URL");
    keys_set_cluster(false);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_defaults();
    test_env();
    test_flags();
    test_hostport();
    test_startup_partitions();
    cfg_free(opts, NOPTS);
    CHECK(listen_addr == NULL && env_only == NULL);
    return unit_done(argv[0]);
}
