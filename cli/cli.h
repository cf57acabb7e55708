/* What every webhookctl command shares: the resolved connection settings, the command table's
 * shape and the exit codes by error class (README "Command line: webhookctl"). */
#ifndef WH_CLI_H
#define WH_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "args.h"

/* Exit codes, one per class of outcome (docs/decisions.md 35). */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 1,   /* bad command, flag or value: nothing was sent */
    EXIT_CLIENT = 2,  /* the API answered 4xx (other than 401) */
    EXIT_SERVER = 3,  /* the API answered 5xx (or something that is not its JSON) */
    EXIT_CONNECT = 4, /* no HTTP answer: cannot connect, resolve, or the request timed out */
    EXIT_AUTH = 5,    /* the API answered 401: no key, or a key it does not accept */
};

/* Settings of one run, resolved by config_resolve(); the strings are owned by it. */
struct cli {
    const char *prog;
    char *api_url; /* no trailing '/' */
    char *api_key; /* may be empty: the API will answer 401 */
    bool json;     /* --json: print the API's JSON as it came */
    long timeout_ms;
};

struct cmd {
    const char *group;  /* "subs", or NULL for a one-word command */
    const char *name;   /* "create" */
    const char *params; /* positional parameters for the usage line: "EVENT ID" */
    int min_pos, max_pos;
    const struct opt *opts;                          /* terminated by a {NULL} entry */
    const char *summary;                             /* one line for the command list */
    const char *help;                                /* paragraphs after the usage line, or NULL */
    int (*run)(struct cli *c, const struct args *a); /* returns the exit code */
    bool dflt; /* the group's command when the word after the group is not a command name */
};

/* The command groups, each a table ending with a {NULL} entry (cli/subs.c, cli/events.c,
 * cli/jobs.c, cli/admin.c, cli/keys.c). */
extern const struct cmd subs_cmds[];
extern const struct cmd events_cmds[];
extern const struct cmd jobs_cmds[];
extern const struct cmd admin_cmds[];
extern const struct cmd keys_cmds[];

/* Prints "webhookctl: <message>" to stderr and returns EXIT_USAGE, for a bad value. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
