/* webhookctl: the command line of the broker's HTTP API. Finds the command, parses its
 * options (and the global ones, anywhere on the line), prints help, resolves the broker's URL
 * and key, and runs it; the exit code says the class of outcome (cli.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "config.h"
#include "libmem.h"

#define PROG "webhookctl"
#define VERSION "webhookctl 0.1 (API v0)"

static const struct opt globals[] = {
    {"api-url", "URL", 0, "the broker (default: $WEBHOOK_API_URL or .env; webhookctl --help)"},
    {"api-key", "KEY", 0, "the API key (default: $WEBHOOK_API_KEY or .env; webhookctl --help)"},
    {"json", NULL, 0, "print the API's JSON answer as it came, instead of tables"},
    {"timeout", "SECONDS", 0, "give up on a request after this long (default 30)"},
    {"version", NULL, 0, "print the version and exit"},
    {NULL, NULL, 0, NULL},
};

static const struct cmd *const groups[] = {subs_cmds, events_cmds, jobs_cmds, admin_cmds,
                                            keys_cmds};
#define NGROUPS (sizeof groups / sizeof groups[0])

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

static void usage_line(FILE *f, const struct cmd *c)
{
    char words[64];
    snprintf(words, sizeof words, "%s%s%s", c->group ? c->group : "", c->group ? " " : "", c->name);
    fprintf(f, "%s%s%s%s", words, c->params[0] ? " " : "", c->params,
            c->opts && c->opts[0].name ? " [options]" : "");
}

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: " PROG " [global options] COMMAND [parameters] [options]\n\n"
               "The command line of the webhook broker's HTTP API (docs/api.md).\n\n"
               "Commands:\n");
    for (size_t g = 0; g < NGROUPS; g++)
        for (const struct cmd *c = groups[g]; c->name; c++) {
            fprintf(f, "  ");
            usage_line(f, c);
            fprintf(f, "\n      %s\n", c->summary);
        }
    fprintf(f, "\nGlobal options (anywhere on the line):\n");
    args_print_opts(f, globals);
    fprintf(f,
            "\n" PROG " COMMAND --help describes a command and its options.\n\n"
            "Configuration, the first that is set wins:\n"
            "  broker: --api-url; WEBHOOK_API_URL from the environment, then from ./.env;\n"
            "          http://<BROKER_LISTEN> (environment, then .env); http://127.0.0.1:8080\n"
            "  key:    --api-key; WEBHOOK_API_KEY (environment, then .env); the first key of\n"
            "          WEBHOOK_API_KEYS (environment, then .env); .run/api-key (make run's key)\n\n"
            "Output: aligned tables for lists, \"key: value\" lines for one object; --json prints\n"
            "the API's answer unchanged. Errors go to stderr as \"HTTP <status> <code>: "
            "<message>\".\n\n"
            "Exit codes:\n"
            "  0  success\n"
            "  1  usage error (unknown command or option, bad value): nothing was sent\n"
            "  2  the API refused the request (HTTP 4xx other than 401)\n"
            "  3  the API failed (HTTP 5xx, e.g. 503 unavailable) or answered something else\n"
            "  4  no answer: cannot resolve or connect to the broker, or the request timed out\n"
            "  5  authentication: HTTP 401, the key is missing or not accepted\n");
}

static void print_cmd_help(FILE *f, const struct cmd *c)
{
    fprintf(f, "usage: " PROG " ");
    usage_line(f, c);
    fprintf(f, "\n\n%s\n", c->summary);
    if (c->help)
        fprintf(f, "\n%s\n", c->help);
    if (c->opts && c->opts[0].name) {
        fprintf(f, "\nOptions:\n");
        args_print_opts(f, c->opts);
    }
    fprintf(f, "\nGlobal options:\n");
    args_print_opts(f, globals);
    fprintf(f, "\nExit codes: 0 ok, 1 usage, 2 HTTP 4xx, 3 HTTP 5xx, 4 broker unreachable, "
               "5 HTTP 401 (" PROG " --help says more).\n");
}

static bool is_group(const char *w)
{
    for (size_t g = 0; g < NGROUPS; g++)
        for (const struct cmd *c = groups[g]; c->name; c++)
            if (c->group && strcmp(c->group, w) == 0)
                return true;
    return false;
}

static void print_group_help(FILE *f, const char *group)
{
    fprintf(f, "usage: " PROG " %s SUBCOMMAND ...\n\nSubcommands:\n", group);
    for (size_t g = 0; g < NGROUPS; g++)
        for (const struct cmd *c = groups[g]; c->name; c++)
            if (c->group && strcmp(c->group, group) == 0) {
                fprintf(f, "  ");
                usage_line(f, c);
                fprintf(f, "\n      %s\n", c->summary);
            }
    fprintf(f, "\n" PROG " %s SUBCOMMAND --help describes one.\n", group);
}

/* The command named by w1 (and w2 for a group); *words gets how many words it used. */
static const struct cmd *find_cmd(const char *w1, const char *w2, int *words)
{
    const struct cmd *dflt = NULL;
    for (size_t g = 0; g < NGROUPS; g++)
        for (const struct cmd *c = groups[g]; c->name; c++) {
            if (!c->group && strcmp(c->name, w1) == 0) {
                *words = 1;
                return c;
            }
            if (c->group && strcmp(c->group, w1) == 0) {
                if (w2 && strcmp(c->name, w2) == 0) {
                    *words = 2;
                    return c;
                }
                if (c->dflt && w2 && w2[0] != '-') /* "recover EVENT ID": recover start */
                    dflt = c;
            }
        }
    *words = 1;
    return dflt;
}

