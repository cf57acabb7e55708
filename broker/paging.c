/* The page_size / offset query parameters shared by the broker's list endpoints. */
#include "paging.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int query_long(struct req *r, const char *name, long def, long min, long max, long *out)
{
    char *v = http_query_param(r, name);
    if (!v) {
        *out = def;
        return 0;
    }
    /* digits only: strtol alone would also take " 5", "+5" and "-0" */
    bool ok = *v && strspn(v, "0123456789") == strlen(v) && strlen(v) <= 10;
    long n = ok ? strtol(v, NULL, 10) : 0;
    ok = ok && n >= min && n <= max;
    free(v);
    if (!ok) {
        http_error(r, 400, "invalid_field", "%s must be a whole number from %ld to %ld", name, min,
                   max);
        return -1;
    }
    *out = n;
    return 0;
}

int paging_parse(struct req *r, struct page *p)
{
    if (query_long(r, "page_size", PAGING_DEFAULT, 1, PAGING_MAX, &p->size) < 0 ||
        query_long(r, "offset", 0, 0, PAGING_OFFSET_MAX, &p->offset) < 0)
        return -1;
    snprintf(p->size_text, sizeof p->size_text, "%ld", p->size);
    snprintf(p->offset_text, sizeof p->offset_text, "%ld", p->offset);
    return 0;
}

void paging_json(struct buf *b, const char *total, const struct page *p)
{
    buf_printf(b, ",\"total\":%s,\"offset\":%ld,\"page_size\":%ld", total, p->offset, p->size);
}
