/* Levelled, printf-checked logging to stderr with a context tag (request, job or subscription id),
 * as text or as one JSON object per line (LOG_FORMAT, docs/decisions.md 34). */
#include "log.h"

#include "ids.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;
static const char *program = "webhook";
static bool json;

int log_set_level(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            log_min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_set_format(const char *name)
{
    if (strcmp(name, "text") == 0)
        json = false;
    else if (strcmp(name, "json") == 0)
        json = true;
    else
        return -1;
    return 0;
}

void log_set_program(const char *name)
{
    program = name;
}

/* The JSON member a context goes into (see enum log_ctx). */
static const char *ctx_field(enum log_ctx kind, const char *ctx)
{
    static const char *const uuid_kinds[] = {"jobId", "eventId", "subscriptionId", "recoveryId"};
    if (strncmp(ctx, "req-", 4) == 0)
        return "requestId";
    if (strncmp(ctx, "conn-", 5) == 0)
        return "connectionId";
    if (id_valid(ctx, strlen(ctx)))
        return (unsigned)kind < sizeof uuid_kinds / sizeof uuid_kinds[0] ? uuid_kinds[kind] : "id";
    return "module";
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 if there is none:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, min = 0x80, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, min = 0x800, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, min = 0x10000, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Appends the n bytes of s to out[*len..cap) as the inside of a JSON string: quotes, backslashes
 * and control characters escaped, each byte that is not part of well-formed UTF-8 replaced by
 * \ufffd. Stops before an escape or a character that would not fit whole (truncation). */
static void json_escape(char *out, size_t *len, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = *len;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *put = esc;
        size_t k = 2, adv = 1;
        unsigned char c = u[i];
        esc[0] = '\\';
        if (c == '"' || c == '\\')
            esc[1] = (char)c;
        else if (c == '\n')
            esc[1] = 'n';
        else if (c == '\r')
            esc[1] = 'r';
        else if (c == '\t')
            esc[1] = 't';
        else if (c < 0x20 || c == 0x7f) {
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        } else if ((adv = utf8_len(u + i, n - i)) == 0) {
            memcpy(esc + 1, "ufffd", 5);
            k = 6;
            adv = 1;
        } else {
            put = s + i;
            k = adv;
        }
        if (o + k > cap)
            break;
        memcpy(out + o, put, k);
        o += k;
        i += adv;
    }
    *len = o;
}

static void json_raw(char *out, size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n <= cap) {
        memcpy(out + *len, s, n);
        *len += n;
    }
}

void log_write(enum log_level lvl, enum log_ctx kind, const char *ctx, const char *fmt, ...)
{
    static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n;
    if (json) /* the message first, escaped into out below */
        n = 0;
    else
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s %s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), program, (int)getpid(), tags[lvl], ctx ? ctx : "",
                     ctx ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    if (!json) {
        line[len++] = '\n';
        /* One write() per line so lines from concurrent processes do not interleave. */
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w;
        return;
    }
    /* Escaping at most sextuples a byte; a line longer than out ends its message early. The
     * members before the message are short: the program name, an id or a module name. */
    char out[4096];
    const size_t cap = sizeof out - 3; /* room for "}\n */
    int h = snprintf(out, sizeof out,
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                     "\"process\":\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), names[lvl]);
    size_t o = h > 0 && (size_t)h < sizeof out ? (size_t)h : 0;
    json_escape(out, &o, 256, program, strlen(program));
    char pid[40];
    snprintf(pid, sizeof pid, "\",\"pid\":%d", (int)getpid());
    json_raw(out, &o, cap, pid);
    if (ctx) {
        json_raw(out, &o, cap, ",\"");
        json_raw(out, &o, cap, ctx_field(kind, ctx));
        json_raw(out, &o, cap, "\":\"");
        json_escape(out, &o, 768, ctx, strlen(ctx));
        json_raw(out, &o, cap, "\"");
    }
    json_raw(out, &o, cap, ",\"message\":\"");
    json_escape(out, &o, cap, line, len);
    memcpy(out + o, "\"}\n", 3);
    ssize_t w = write(STDERR_FILENO, out, o + 3);
    (void)w;
}
