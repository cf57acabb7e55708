/* Command-line parsing of one command: options from a table (which also writes --help),
 * positional parameters, "--opt value" and "--opt=value", "--" ending the options. */
#include "args.h"

#include <string.h>

static const struct opt *find(const struct opt *opts, const char *name, size_t len)
{
    for (const struct opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && memcmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

int args_parse(struct args *a, int argc, char **argv, const struct opt *cmd_opts,
               const struct opt *global_opts, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    bool options = true;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (options && strcmp(s, "--") == 0) {
            options = false;
            continue;
        }
        if (options && (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)) {
            a->help = true;
            continue;
        }
        if (!options || s[0] != '-' || s[1] == '\0') { /* "-" alone is a value (stdin) */
            if (a->npos == ARGS_MAX_POS) {
                snprintf(err, errlen, "too many parameters (from \"%s\")", s);
                return -1;
            }
            a->pos[a->npos++] = s;
            continue;
        }
        if (s[1] != '-') {
            snprintf(err, errlen, "unknown option %s (options are spelled --name)", s);
            return -1;
        }
        const char *name = s + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = find(cmd_opts, name, len);
        if (!o)
            o = find(global_opts, name, len);
        if (!o) {
            snprintf(err, errlen, "unknown option --%.*s", (int)len, name);
            return -1;
        }
        const char *val = "";
        if (o->metavar) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                snprintf(err, errlen, "--%s needs a value (%s)", o->name, o->metavar);
                return -1;
            }
        } else if (eq) {
            snprintf(err, errlen, "--%s takes no value", o->name);
            return -1;
        }
        if (!(o->flags & OPT_REPEAT) && args_has(a, o->name)) {
            snprintf(err, errlen, "--%s is given twice", o->name);
            return -1;
        }
        if (a->nv == ARGS_MAX_VALS) {
            snprintf(err, errlen, "too many options");
            return -1;
        }
        a->v[a->nv].opt = o;
        a->v[a->nv].val = val;
        a->nv++;
    }
    return 0;
}

const char *args_next(const struct args *a, const char *name, int *i)
{
    for (; *i < a->nv; (*i)++)
        if (strcmp(a->v[*i].opt->name, name) == 0)
            return a->v[(*i)++].val;
    return NULL;
}

const char *args_get(const struct args *a, const char *name)
{
    const char *last = NULL, *v;
    int i = 0;
    while ((v = args_next(a, name, &i)))
        last = v;
    return last;
}

bool args_has(const struct args *a, const char *name)
{
    return args_get(a, name) != NULL;
}

void args_print_opts(FILE *f, const struct opt *opts)
{
    int width = 0;
    for (const struct opt *o = opts; o && o->name; o++) {
        int w = (int)strlen(o->name) + (o->metavar ? (int)strlen(o->metavar) + 1 : 0);
        if (w > width)
            width = w;
    }
    for (const struct opt *o = opts; o && o->name; o++) {
        char left[128];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(f, "  --%-*s  %s%s\n", width, left, o->help,
                (o->flags & OPT_REPEAT) ? " (repeatable)" : "");
    }
}
