/* Byte encodings: base64, hex, UTF-8 validation and JSON string escaping. Pure functions. */
#include "codec.h"

#include <string.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < n) {
        unsigned long v = (unsigned long)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned long)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* Value of one base64 character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict: length a multiple of 4, '=' only as the last one or two characters of the last
 * quantum, and the unused bits before the padding must be zero (one canonical spelling). */
long b64_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int pad = 0;
        if (last && in[i + 3] == '=')
            pad = in[i + 2] == '=' ? 2 : 1;
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - pad; k++) {
            v[k] = b64_value((unsigned char)in[i + k]);
            if (v[k] < 0)
                return -1;
        }
        if (pad == 1 && (v[2] & 3) != 0)
            return -1;
        if (pad == 2 && (v[1] & 15) != 0)
            return -1;
        size_t nbytes = 3 - (size_t)pad;
        if (nbytes > outcap - o) /* o <= outcap always holds */
            return -1;
        unsigned long w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                          (unsigned long)v[2] << 6 | (unsigned long)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (nbytes > 1)
            out[o++] = (unsigned char)(w >> 8);
        if (nbytes > 2)
            out[o++] = (unsigned char)w;
    }
    return (long)o;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Length of the well-formed UTF-8 sequence starting at p[0] (at most n bytes available), or 0
 * when it is not one: a stray continuation byte, an overlong form, a surrogate, a code point
 * above U+10FFFF, or a sequence cut short. Table 3-7 of the Unicode standard. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0;
    if (len > n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool utf8_valid(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_seq_len(u + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

void json_escape(struct buf *b, const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    buf_reserve(b, n + 2);
    buf_addc(b, '"');
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t len = utf8_seq_len(u + i, n - i);
            if (len == 0) {
                buf_add(b, "\xEF\xBF\xBD", 3); /* U+FFFD for each invalid byte */
                i++;
            } else {
                buf_add(b, u + i, len);
                i += len;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"':
            buf_add(b, "\\\"", 2);
            break;
        case '\\':
            buf_add(b, "\\\\", 2);
            break;
        case '\n':
            buf_add(b, "\\n", 2);
            break;
        case '\r':
            buf_add(b, "\\r", 2);
            break;
        case '\t':
            buf_add(b, "\\t", 2);
            break;
        case '\b':
            buf_add(b, "\\b", 2);
            break;
        case '\f':
            buf_add(b, "\\f", 2);
            break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', digits[c >> 4], digits[c & 15]};
                buf_add(b, esc, sizeof esc);
            } else {
                buf_addc(b, (char)c);
            }
        }
    }
    buf_addc(b, '"');
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long hex_decode(const char *in, size_t len, unsigned char *out, size_t outcap)
{
    if (len % 2 || len / 2 > outcap)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value(in[i]), lo = hex_value(in[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

void json_error_body(struct buf *b, const char *code, const char *msg)
{
    buf_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
    json_escape(b, msg, strlen(msg));
    buf_adds(b, "}}");
}