static const char *global(const struct args *a, const struct args *lead, const char *name)
{
    const char *v = args_get(a, name);
    return v ? v : args_get(lead, name);
}

int main(int argc, char **argv)
{
    char err[256];
    struct args lead, a;
    if (libmem_init() < 0) {
        fprintf(stderr, PROG ": libcurl initialisation failed\n");
        return EXIT_SERVER;
    }
    /* Global options before the command. */
    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            i++;
            continue;
        }
        const char *eq = strchr(s, '=');
        bool takes = (strncmp(s, "--api-url", 9) == 0 || strncmp(s, "--api-key", 9) == 0 ||
                      strncmp(s, "--timeout", 9) == 0) &&
                     !eq;
        i += takes ? 2 : 1;
    }
    if (i > argc)
        i = argc;
    if (args_parse(&lead, i - 1, argv + 1, NULL, globals, err, sizeof err) < 0)
        return cli_usage_error("%s (" PROG " --help lists the options)", err);
    if (args_has(&lead, "version")) {
        puts(VERSION);
        return EXIT_OK;
    }
    if (i == argc || strcmp(argv[i], "help") == 0) {
        bool asked = lead.help || (i < argc && strcmp(argv[i], "help") == 0);
        print_main_help(asked ? stdout : stderr);
        return asked ? EXIT_OK : EXIT_USAGE;
    }
    int words;
    const struct cmd *cmd = find_cmd(argv[i], i + 1 < argc ? argv[i + 1] : NULL, &words);
    if (!cmd) {
        if (is_group(argv[i])) {
            bool asked = lead.help || (i + 1 < argc && (strcmp(argv[i + 1], "--help") == 0 ||
                                                        strcmp(argv[i + 1], "-h") == 0));
            if (!asked && i + 1 < argc)
                fprintf(stderr, PROG ": unknown command \"%s %s\"\n", argv[i], argv[i + 1]);
            print_group_help(asked ? stdout : stderr, argv[i]);
            return asked ? EXIT_OK : EXIT_USAGE;
        }
        return cli_usage_error("unknown command \"%s\" (" PROG " --help lists the commands)",
                               argv[i]);
    }
    if (args_parse(&a, argc - i - words, argv + i + words, cmd->opts, globals, err, sizeof err) <
        0) {
        fprintf(stderr, PROG ": %s\nusage: " PROG " ", err);
        usage_line(stderr, cmd);
        fprintf(stderr, "\n");
        return EXIT_USAGE;
    }
    if (a.help || lead.help) {
        print_cmd_help(stdout, cmd);
        return EXIT_OK;
    }
    if (a.npos < cmd->min_pos || a.npos > cmd->max_pos) {
        fprintf(stderr, PROG ": %s parameters: ", a.npos < cmd->min_pos ? "missing" : "too many");
        fprintf(stderr, "usage: " PROG " ");
        usage_line(stderr, cmd);
        fprintf(stderr, "\n");
        return EXIT_USAGE;
    }

    struct cli c = {
        .prog = PROG, .json = args_has(&a, "json") || args_has(&lead, "json"), .timeout_ms = 30000};
    const char *t = global(&a, &lead, "timeout");
    if (t) {
        char *end;
        double s = strtod(t, &end);
        if (end == t || *end || !(s > 0 && s <= 3600))
            return cli_usage_error("--timeout must be a number of seconds above 0 and at most "
                                   "3600, not \"%s\"",
                                   t);
        c.timeout_ms = (long)(s * 1000);
        if (c.timeout_ms < 1)
            c.timeout_ms = 1;
    }
    config_resolve(&c, global(&a, &lead, "api-url"), global(&a, &lead, "api-key"));
    if (strncmp(c.api_url, "http://", 7) != 0 && strncmp(c.api_url, "https://", 8) != 0) {
        int rc = cli_usage_error("the broker URL must start with http:// or https://, not "
                                 "\"%s\"",
                                 c.api_url);
        config_free(&c);
        return rc;
    }
    for (const char *k = c.api_key; *k; k++)
        if ((unsigned char)*k < 0x20 || *k == 0x7f) {
            int rc = cli_usage_error("the API key contains a control character (a line break "
                                     "in WEBHOOK_API_KEY or .env?)");
            config_free(&c);
            return rc;
        }
    int rc = cmd->run(&c, &a);
    config_free(&c);
    fflush(stdout);
    curl_global_cleanup();
    return rc;
}
