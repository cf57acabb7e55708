/* Payload shape: checking payloadFields and building the delivered body (raw or envelope, with
 * constant fields merged) by splicing JSON text, never re-serializing the event's payload. */
#include "shape.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jsonv.h"
#include "rfc3339.h"

int shape_parse(const char *s, enum shape *out)
{
    if (strcmp(s, "raw") == 0)
        *out = SHAPE_RAW;
    else if (strcmp(s, "envelope") == 0)
        *out = SHAPE_ENVELOPE;
    else
        return -1;
    return 0;
}

int shape_fields_check(const cJSON *v, struct buf *canon, char *err, size_t errlen)
{
    if (!cJSON_IsObject(v)) {
        snprintf(err, errlen, "payloadFields must be an object of constant fields, or null");
        return -1;
    }
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next) {
        size_t kl = strlen(it->string);
        if (kl == 0 || kl > SHAPE_KEY_MAX || !utf8_valid(it->string, kl)) {
            snprintf(err, errlen, "payloadFields keys must be 1 to %d bytes of UTF-8",
                     SHAPE_KEY_MAX);
            return -1;
        }
        if (++n > SHAPE_FIELDS_MAX) {
            snprintf(err, errlen, "payloadFields has more than %d members", SHAPE_FIELDS_MAX);
            return -1;
        }
    }
    if (jsonv_has_dup_keys(v)) {
        snprintf(err, errlen, "payloadFields has the same key twice");
        return -1;
    }
    char *text = cJSON_PrintUnformatted(v);
    size_t len = text ? strlen(text) : 0;
    if (!text || len > SHAPE_FIELDS_BYTES) {
        snprintf(err, errlen, "payloadFields must be at most %d bytes as compact JSON",
                 SHAPE_FIELDS_BYTES);
        free(text);
        return -1;
    }
    buf_add(canon, text, len);
    free(text);
    return 0;
}

int shape_timestamp(const char *id, char *out)
{
    uint64_t ms = 0;
    for (int i = 0; i < 13; i++) { /* "xxxxxxxx-xxxx": 48 bits of Unix milliseconds */
        if (i == 8) {
            if (id[i] != '-')
                return -1;
            continue;
        }
        int h = hex_value(id[i]);
        if (h < 0)
            return -1;
        ms = ms << 4 | (uint64_t)h;
    }
    if (ms > (uint64_t)RFC3339_MAX_US / 1000)
        return -1;
    /* "YYYY-MM-DD HH:MM:SS.ffffff+00" -> "YYYY-MM-DDTHH:MM:SS.fffZ" */
    char pg[RFC3339_PG_MAX];
    rfc3339_pg((int64_t)ms * 1000, pg);
    memcpy(out, pg, 10);
    out[10] = 'T';
    memcpy(out + 11, pg + 11, 12);
    out[23] = 'Z';
    out[24] = '\0';
    return 0;
}

/* ---- scanning JSON text that is known to be valid (bounded anyway: never past n) ---------- */

struct span {
    size_t off, len;
};

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *p, size_t n, size_t i)
{
    while (i < n && is_ws(p[i]))
        i++;
    return i;
}

/* The bytes that end a run of plain bytes inside a string, and inside a nested value. */
static const bool STRING_STOP[256] = {['"'] = true, ['\\'] = true};
static const bool NESTED_STOP[256] = {
    ['"'] = true, ['{'] = true, ['}'] = true, ['['] = true, [']'] = true};

/* *i at the opening quote: moves it past the closing one. */
static bool skip_string(const char *p, size_t n, size_t *i)
{
    for (size_t k = *i + 1; k < n; k++) {
        if (!STRING_STOP[(unsigned char)p[k]])
            continue;
        if (p[k] == '\\') {
            k++;
            continue;
        }
        *i = k + 1;
        return true;
    }
    return false;
}

