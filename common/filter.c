/* Subscription payload filters: validation and compilation of the operator syntax into a tree
 * of conditions, and its evaluation against a parsed payload (semantics in docs/api.md). */
#include "filter.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* The operators of a field condition. $neq, $nin and $exists:false are the positive operator
 * with negate set; $not holds a list of conditions. */
enum fop {
    OP_EQ,
    OP_GT,
    OP_GTE,
    OP_LT,
    OP_LTE,
    OP_IN,
    OP_EXISTS,
    OP_PREFIX,
    OP_SUFFIX,
    OP_CONTAINS,
    OP_NOT
};

struct fcmp {
    enum fop op;
    bool negate;
    cJSON *arg;        /* the operand (an owned copy); NULL for $exists and $not */
    size_t arglen;     /* strlen of a string operand */
    struct fcmp *subs; /* $not: conditions that must all hold for $not to fail */
    size_t nsubs;
};

struct fseg {
    char *name;
    long index; /* the segment as an array index, or -1 when it is not digits */
};

enum fkind { FK_AND, FK_OR, FK_NOT, FK_FIELD };

struct fnode {
    enum fkind kind;
    struct fnode *kids; /* AND, OR: any number; NOT: one */
    size_t nkids;
    struct fseg *segs; /* FIELD: the path */
    size_t nsegs;
    struct fcmp *cmps; /* FIELD: conditions that must all hold */
    size_t ncmps;
};

struct filter {
    struct fnode root; /* FK_AND */
};

/* ---- freeing ------------------------------------------------------------------------------ */

static void cmps_free(struct fcmp *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cJSON_Delete(c[i].arg);
        cmps_free(c[i].subs, c[i].nsubs);
    }
    free(c);
}

static void node_clear(struct fnode *f)
{
    for (size_t i = 0; i < f->nkids; i++)
        node_clear(&f->kids[i]);
    free(f->kids);
    for (size_t i = 0; i < f->nsegs; i++)
        free(f->segs[i].name);
    free(f->segs);
    cmps_free(f->cmps, f->ncmps);
}

void filter_free(struct filter *f)
{
    if (!f)
        return;
    node_clear(&f->root);
    free(f);
}

/* ---- compiling ---------------------------------------------------------------------------- */

/* Where an error is: "filter", "filter.data.amount", "filter.$or[1].type". */
struct where {
    char *err;
    size_t errlen;
    char at[200];
};

