/* Strict HTTP/1.x message-head parsing for the bench tools (request heads for the receiver,
 * response heads for the load generator): CRLF line ends, no obs-fold, one Content-Length. */
#include "http1.h"

#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const char *name, size_t n, const char *lower)
{
    return strlen(lower) == n && strncasecmp(name, lower, n) == 0;
}

/* Does the comma-separated list v[0..n) contain token tok (case-insensitive)? */
static bool list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

/* "HTTP/1.0" or "HTTP/1.1" at p (8 bytes available): returns the minor version or -1. */
static int parse_version(const char *p)
{
    if (memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return -1;
    return p[7] - '0';
}

/* Parses the header lines in p[0..end), end pointing at the final CRLF (the blank line). */
static int parse_fields(const char *p, const char *end, const char *const *want, size_t nwant,
                        struct http1_head *h)
{
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p) + 1);
        if (!eol || eol[1] != '\n')
            return -1;
        const char *name = p, *c = p;
        while (c < eol && is_tchar((unsigned char)*c))
            c++;
        if (c == name || c == eol || *c != ':')
            return -1; /* empty name, no colon, space before the colon, or obs-fold */
        size_t nlen = (size_t)(c - name);
        const char *v = c + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *q = v; q < ve; q++)
            if ((unsigned char)*q < 0x20 && *q != '\t')
                return -1;
        size_t vlen = (size_t)(ve - v);
        if (name_is(name, nlen, "content-length")) {
            long long n = 0;
            if (vlen == 0 || vlen > 15)
                return -1;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                n = n * 10 + (v[i] - '0');
            }
            if (h->content_length >= 0 && h->content_length != n)
                return -1;
            h->content_length = n;
        } else if (name_is(name, nlen, "transfer-encoding")) {
            h->chunked = true;
        } else if (name_is(name, nlen, "connection")) {
            h->conn_close |= list_has(v, vlen, "close");
            h->conn_keep_alive |= list_has(v, vlen, "keep-alive");
        } else if (name_is(name, nlen, "expect")) {
            h->expect_continue |= vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
        }
        for (size_t i = 0; i < nwant && i < 32; i++)
            if (name_is(name, nlen, want[i]))
                h->seen |= 1u << i;
        p = eol + 2;
    }
    return 0;
}

/* Finds the blank line ending the head; returns 1 (h->head_len set), 0 or -1. */
static int find_head(const char *p, size_t len, struct http1_head *h)
{
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    size_t scan = len < HTTP1_MAX_HEAD ? len : HTTP1_MAX_HEAD;
    const char *e = memmem(p, scan, "\r\n\r\n", 4);
    if (!e)
        return len >= HTTP1_MAX_HEAD ? -1 : 0;
    h->head_len = (size_t)(e - p) + 4;
    return 1;
}

int http1_parse_request(const char *p, size_t len, const char *const *want, size_t nwant,
                        struct http1_head *h)
{
    int r = find_head(p, len, h);
    if (r <= 0)
        return r;
    const char *end = p + h->head_len - 2; /* the blank line's CRLF */
    const char *c = p;
    while (c < end && *c >= 'A' && *c <= 'Z')
        c++;
    if (c == p || *c != ' ')
        return -1;
    h->method = p;
    h->method_len = (size_t)(c - p);
    const char *t = ++c;
    while (c < end && (unsigned char)*c > 0x20 && *c != 0x7f)
        c++;
    if (c == t || *t != '/' || *c != ' ' || end - c < 11)
        return -1;
    h->target = t;
    h->target_len = (size_t)(c - t);
    c++;
    if ((h->minor = parse_version(c)) < 0 || c[8] != '\r' || c[9] != '\n')
        return -1;
    return parse_fields(c + 10, end, want, nwant, h) < 0 ? -1 : 1;
}

int http1_parse_response(const char *p, size_t len, struct http1_head *h)
{
    int r = find_head(p, len, h);
    if (r <= 0)
        return r;
    const char *end = p + h->head_len - 2;
    if (end - p < 14 || (h->minor = parse_version(p)) < 0 || p[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        h->status = h->status * 10 + (p[i] - '0');
    }
    if (h->status < 100 || (p[12] != ' ' && p[12] != '\r'))
        return -1;
    const char *eol = memchr(p + 12, '\r', (size_t)(end - (p + 12)) + 1);
    if (!eol || eol[1] != '\n')
        return -1;
    return parse_fields(eol + 2, end, NULL, 0, h) < 0 ? -1 : 1;
}

bool http1_keep_alive(const struct http1_head *h)
{
    if (h->conn_close)
        return false;
    return h->minor >= 1 || h->conn_keep_alive;
}