/* *i at the first byte of a value: moves it past the value. */
static bool skip_value(const char *p, size_t n, size_t *i)
{
    size_t k = *i;
    int depth = 0;
    for (;;) {
        if (k >= n)
            return false;
        char c = p[k];
        if (c == '"') {
            if (!skip_string(p, n, &k))
                return false;
        } else if (c == '{' || c == '[') {
            depth++;
            k++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return false;
            depth--;
            k++;
        } else if (depth == 0) { /* a number, true, false or null */
            while (k < n && !is_ws(p[k]) && p[k] != ',' && p[k] != '}' && p[k] != ']')
                k++;
        } else {
            while (k < n && !NESTED_STOP[(unsigned char)p[k]])
                k++;
            continue;
        }
        if (depth == 0) {
            *i = k;
            return true;
        }
    }
}

/* The next member of an object whose '{' lies before *i: its key (quotes included) and value;
 * *i moves past the value. false at the closing brace (or on text that is not an object). */
static bool next_member(const char *p, size_t n, size_t *i, struct span *key, struct span *val)
{
    size_t k = skip_ws(p, n, *i);
    if (k < n && p[k] == ',')
        k = skip_ws(p, n, k + 1);
    if (k >= n || p[k] != '"')
        return false;
    key->off = k;
    if (!skip_string(p, n, &k))
        return false;
    key->len = k - key->off;
    k = skip_ws(p, n, k);
    if (k >= n || p[k] != ':')
        return false;
    k = skip_ws(p, n, k + 1);
    val->off = k;
    if (!skip_value(p, n, &k))
        return false;
    val->len = k - val->off;
    *i = k;
    return true;
}

static bool put(char *out, size_t cap, size_t *o, unsigned c)
{
    if (*o >= cap)
        return false;
    out[(*o)++] = (char)c;
    return true;
}

