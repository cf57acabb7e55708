/* Where webhookctl finds the broker and its API key: flags, the environment, ./.env, make
 * run's development key. .env lines are read as scripts/lib.sh's wh_load_env reads them. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

/* The value of key in ./.env (KEY=VALUE lines, # comments, optional "export ", values in
 * single or double quotes kept as written, else cut at " #" and trimmed), or NULL. Caller
 * frees. */
static char *dotenv_get(const char *key)
{
    FILE *f = fopen(".env", "r");
    if (!f)
        return NULL;
    char *found = NULL, line[4096];
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        char *s = line;
        size_t n = strcspn(s, "\r\n");
        s[n] = '\0';
        while (isspace((unsigned char)*s))
            s++;
        if (strncmp(s, "export ", 7) == 0)
            s += 7;
        if (strncmp(s, key, klen) != 0 || s[klen] != '=')
            continue;
        char *v = s + klen + 1;
        size_t vlen = strlen(v);
        if (vlen >= 2 && (v[0] == '"' || v[0] == '\'')) {
            char *close = strrchr(v + 1, v[0]);
            if (close) {
                free(found);
                found = xstrndup(v + 1, (size_t)(close - v - 1));
                continue;
            }
        }
        for (char *h = v; (h = strchr(h, '#')); h++)
            if (h == v || isspace((unsigned char)h[-1])) {
                *h = '\0';
                break;
            }
        vlen = strlen(v);
        while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
            v[--vlen] = '\0';
        free(found);
        found = xstrdup(v); /* the last line wins, as in a shell */
    }
    fclose(f);
    return found;
}

/* The environment's value, else .env's; NULL when neither sets it (or sets it empty). Caller
 * frees. */
static char *setting(const char *key)
{
    const char *e = getenv(key);
    if (e && *e)
        return xstrdup(e);
    char *d = dotenv_get(key);
    if (d && !*d) {
        free(d);
        d = NULL;
    }
    return d;
}

/* The first key of a comma-separated list, trimmed; caller frees. */
static char *first_key(const char *list)
{
    while (*list == ' ' || *list == '\t')
        list++;
    size_t n = strcspn(list, ",");
    while (n > 0 && (list[n - 1] == ' ' || list[n - 1] == '\t'))
        n--;
    return xstrndup(list, n);
}

static char *dev_key(void)
{
    FILE *f = fopen(".run/api-key", "r");
    if (!f)
        return NULL;
    char line[512];
    char *key = NULL;
    if (fgets(line, sizeof line, f)) {
        line[strcspn(line, " \t\r\n")] = '\0';
        if (*line)
            key = xstrdup(line);
    }
    fclose(f);
    return key;
}

void config_resolve(struct cli *c, const char *url, const char *key)
{
    char *u = url ? xstrdup(url) : setting("WEBHOOK_API_URL");
    if (!u) {
        char *listen = setting("BROKER_LISTEN");
        if (listen) {
            /* A wildcard listen address is reached on the loopback. */
            const char *port = strrchr(listen, ':');
            if (strncmp(listen, "0.0.0.0:", 8) == 0 || strncmp(listen, "[::]:", 5) == 0 ||
                listen[0] == ':')
                u = xasprintf("http://127.0.0.1%s", port ? port : ":8080");
            else
                u = xasprintf("http://%s", listen);
            free(listen);
        } else {
            u = xstrdup(DEFAULT_URL);
        }
    }
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
    c->api_url = u;

    char *k = key ? xstrdup(key) : setting("WEBHOOK_API_KEY");
    if (!k) {
        char *list = setting("WEBHOOK_API_KEYS");
        if (list) {
            k = first_key(list);
            free(list);
        }
    }
    if (!k)
        k = dev_key();
    c->api_key = k ? k : xstrdup("");
}

void config_free(struct cli *c)
{
    free(c->api_url);
    free(c->api_key);
    c->api_url = c->api_key = NULL;
}
