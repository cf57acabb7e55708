/* One config table per binary: env variable, flag, type, default, bounds and help for each key.
 * The same table drives environment parsing, command-line flags, --help and range checks. */
#include "cfg.h"

#include "keys.h"
#include "log.h"
#include "mem.h"
#include "rcluster.h"

#include <signal.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_ms(const char *s, long *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 1e9)
        return -1;
    *out = (long)llround(v * 1000.0);
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < 4; i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *out = true, 0;
    for (size_t i = 0; i < 5; i++)
        if (strcasecmp(s, no[i]) == 0)
            return *out = false, 0;
    return -1;
}

static int set_value(const struct cfg_opt *o, const char *val, const char *source, char *err,
                     size_t errlen)
{
    long v;
    switch (o->type) {
    case CFG_STR: {
        char **p = o->ptr;
        free(*p);
        *p = xstrdup(val);
        return 0;
    }
    case CFG_BOOL:
        if (parse_bool(val, o->ptr) < 0) {
            snprintf(err, errlen, "%s: %s must be a boolean (1/0, true/false), got \"%s\"", source,
                     o->env, val);
            return -1;
        }
        return 0;
    case CFG_INT:
    case CFG_MS:
        if ((o->type == CFG_INT ? parse_long(val, &v) : parse_ms(val, &v)) < 0) {
            snprintf(err, errlen, "%s: %s must be a %s, got \"%s\"", source, o->env,
                     o->type == CFG_INT ? "whole number" : "number of seconds", val);
            return -1;
        }
        if (v < o->min || v > o->max) {
            if (o->type == CFG_INT)
                snprintf(err, errlen, "%s: %s must be between %ld and %ld, got %ld", source,
                         o->env, o->min, o->max, v);
            else
                snprintf(err, errlen, "%s: %s must be between %.3g and %.3g seconds, got \"%s\"",
                         source, o->env, o->min / 1000.0, o->max / 1000.0, val);
            return -1;
        }
        *(long *)o->ptr = v;
        return 0;
    }
    return -1;
}

void cfg_print_help(const struct cfg_opt *opts, size_t n, const char *usage)
{
    printf("%s\n\nOptions (flag / environment variable, default):\n", usage);
    for (size_t i = 0; i < n; i++) {
        const struct cfg_opt *o = &opts[i];
        char left[96];
        if (o->flag)
            snprintf(left, sizeof left, "--%s%s", o->flag, o->type == CFG_BOOL ? "" : " VALUE");
        else
            snprintf(left, sizeof left, "(env only)");
        printf("  %-34s %s\n  %-34s   env %s, default \"%s\"%s\n", left, o->help, "", o->env,
               o->def, o->type == CFG_MS ? " (seconds)" : "");
    }
    printf("  %-34s %s\n  %-34s %s\n", "--help", "show this help and exit", "--version",
           "show the version and exit");
}

int cfg_load(const struct cfg_opt *opts, size_t n, int argc, char **argv, const char *usage,
             const char *version, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (set_value(&opts[i], opts[i].def, "default", err, errlen) < 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(opts[i].env);
        if (v && set_value(&opts[i], v, "environment", err, errlen) < 0)
            return -1;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cfg_print_help(opts, n, usage);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s\n", version);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%s\" (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct cfg_opt *o = NULL;
        for (size_t i = 0; i < n; i++)
            if (opts[i].flag && strlen(opts[i].flag) == nlen &&
                strncmp(opts[i].flag, name, nlen) == 0)
                o = &opts[i];
        if (!o) {
            snprintf(err, errlen, "unknown option \"%s\" (see --help)", arg);
            return -1;
        }
        const char *val;
        if (eq)
            val = eq + 1;
        else if (o->type == CFG_BOOL)
            val = "1";
        else if (a + 1 < argc)
            val = argv[++a];
        else {
            snprintf(err, errlen, "option --%s needs a value", o->flag);
            return -1;
        }
        char src[80];
        snprintf(src, sizeof src, "--%s", o->flag);
        if (set_value(o, val, src, err, errlen) < 0)
            return -1;
    }
    return 0;
}

void cfg_free(const struct cfg_opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (opts[i].type == CFG_STR) {
            char **p = opts[i].ptr;
            free(*p);
            *p = NULL;
        }
    }
}

int cfg_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    long p;
    if (parse_long(colon + 1, &p) < 0 || p < 0 || p > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static const struct cfg_opt *find_opt(const struct cfg_opt *opts, size_t n, const char *env)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].env, env) == 0)
            return &opts[i];
    return NULL;
}

int cfg_startup(const char *prog, const struct cfg_opt *opts, size_t n, int argc, char **argv,
                const char *usage, const char *version, char *const *log_level,
                char *const *log_format, char *const *redis_prefix)
{
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    log_set_program(prog);
    int rc = cfg_load(opts, n, argc, argv, usage, version, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "%s: %s\n", prog, err);
        cfg_free(opts, n);
        return rc < 0 ? 2 : 0;
    }
    if (log_set_level(*log_level) < 0) {
        fprintf(stderr, "%s: LOG_LEVEL must be debug, info, warn or error (got \"%s\")\n", prog,
                *log_level);
        cfg_free(opts, n);
        return 2;
    }
    if (log_set_format(*log_format) < 0) {
        fprintf(stderr, "%s: LOG_FORMAT must be text or json (got \"%s\")\n", prog, *log_format);
        cfg_free(opts, n);
        return 2;
    }
    if (keys_set_prefix(*redis_prefix) < 0) {
        fprintf(stderr, "%s: REDIS_PREFIX must be at most 64 bytes without braces\n", prog);
        cfg_free(opts, n);
        return 2;
    }
    const struct cfg_opt *url = find_opt(opts, n, "REDIS_URL");
    bool cluster = url && rcluster_is_url(*(char *const *)url->ptr);
    keys_set_cluster(cluster);
    const struct cfg_opt *parts = find_opt(opts, n, "QUEUE_PARTITIONS");
    if (parts && *(long *)parts->ptr == 0)
        *(long *)parts->ptr = cluster ? CFG_PARTITIONS_CLUSTER : CFG_PARTITIONS_SINGLE;
    return -1;
}