static long hex4(const char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(s[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* The bytes a JSON string s[0..n) (quotes included) stands for, into out (cap bytes): the
 * length, or -1 when longer than cap or malformed. */
static long key_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, end = n - 1; /* the closing quote */
    for (size_t i = 1; i < end;) {
        unsigned char c = (unsigned char)s[i];
        if (c != '\\') {
            if (!put(out, cap, &o, c))
                return -1;
            i++;
            continue;
        }
        if (i + 1 >= end)
            return -1;
        char e = s[i + 1];
        long cp;
        i += 2;
        switch (e) {
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            if (i + 4 > end || (cp = hex4(s + i)) < 0)
                return -1;
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= end && s[i] == '\\' && s[i + 1] == 'u') {
                long lo = hex4(s + i + 2);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            break;
        default: /* " \ / */
            cp = e;
            break;
        }
        bool ok;
        if (cp < 0x80) {
            ok = put(out, cap, &o, (unsigned)cp);
        } else if (cp < 0x800) {
            ok = put(out, cap, &o, 0xC0 | (unsigned)(cp >> 6)) &&
                 put(out, cap, &o, 0x80 | (unsigned)(cp & 0x3F));
        } else if (cp < 0x10000) {
            ok = put(out, cap, &o, 0xE0 | (unsigned)(cp >> 12)) &&
                 put(out, cap, &o, 0x80 | (unsigned)((cp >> 6) & 0x3F)) &&
                 put(out, cap, &o, 0x80 | (unsigned)(cp & 0x3F));
        } else {
            ok = put(out, cap, &o, 0xF0 | (unsigned)(cp >> 18)) &&
                 put(out, cap, &o, 0x80 | (unsigned)((cp >> 12) & 0x3F)) &&
                 put(out, cap, &o, 0x80 | (unsigned)((cp >> 6) & 0x3F)) &&
                 put(out, cap, &o, 0x80 | (unsigned)(cp & 0x3F));
        }
        if (!ok)
            return -1;
    }
    return (long)o;
}

/* ---- the body ------------------------------------------------------------------------------ */

struct field {
    struct span key, val;
    char name[SHAPE_KEY_MAX];
    long name_len;
    bool keep;
};

/* The members of fields[0..flen) into f (at most SHAPE_FIELDS_MAX; a key longer than
 * SHAPE_KEY_MAX, possible only in a hand-made row, is left out). The number found. */
static int fields_read(const char *fields, size_t flen, struct field *f)
{
    int nf = 0;
    size_t i = skip_ws(fields, flen, 0);
    if (i >= flen || fields[i] != '{')
        return 0;
    i++;
    while (nf < SHAPE_FIELDS_MAX && next_member(fields, flen, &i, &f[nf].key, &f[nf].val)) {
        f[nf].name_len =
            key_decode(fields + f[nf].key.off, f[nf].key.len, f[nf].name, sizeof f[nf].name);
        f[nf].keep = f[nf].name_len >= 0;
        nf++;
    }
    return nf;
}

/* Drops the fields named name[0..len). */
static void fields_drop(struct field *f, int nf, const char *name, size_t len)
{
    for (int i = 0; i < nf; i++)
        if (f[i].keep && (size_t)f[i].name_len == len && memcmp(f[i].name, name, len) == 0)
            f[i].keep = false;
}

/* Appends ,"key":value for every field kept; the first without its comma unless comma. */
static void fields_add(struct buf *out, const char *fields, const struct field *f, int nf,
                       bool comma)
{
    for (int i = 0; i < nf; i++) {
        if (!f[i].keep)
            continue;
        if (comma)
            buf_addc(out, ',');
        comma = true;
        buf_add(out, fields + f[i].key.off, f[i].key.len);
        buf_addc(out, ':');
        buf_add(out, fields + f[i].val.off, f[i].val.len);
    }
}

static void envelope(struct buf *out, const char *payload, size_t plen, const char *fields,
                     struct field *f, int nf, const char *event_id, const char *event_name)
{
    static const char *const reserved[] = {"id", "type", "timestamp", "data"};
    char ts[SHAPE_TS_LEN + 1];
    if (shape_timestamp(event_id, ts) < 0) /* every event id is a UUIDv7: not expected */
        memcpy(ts, "1970-01-01T00:00:00.000Z", sizeof ts);
    size_t a = skip_ws(payload, plen, 0), z = plen;
    while (z > a && is_ws(payload[z - 1]))
        z--;
    buf_adds(out, "{\"id\":");
    json_escape(out, event_id, strlen(event_id));
    buf_adds(out, ",\"type\":");
    json_escape(out, event_name, strlen(event_name));
    buf_adds(out, ",\"timestamp\":\"");
    buf_adds(out, ts);
    buf_adds(out, "\",\"data\":");
    buf_add(out, payload + a, z - a);
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        fields_drop(f, nf, reserved[i], strlen(reserved[i]));
    fields_add(out, fields, f, nf, true);
    buf_addc(out, '}');
}

void shape_body(struct buf *out, enum shape kind, const char *payload, size_t plen,
                const char *fields, size_t flen, const char *event_id, const char *event_name)
{
    struct field f[SHAPE_FIELDS_MAX];
    int nf = fields ? fields_read(fields, flen, f) : 0;
    if (kind == SHAPE_ENVELOPE) {
        envelope(out, payload, plen, fields, f, nf, event_id, event_name);
        return;
    }
    size_t a = skip_ws(payload, plen, 0), z = plen;
    while (z > a && is_ws(payload[z - 1]))
        z--;
    if (nf == 0 || a >= plen || payload[a] != '{' || payload[z - 1] != '}') {
        buf_add(out, payload, plen); /* not an object: delivered as triggered */
        return;
    }
    /* The payload's own keys win: drop the fields it has. A key longer than SHAPE_KEY_MAX
     * bytes cannot be one of them and is not decoded. */
    size_t i = a + 1;
    struct span k, v;
    bool members = false;
    char name[SHAPE_KEY_MAX];
    while (next_member(payload, z, &i, &k, &v)) {
        members = true;
        long len = k.len - 2 <= 6 * SHAPE_KEY_MAX
                       ? key_decode(payload + k.off, k.len, name, sizeof name)
                       : -1;
        if (len >= 0)
            fields_drop(f, nf, name, (size_t)len);
    }
    bool any = false;
    for (int n = 0; n < nf; n++)
        any = any || f[n].keep;
    if (!any) {
        buf_add(out, payload, plen);
        return;
    }
    buf_add(out, payload, z - 1);
    fields_add(out, fields, f, nf, members);
    buf_add(out, payload + z - 1, plen - (z - 1));
}
