/* Strict JSON validation (RFC 8259) of request bodies, without building a tree, plus the checks
 * cJSON 1.7.15 does not make (duplicate keys). Pure functions. */
#include "jsonv.h"

#include "codec.h"
#include "mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Recursive descent over p[0..n). Each parse_* function starts at j->i and leaves j->i just
 * past what it consumed; on failure it records the first error and returns -1. */
struct jparse {
    const char *p;
    size_t n;
    size_t i;
    const char *why; /* first error, static string */
    size_t at;       /* its byte offset */
};

static int fail(struct jparse *j, size_t at, const char *why)
{
    if (!j->why) {
        j->why = why;
        j->at = at;
    }
    return -1;
}

static void skip_ws(struct jparse *j)
{
    while (j->i < j->n) {
        char c = j->p[j->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        j->i++;
    }
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}


/* Four hex digits at p[at..at+4) into *cp; -1 if short or not hex. */
static int read_hex4(const struct jparse *j, size_t at, unsigned *cp)
{
    if (j->n - at < 4)
        return -1;
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value(j->p[at + k]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return 0;
}

/* Length of a UTF-8 sequence judging by its lead byte only (0: not a lead byte). */
static size_t utf8_lead_len(unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

static int parse_escape(struct jparse *j)
{
    size_t start = j->i; /* at the backslash */
    if (j->n - j->i < 2)
        return fail(j, start, "unterminated escape");
    char e = j->p[j->i + 1];
    switch (e) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        j->i += 2;
        return 0;
    case 'u':
        break;
    default:
        return fail(j, start, "invalid escape");
    }
    unsigned cp;
    if (read_hex4(j, j->i + 2, &cp) < 0)
        return fail(j, start, "invalid \\u escape");
    if (cp == 0)
        return fail(j, start, "\\u0000 is not allowed");
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail(j, start, "unpaired low surrogate escape");
    j->i += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (j->n - j->i < 6 || j->p[j->i] != '\\' || j->p[j->i + 1] != 'u' ||
            read_hex4(j, j->i + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
            return fail(j, start, "unpaired high surrogate escape");
        j->i += 6;
    }
    return 0;
}

static int parse_string(struct jparse *j)
{
    size_t start = j->i; /* at the opening quote */
    j->i++;
    while (j->i < j->n) {
        unsigned char c = (unsigned char)j->p[j->i];
        if (c == '"') {
            j->i++;
            return 0;
        }
        if (c == '\\') {
            if (parse_escape(j) < 0)
                return -1;
        } else if (c < 0x20) {
            return fail(j, j->i, "unescaped control character in string");
        } else if (c < 0x80) {
            j->i++;
        } else {
            size_t len = utf8_lead_len(c);
            if (len == 0)
                return fail(j, j->i, "invalid UTF-8");
            if (len > j->n - j->i)
                return fail(j, j->i, "truncated UTF-8 sequence");
            if (!utf8_valid(j->p + j->i, len))
                return fail(j, j->i, "invalid UTF-8");
            j->i += len;
        }
    }
    return fail(j, start, "unterminated string");
}

/* True when the syntactically valid number s[0..len) is too large in magnitude for a double.
 * The value is rewritten as <up to 40 significant digits> "e" <exponent>: no decimal point, so
 * strtod's locale does not matter, and the buffer stays small whatever the input length. */
static bool number_overflows(const char *s, size_t len)
{
    enum { SIG_MAX = 40 };
    char digits[SIG_MAX + 1];
    int nd = 0;
    long e10 = 0; /* value = 0.d1d2d3... * 10^e10 */
    size_t i = 0;
    if (s[i] == '-')
        i++;
    for (; i < len && is_digit(s[i]); i++) {
        if (nd == 0 && s[i] == '0')
            continue;
        if (nd < SIG_MAX)
            digits[nd++] = s[i];
        e10++;
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && is_digit(s[i]); i++) {
            if (nd == 0 && s[i] == '0') {
                e10--;
                continue;
            }
            if (nd < SIG_MAX)
                digits[nd++] = s[i];
        }
    }
    if (nd == 0)
        return false; /* zero, whatever the exponent */
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int sign = 1;
        if (s[i] == '-' || s[i] == '+')
            sign = s[i++] == '-' ? -1 : 1;
        long x = 0;
        for (; i < len && is_digit(s[i]); i++)
            if (x < 1000000)
                x = x * 10 + (s[i] - '0');
        e10 += sign * x;
    }
    /* A double overflows at about 1.8e308, i.e. 0.18 * 10^309. */
    if (e10 > 310)
        return true;
    if (e10 < 300)
        return false;
    char buf[SIG_MAX + 16];
    snprintf(buf, sizeof buf, "%.*se%ld", nd, digits, e10 - nd);
    return isinf(strtod(buf, NULL));
}

static int parse_number(struct jparse *j)
{
    size_t start = j->i;
    if (j->p[j->i] == '-')
        j->i++;
    if (j->i >= j->n || !is_digit(j->p[j->i]))
        return fail(j, start, "invalid number");
    if (j->p[j->i] == '0') {
        j->i++;
        if (j->i < j->n && is_digit(j->p[j->i]))
            return fail(j, start, "leading zero in number");
    } else {
        while (j->i < j->n && is_digit(j->p[j->i]))
            j->i++;
    }
    if (j->i < j->n && j->p[j->i] == '.') {
        j->i++;
        if (j->i >= j->n || !is_digit(j->p[j->i]))
            return fail(j, j->i, "digit expected after decimal point");
        while (j->i < j->n && is_digit(j->p[j->i]))
            j->i++;
    }
    if (j->i < j->n && (j->p[j->i] == 'e' || j->p[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->p[j->i] == '+' || j->p[j->i] == '-'))
            j->i++;
        if (j->i >= j->n || !is_digit(j->p[j->i]))
            return fail(j, j->i, "digit expected in exponent");
        while (j->i < j->n && is_digit(j->p[j->i]))
            j->i++;
    }
    if (number_overflows(j->p + start, j->i - start))
        return fail(j, start, "number out of range");
    return 0;
}

static int parse_literal(struct jparse *j, const char *word)
{
    size_t len = strlen(word);
    if (j->n - j->i < len || memcmp(j->p + j->i, word, len) != 0)
        return fail(j, j->i, "invalid literal");
    j->i += len;
    return 0;
}

static int parse_value(struct jparse *j, int depth);

static int parse_array(struct jparse *j, int depth)
{
    if (depth > JSONV_MAX_DEPTH)
        return fail(j, j->i, "nesting deeper than 64 levels");
    j->i++; /* '[' */
    skip_ws(j);
    if (j->i < j->n && j->p[j->i] == ']') {
        j->i++;
        return 0;
    }
    for (;;) {
        if (parse_value(j, depth) < 0)
            return -1;
        skip_ws(j);
        if (j->i >= j->n)
            return fail(j, j->i, "unterminated array");
        char c = j->p[j->i];
        if (c == ']') {
            j->i++;
            return 0;
        }
        if (c != ',')
            return fail(j, j->i, "expected ',' or ']'");
        j->i++;
        skip_ws(j);
        if (j->i < j->n && j->p[j->i] == ']')
            return fail(j, j->i, "trailing comma");
    }
}

static int parse_object(struct jparse *j, int depth)
{
    if (depth > JSONV_MAX_DEPTH)
        return fail(j, j->i, "nesting deeper than 64 levels");
    j->i++; /* '{' */
    skip_ws(j);
    if (j->i < j->n && j->p[j->i] == '}') {
        j->i++;
        return 0;
    }
    for (;;) {
        if (j->i >= j->n)
            return fail(j, j->i, "unterminated object");
        if (j->p[j->i] == '}')
            return fail(j, j->i, "trailing comma");
        if (j->p[j->i] != '"')
            return fail(j, j->i, "expected a string key");
        if (parse_string(j) < 0)
            return -1;
        skip_ws(j);
        if (j->i >= j->n || j->p[j->i] != ':')
            return fail(j, j->i, "expected ':'");
        j->i++;
        if (parse_value(j, depth) < 0)
            return -1;
        skip_ws(j);
        if (j->i >= j->n)
            return fail(j, j->i, "unterminated object");
        char c = j->p[j->i];
        if (c == '}') {
            j->i++;
            return 0;
        }
        if (c != ',')
            return fail(j, j->i, "expected ',' or '}'");
        j->i++;
        skip_ws(j);
    }
}

/* depth: number of arrays and objects enclosing this value. */
static int parse_value(struct jparse *j, int depth)
{
    skip_ws(j);
    if (j->i >= j->n)
        return fail(j, j->i, "unexpected end of input");
    char c = j->p[j->i];
    switch (c) {
    case '{':
        return parse_object(j, depth + 1);
    case '[':
        return parse_array(j, depth + 1);
    case '"':
        return parse_string(j);
    case 't':
        return parse_literal(j, "true");
    case 'f':
        return parse_literal(j, "false");
    case 'n':
        return parse_literal(j, "null");
    default:
        if (c == '-' || is_digit(c))
            return parse_number(j);
        return fail(j, j->i, "unexpected character");
    }
}

int jsonv_validate(const char *p, size_t n, char *err, size_t errlen)
{
    struct jparse j = {.p = p, .n = n, .i = 0, .why = NULL, .at = 0};
    if (n == 0) {
        fail(&j, 0, "empty body");
    } else if (parse_value(&j, 0) == 0) {
        skip_ws(&j);
        if (j.i != n)
            fail(&j, j.i, "unexpected data after the JSON value");
    }
    if (!j.why)
        return 0;
    if (err && errlen)
        snprintf(err, errlen, "invalid JSON at byte %zu: %s", j.at, j.why);
    return -1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Small objects are compared pairwise; larger ones sorted by name (n log n), so a hostile
 * object with thousands of members costs no more than parsing it. */
bool jsonv_has_dup_keys(const cJSON *obj)
{
    if (!obj || !cJSON_IsObject(obj))
        return false;
    size_t count = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        count++;
    if (count < 2)
        return false;
    if (count <= 16) {
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0)
                    return true;
        return false;
    }
    const char **names = xmalloc(count * sizeof *names);
    size_t k = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string)
            names[k++] = c->string;
    qsort(names, k, sizeof *names, cmp_names);
    bool dup = false;
    for (size_t i = 1; i < k && !dup; i++)
        dup = strcmp(names[i - 1], names[i]) == 0;
    free(names);
    return dup;
}
