/* One config table per binary: env variable, flag, type, default, bounds and help for each key.
 * The same table drives environment parsing, command-line flags, --help and range checks. */
#ifndef WH_CFG_H
#define WH_CFG_H

#include <stdbool.h>
#include <stddef.h>

enum cfg_type {
    CFG_STR,  /* char *, owned by the config (cfg_free) */
    CFG_INT,  /* long, bounded by min..max */
    CFG_BOOL, /* bool: 1/0, true/false, yes/no, on/off */
    CFG_MS,   /* long milliseconds; written as a number of seconds (may be fractional), min/max in ms */
};

struct cfg_opt {
    const char *env;   /* "BROKER_LISTEN" */
    const char *flag;  /* "listen" for --listen; NULL: env only */
    enum cfg_type type;
    const char *def;   /* default, as text in the same syntax the env uses */
    long min, max;     /* bounds for CFG_INT and CFG_MS */
    const char *help;
    void *ptr;         /* char ** / long * / bool * */
};

/* Applies defaults, then the environment, then argv flags (--flag value or --flag=value).
 * Returns 0 on success, 1 when --help or --version was printed (caller exits 0), -1 on error
 * with a message in err. Flags that take no value: CFG_BOOL (--flag means true). */
int cfg_load(const struct cfg_opt *opts, size_t n, int argc, char **argv, const char *usage,
             const char *version, char *err, size_t errlen) __attribute__((warn_unused_result));
void cfg_print_help(const struct cfg_opt *opts, size_t n, const char *usage);
void cfg_free(const struct cfg_opt *opts, size_t n);

/* Entries every binary shares, so their names, defaults and help are defined once. */
#define CFG_OPT_REDIS_URL(ptr)                                                                     \
    {"REDIS_URL", "redis-url", CFG_STR, "redis://127.0.0.1:6379", 0, 0,                          \
     "Redis server: redis://[:password@]host[:port][/db], or a Redis Cluster: "                    \
     "redis-cluster://[:password@]host:port[,host:port...]",                                       \
     ptr}
#define CFG_OPT_DATABASE_URL(ptr)                                                                  \
    {"DATABASE_URL", "database-url", CFG_STR, "postgresql://webhooks@127.0.0.1:5432/webhooks", 0, \
     0, "PostgreSQL connection string (libpq URI or key=value)", ptr}
#define CFG_OPT_REDIS_PREFIX(ptr)                                                                  \
    {"REDIS_PREFIX", "redis-prefix", CFG_STR, "wh:", 0, 0, "prefix of every Redis key", ptr}
/* 0 (the default) is resolved by cfg_startup from REDIS_URL: CFG_PARTITIONS_SINGLE on one
 * server, CFG_PARTITIONS_CLUSTER on a Redis Cluster (at least ~5 hash tags per master of a
 * 3-master cluster; decision 48), so every binary reading the same env gets the same number. */
#define CFG_PARTITIONS_SINGLE 1
#define CFG_PARTITIONS_CLUSTER 16
#define CFG_OPT_PARTITIONS(ptr)                                                                    \
    {"QUEUE_PARTITIONS", "partitions", CFG_INT, "0", 0, 256,                                     \
     "number of job stream partitions (same value on broker and workers); 0: 1 on a redis:// "   \
     "server, 16 on a redis-cluster://",                                                          \
     ptr}
/* The SSRF guard (common/netguard.h): the broker checks at registration, the worker at connect. */
#define CFG_OPT_ALLOW_PRIVATE(ptr)                                                                 \
    {"WEBHOOK_ALLOW_PRIVATE_NETWORKS", "allow-private-networks", CFG_BOOL, "0", 0, 0,              \
     "allow webhook URLs on loopback, private, link-local and other non-public addresses "        \
     "(turns the SSRF guard off; development and tests only)",                                    \
     ptr}
#define CFG_OPT_ALLOWED_CIDRS(ptr)                                                                 \
    {"WEBHOOK_ALLOWED_CIDRS", "allowed-cidrs", CFG_STR, "", 0, 0,                                 \
     "comma-separated non-public networks webhooks may still reach, e.g. 10.20.0.0/16,fd00::/8",  \
     ptr}
#define CFG_OPT_HTTPS_ONLY(ptr)                                                                    \
    {"WEBHOOK_HTTPS_ONLY", "https-only", CFG_BOOL, "0", 0, 0,                                    \
     "accept and deliver to https:// webhook URLs only", ptr}
/* Encryption at rest of webhook signing secrets (common/secretbox.h): broker and workers. Env
 * only, so that a key never shows in a process list. */
#define CFG_OPT_SECRETS_KEY(ptr)                                                                   \
    {"SECRETS_KEY", NULL, CFG_STR, "", 0, 0,                                                      \
     "required: 32-byte key that encrypts webhook signing secrets in PostgreSQL (AES-256-GCM), "  \
     "as 64 hex digits (openssl rand -hex 32) or 44 characters of base64; the same everywhere",   \
     ptr}
#define CFG_OPT_SECRETS_KEY_PREVIOUS(ptr)                                                          \
    {"SECRETS_KEY_PREVIOUS", NULL, CFG_STR, "", 0, 0,                                             \
     "comma-separated keys SECRETS_KEY replaced: secrets they encrypted still decrypt, and the "  \
     "broker re-encrypts them under SECRETS_KEY at start-up",                                     \
     ptr}
#define CFG_OPT_LOG_LEVEL(ptr)                                                                     \
    {"LOG_LEVEL", "log-level", CFG_STR, "info", 0, 0, "debug, info, warn or error", ptr}
#define CFG_OPT_LOG_FORMAT(ptr)                                                                    \
    {"LOG_FORMAT", "log-format", CFG_STR, "text", 0, 0,                                          \
     "text, or json: one JSON object per line (time, level, process, pid, context id, message)",  \
     ptr}

/* The start-up every binary shares: ignores SIGPIPE, names the program in logs, loads the
 * config (printing --help / --version), applies LOG_LEVEL, LOG_FORMAT and REDIS_PREFIX (the
 * fields the three pointers designate, filled by the load); when the table has REDIS_URL, sets
 * the key names' cluster mode from it (keys_set_cluster) and resolves a QUEUE_PARTITIONS of 0. Returns -1 to go on, or the status
 * main() should exit with (0 after --help, 2 on a bad setting, with the reason on stderr). */
int cfg_startup(const char *prog, const struct cfg_opt *opts, size_t n, int argc, char **argv,
                const char *usage, const char *version, char *const *log_level,
                char *const *log_format, char *const *redis_prefix);

/* Parses "host:port" (host may be [v6]); port 0 allowed. host written into host (NUL-terminated). */
int cfg_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
    __attribute__((warn_unused_result));

#endif