static int fail(struct where *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct where *w, const char *fmt, ...)
{
    if (!w->errlen)
        return -1;
    int n = snprintf(w->err, w->errlen, "%s: ", w->at);
    if (n >= 0 && (size_t)n < w->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err + n, w->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Appends ".key" (cut when long) or "[i]" to w->at, returning its old length (to restore). */
static size_t where_key(struct where *w, const char *key)
{
    size_t len = strlen(w->at);
    snprintf(w->at + len, sizeof w->at - len, ".%.128s", key);
    return len;
}

static size_t where_index(struct where *w, size_t i)
{
    size_t len = strlen(w->at);
    snprintf(w->at + len, sizeof w->at - len, "[%zu]", i);
    return len;
}

static bool is_op(const char *key)
{
    return key[0] == '$';
}

static const struct {
    const char *name;
    enum fop op;
    bool negate;
} ops[] = {
    {"$eq", OP_EQ, false},         {"$neq", OP_EQ, true},         {"$gt", OP_GT, false},
    {"$gte", OP_GTE, false},       {"$lt", OP_LT, false},         {"$lte", OP_LTE, false},
    {"$in", OP_IN, false},         {"$nin", OP_IN, true},         {"$exists", OP_EXISTS, false},
    {"$prefix", OP_PREFIX, false}, {"$suffix", OP_SUFFIX, false}, {"$contains", OP_CONTAINS, false},
    {"$not", OP_NOT, false},
};
#define NOPS (sizeof ops / sizeof ops[0])

static int find_op(const char *name)
{
    for (size_t i = 0; i < NOPS; i++)
        if (strcmp(ops[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int count(const cJSON *c)
{
    int n = 0;
    for (; c; c = c->next)
        n++;
    return n;
}

/* A value to compare with: an object among them must not have operators. */
static int check_value(struct where *w, const cJSON *v)
{
    for (const cJSON *c = cJSON_IsObject(v) ? v->child : NULL; c; c = c->next)
        if (is_op(c->string))
            return fail(w,
                        "an object mixes operators (%.64s) and fields: use an object of "
                        "operators, or a value to compare with",
                        c->string);
    return 0;
}

static int compile_cmps(struct where *w, const cJSON *obj, struct fcmp **out, size_t *nout);

/* One member of an operator object. */
static int compile_cmp(struct where *w, const cJSON *it, struct fcmp *c)
{
    const char *name = it->string;
    int k = find_op(name);
    if (k < 0) {
        if (strcmp(name, "$and") == 0 || strcmp(name, "$or") == 0)
            return fail(w,
                        "%s takes filters and is allowed only at the top level or inside "
                        "$and, $or and $not (use {\"%s\": [{\"field\": ...}, ...]})",
                        name, name);
        return fail(w, "unknown operator %.64s", name);
    }
    c->op = ops[k].op;
    c->negate = ops[k].negate;
    switch (c->op) {
    case OP_EQ:
        break;
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE:
        if (!cJSON_IsNumber(it) && !cJSON_IsString(it))
            return fail(w, "%s needs a number or string", name);
        break;
    case OP_IN:
        if (!cJSON_IsArray(it) || count(it->child) > FILTER_MAX_LIST)
            return fail(w, "%s needs an array of at most %d values", name, FILTER_MAX_LIST);
        break;
    case OP_EXISTS:
        if (!cJSON_IsBool(it))
            return fail(w, "$exists needs true or false");
        c->negate = cJSON_IsFalse(it);
        return 0;
    case OP_PREFIX:
    case OP_SUFFIX:
    case OP_CONTAINS:
        if (!cJSON_IsString(it))
            return fail(w, "%s needs a string", name);
        c->arglen = strlen(it->valuestring);
        break;
    case OP_NOT:
        if (cJSON_IsObject(it) && it->child && is_op(it->child->string)) {
            size_t mark = where_key(w, "$not");
            int rc = compile_cmps(w, it, &c->subs, &c->nsubs);
            w->at[mark] = '\0';
            return rc;
        }
        /* a plain value: $not of $eq */
        if (check_value(w, it) < 0)
            return -1;
        c->subs = xcalloc(1, sizeof *c->subs);
        c->nsubs = 1;
        c->subs[0].op = OP_EQ;
        c->subs[0].arg = cJSON_Duplicate(it, true);
        return 0;
    }
    c->arg = cJSON_Duplicate(it, true);
    return 0;
}

/* An operator object ({"$gt": 1, "$lt": 9}): every member an operator. */
static int compile_cmps(struct where *w, const cJSON *obj, struct fcmp **out, size_t *nout)
{
    size_t n = (size_t)count(obj->child);
    struct fcmp *c = xcalloc(n, sizeof *c);
    *out = c;
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (!is_op(it->string))
            return fail(w,
                        "\"%.64s\" is not an operator: an object of operators cannot have "
                        "fields (write the field path as a key of its own)",
                        it->string);
        int rc = compile_cmp(w, it, &c[*nout]);
        (*nout)++; /* counted even when failed: freed with the rest */
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Splits a field path into segments: "data.items.0.sku". */
static int compile_path(struct where *w, const char *path, struct fnode *f)
{
    size_t n = 1;
    for (const char *p = path; *p; p++)
        n += *p == '.';
    if (n > FILTER_MAX_SEGMENTS)
        return fail(w, "a field path has at most %d segments", FILTER_MAX_SEGMENTS);
    f->segs = xcalloc(n, sizeof *f->segs);
    const char *s = path;
    for (size_t i = 0; i < n; i++) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (len == 0)
            return fail(w, "empty segment in the field path (write \"a.b\", not \"a..b\", \".a\" "
                           "or \"a.\")");
        struct fseg *g = &f->segs[f->nsegs++];
        g->name = xstrndup(s, len);
        g->index = -1;
        bool digits = len <= 9 && (len == 1 || s[0] != '0');
        for (size_t k = 0; k < len && digits; k++)
            digits = s[k] >= '0' && s[k] <= '9';
        if (digits)
            g->index = strtol(g->name, NULL, 10);
        s += len + 1;
    }
    return 0;
}

static int compile_filter(struct where *w, const cJSON *doc, struct fnode *f);

/* $and / $or: a non-empty array of filters. */
static int compile_list(struct where *w, const cJSON *it, struct fnode *f)
{
    int n = cJSON_IsArray(it) ? count(it->child) : -1;
    if (n < 1 || n > FILTER_MAX_LIST)
        return fail(w, "%s needs an array of 1 to %d filters (objects)", it->string,
                    FILTER_MAX_LIST);
    f->kind = strcmp(it->string, "$and") == 0 ? FK_AND : FK_OR;
    f->kids = xcalloc((size_t)n, sizeof *f->kids);
    size_t i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++) {
        size_t mark = where_index(w, i);
        if (!cJSON_IsObject(e))
            return fail(w, "%s takes filters (objects)", it->string);
        f->nkids++;
        if (compile_filter(w, e, &f->kids[i]) < 0)
            return -1;
        w->at[mark] = '\0';
    }
    return 0;
}

/* One member of a filter object: $and, $or, $not, or a field path with its condition. */
static int compile_member(struct where *w, const cJSON *it, struct fnode *f)
{
    const char *key = it->string;
    if (strcmp(key, "$and") == 0 || strcmp(key, "$or") == 0)
        return compile_list(w, it, f);
    if (strcmp(key, "$not") == 0) {
        f->kind = FK_NOT;
        if (!cJSON_IsObject(it))
            return fail(w, "$not at this level takes a filter (an object)");
        f->kids = xcalloc(1, sizeof *f->kids);
        f->nkids = 1;
        return compile_filter(w, it, &f->kids[0]);
    }
    if (is_op(key)) {
        if (find_op(key) >= 0)
            return fail(w, "%s needs a field: write {\"<field path>\": {\"%s\": ...}}", key, key);
        return fail(w, "unknown operator %.64s", key);
    }
    f->kind = FK_FIELD;
    if (compile_path(w, key, f) < 0)
        return -1;
    if (cJSON_IsObject(it) && it->child && is_op(it->child->string))
        return compile_cmps(w, it, &f->cmps, &f->ncmps);
    if (check_value(w, it) < 0)
        return -1;
    f->cmps = xcalloc(1, sizeof *f->cmps); /* a value: $eq */
    f->ncmps = 1;
    f->cmps[0].op = OP_EQ;
    f->cmps[0].arg = cJSON_Duplicate(it, true);
    return 0;
}

/* A filter object: an AND of its members. */
static int compile_filter(struct where *w, const cJSON *doc, struct fnode *f)
{
    f->kind = FK_AND;
    f->kids = xcalloc((size_t)count(doc->child), sizeof *f->kids);
    for (const cJSON *it = doc->child; it; it = it->next) {
        /* an operator out of place is named by the message, not the path */
        bool structural = !is_op(it->string) || strcmp(it->string, "$and") == 0 ||
                          strcmp(it->string, "$or") == 0 || strcmp(it->string, "$not") == 0;
        size_t mark = structural ? where_key(w, it->string) : strlen(w->at);
        f->nkids++;
        if (compile_member(w, it, &f->kids[f->nkids - 1]) < 0)
            return -1;
        w->at[mark] = '\0';
    }
    return 0;
}

/* Depth (the object itself is 1) and duplicate keys, before compiling anything. */
static int check_shape(struct where *w, const cJSON *node, int depth)
{
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
        return 0;
    if (depth > FILTER_MAX_DEPTH)
        return fail(w, "nesting deeper than %d", FILTER_MAX_DEPTH);
    for (const cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsObject(node))
            for (const cJSON *d = c->next; d; d = d->next)
                if (strcmp(c->string, d->string) == 0)
                    return fail(w, "the key \"%.64s\" appears twice in one object", c->string);
        if (check_shape(w, c, depth + 1) < 0)
            return -1;
    }
    return 0;
}

struct filter *filter_compile(const cJSON *doc, char *err, size_t errlen)
{
    struct where w = {.err = err, .errlen = errlen, .at = "filter"};
    if (!cJSON_IsObject(doc)) {
        fail(&w, "must be an object (or null for none)");
        return NULL;
    }
    char *text = cJSON_PrintUnformatted(doc);
    size_t len = text ? strlen(text) : 0;
    cJSON_free(text);
    if (len > FILTER_MAX_BYTES) {
        fail(&w, "over %d bytes (as compact JSON)", FILTER_MAX_BYTES);
        return NULL;
    }
    if (check_shape(&w, doc, 1) < 0)
        return NULL;
    struct filter *f = xcalloc(1, sizeof *f);
    if (compile_filter(&w, doc, &f->root) < 0) {
        filter_free(f);
        return NULL;
    }
    return f;
}

struct filter *filter_parse(const char *p, size_t n, char *err, size_t errlen)
{
    cJSON *doc = cJSON_ParseWithLength(p, n);
    if (!doc) {
        if (errlen)
            snprintf(err, errlen, "filter: not valid JSON");
        return NULL;
    }
    struct filter *f = filter_compile(doc, err, errlen);
    cJSON_Delete(doc);
    return f;
}

/* ---- matching ----------------------------------------------------------------------------- */

/* A positive operator on one value (no array expansion). */
static bool cmp_value(const struct fcmp *c, const cJSON *v)
{
    const cJSON *a = c->arg;
    switch (c->op) {
    case OP_EQ:
        return cJSON_Compare(v, a, true);
    case OP_IN:
        for (const cJSON *e = a->child; e; e = e->next)
            if (cJSON_Compare(v, e, true))
                return true;
        return false;
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE: {
        int d;
        if (cJSON_IsNumber(a) && cJSON_IsNumber(v))
            d = v->valuedouble < a->valuedouble ? -1 : v->valuedouble > a->valuedouble ? 1 : 0;
        else if (cJSON_IsString(a) && cJSON_IsString(v))
            d = strcmp(v->valuestring, a->valuestring);
        else
            return false;
        return c->op == OP_GT ? d > 0 : c->op == OP_GTE ? d >= 0 : c->op == OP_LT ? d < 0 : d <= 0;
    }
    case OP_PREFIX:
    case OP_SUFFIX:
    case OP_CONTAINS: {
        if (!cJSON_IsString(v))
            return false;
        size_t n = strlen(v->valuestring);
        if (n < c->arglen)
            return false;
        if (c->op == OP_PREFIX)
            return memcmp(v->valuestring, a->valuestring, c->arglen) == 0;
        if (c->op == OP_SUFFIX)
            return memcmp(v->valuestring + n - c->arglen, a->valuestring, c->arglen) == 0;
        return strstr(v->valuestring, a->valuestring) != NULL;
    }
    case OP_EXISTS:
        return true;
    case OP_NOT:
        break;
    }
    return false;
}

/* The operator holds for the value, or (an array) for one of its elements. */
static bool cmp_any(const struct fcmp *c, const cJSON *v)
{
    if (cmp_value(c, v))
        return true;
    if (c->op != OP_EXISTS && cJSON_IsArray(v))
        for (const cJSON *e = v->child; e; e = e->next)
            if (cmp_value(c, e))
                return true;
    return false;
}

/* Whether a value at the path from segment i on satisfies the positive operator c. A digit
 * segment indexes an array; another segment on an array goes into every element. */
static bool at_path(const cJSON *node, const struct fnode *f, size_t i, const struct fcmp *c)
{
    if (i == f->nsegs)
        return cmp_any(c, node);
    const struct fseg *s = &f->segs[i];
    if (cJSON_IsObject(node)) {
        const cJSON *kid = cJSON_GetObjectItemCaseSensitive(node, s->name);
        return kid && at_path(kid, f, i + 1, c);
    }
    if (!cJSON_IsArray(node))
        return false;
    if (s->index >= 0) {
        const cJSON *kid = cJSON_GetArrayItem(node, (int)s->index);
        return kid && at_path(kid, f, i + 1, c);
    }
    for (const cJSON *e = node->child; e; e = e->next)
        if (at_path(e, f, i, c))
            return true;
    return false;
}

static bool field_holds(const struct fnode *f, const struct fcmp *c, const cJSON *payload)
{
    if (c->op == OP_NOT) {
        for (size_t i = 0; i < c->nsubs; i++)
            if (!field_holds(f, &c->subs[i], payload))
                return true;
        return false;
    }
    return at_path(payload, f, 0, c) != c->negate;
}

static bool node_match(const struct fnode *f, const cJSON *payload)
{
    switch (f->kind) {
    case FK_AND:
        for (size_t i = 0; i < f->nkids; i++)
            if (!node_match(&f->kids[i], payload))
                return false;
        return true;
    case FK_OR:
        for (size_t i = 0; i < f->nkids; i++)
            if (node_match(&f->kids[i], payload))
                return true;
        return false;
    case FK_NOT:
        return !node_match(&f->kids[0], payload);
    case FK_FIELD:
        for (size_t i = 0; i < f->ncmps; i++)
            if (!field_holds(f, &f->cmps[i], payload))
                return false;
        return true;
    }
    return false;
}

bool filter_match(const struct filter *f, const cJSON *payload)
{
    return payload && node_match(&f->root, payload);
}
