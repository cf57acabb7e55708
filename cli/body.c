/* Request bodies from the command line: --data as JSON text, @file or - (stdin), and JSON
 * objects built from flags (merged over --data). */
#include "body.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int read_stream(FILE *f, struct buf *out)
{
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_add(out, chunk, n);
    return ferror(f) ? -1 : 0;
}

int body_read(const char *spec, struct buf *out, char *err, size_t errlen)
{
    buf_add(out, "", 0);
    if (strcmp(spec, "-") == 0) {
        if (read_stream(stdin, out) < 0) {
            snprintf(err, errlen, "cannot read the body from stdin: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    if (spec[0] == '@') {
        FILE *f = fopen(spec + 1, "rb");
        if (!f) {
            snprintf(err, errlen, "cannot open %s: %s", spec + 1, strerror(errno));
            return -1;
        }
        int rc = read_stream(f, out);
        if (rc < 0)
            snprintf(err, errlen, "cannot read %s: %s", spec + 1, strerror(errno));
        fclose(f);
        return rc;
    }
    buf_adds(out, spec);
    return 0;
}

cJSON *body_object(const char *spec, char *err, size_t errlen)
{
    struct buf b = {0};
    if (body_read(spec, &b, err, errlen) < 0) {
        buf_free(&b);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    buf_free(&b);
    if (!cJSON_IsObject(j)) {
        snprintf(err, errlen, "--data must be a JSON object");
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

cJSON *body_json_value(const char *flag, const char *text, char *err, size_t errlen)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        snprintf(err, errlen, "--%s must be JSON, not \"%s\"", flag, text);
    return j;
}

cJSON *body_number(const char *flag, const char *text, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double d = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(d)) {
        snprintf(err, errlen, "--%s must be a number, not \"%s\"", flag, text);
        return NULL;
    }
    return cJSON_CreateNumber(d);
}

void body_set(cJSON *obj, const char *key, cJSON *item)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item);
    else
        cJSON_AddItemToObject(obj, key, item);
}

void body_print(const cJSON *obj, struct buf *out)
{
    char *s = cJSON_PrintUnformatted(obj);
    buf_adds(out, s);
    free(s);
}
