/* Aligned text output of API answers: tables of lists (one column per chosen field) and
 * "key: value" blocks of single objects. */
#include "table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

char *table_cell(const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return xstrdup("-");
    if (cJSON_IsBool(v))
        return xstrdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 1e15)
            return xasprintf("%.0f", d);
        return xasprintf("%g", d);
    }
    if (cJSON_IsString(v)) { /* one line: trailing blanks dropped, \n \r \t escaped */
        const char *p = v->valuestring;
        size_t n = strlen(p);
        while (n > 0 &&
               (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        struct buf b = {0};
        buf_add(&b, "", 0);
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch == '\n' || ch == '\r' || ch == '\t') {
                buf_addc(&b, '\\');
                buf_addc(&b, ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't');
            } else {
                buf_addc(&b, ch < 0x20 || ch == 0x7f ? '?' : (char)ch);
            }
        }
        return buf_steal(&b, NULL);
    }
    char *j = cJSON_PrintUnformatted(v);
    return j ? j : xstrdup("?");
}

const cJSON *table_get(const cJSON *obj, const char *path)
{
    const cJSON *v = obj;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        char *key = xstrndup(path, n);
        v = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, key) : NULL;
        free(key);
        path += n + (path[n] == '.');
    }
    return v;
}

/* Display width of a UTF-8 string: its code points (good enough for aligned columns). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void pad(FILE *f, size_t n)
{
    while (n--)
        fputc(' ', f);
}

void table_print(FILE *f, const cJSON *arr, const struct col *cols)
{
    size_t ncols = 0, nrows = (size_t)cJSON_GetArraySize(arr);
    while (cols[ncols].header)
        ncols++;
    char **cells = xcalloc((nrows + 1) * ncols, sizeof *cells);
    size_t *w = xcalloc(ncols, sizeof *w);
    for (size_t c = 0; c < ncols; c++)
        cells[c] = xstrdup(cols[c].header);
    size_t r = 1;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr)
    {
        for (size_t c = 0; c < ncols; c++)
            cells[r * ncols + c] = table_cell(table_get(item, cols[c].field));
        r++;
    }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++)
        if (width(cells[i]) > w[i % ncols])
            w[i % ncols] = width(cells[i]);
    for (size_t row = 0; row <= nrows; row++) {
        for (size_t c = 0; c < ncols; c++) {
            const char *s = cells[row * ncols + c];
            fputs(s, f);
            if (c + 1 < ncols)
                pad(f, w[c] - width(s) + 2);
        }
        fputc('\n', f);
    }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++)
        free(cells[i]);
    free(cells);
    free(w);
}

static int skipped(const char *key, const char *const *skip)
{
    for (; skip && *skip; skip++)
        if (strcmp(key, *skip) == 0)
            return 1;
    return 0;
}

void table_kv(FILE *f, const cJSON *obj, const char *const *skip)
{
    size_t w = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, obj)
    {
        if (m->string && !skipped(m->string, skip) && width(m->string) > w)
            w = width(m->string);
    }
    cJSON_ArrayForEach(m, obj)
    {
        if (!m->string || skipped(m->string, skip))
            continue;
        char *v = table_cell(m);
        fprintf(f, "%s:", m->string);
        pad(f, w - width(m->string) + 1);
        fprintf(f, "%s\n", v);
        free(v);
    }
}
