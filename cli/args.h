/* Command-line parsing of one command: options from a table (which also writes --help),
 * positional parameters, "--opt value" and "--opt=value", "--" ending the options. */
#ifndef WH_ARGS_H
#define WH_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define OPT_REPEAT 1u /* may be given more than once (args_next gives each value) */

struct opt {
    const char *name;    /* "event" for --event; NULL ends a table */
    const char *metavar; /* "NAME" when it takes a value; NULL for a flag */
    unsigned flags;
    const char *help;
};

#define ARGS_MAX_POS 8
#define ARGS_MAX_VALS 128

struct args {
    const char *pos[ARGS_MAX_POS];
    int npos;
    struct {
        const struct opt *opt;
        const char *val; /* "" for a flag; points into argv */
    } v[ARGS_MAX_VALS];
    int nv;
    bool help; /* -h or --help was given */
};

/* Parses argv[0..argc) against two option tables (the command's and the global ones; either
 * may be NULL). 0, or -1 with the reason in err (an unknown option, a missing value, an option
 * given twice that is not OPT_REPEAT, too many parameters). Values point into argv. */
int args_parse(struct args *a, int argc, char **argv, const struct opt *cmd_opts,
               const struct opt *global_opts, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The value of --name (the last one), or NULL when it was not given. */
const char *args_get(const struct args *a, const char *name);
bool args_has(const struct args *a, const char *name);
/* Iterates the values of a repeatable option: start with *i = 0; NULL at the end. */
const char *args_next(const struct args *a, const char *name, int *i);

/* Prints the option lines of a table, aligned: "  --event NAME   the event name". */
void args_print_opts(FILE *f, const struct opt *opts);

#endif
