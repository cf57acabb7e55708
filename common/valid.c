/* Validation of event names, webhook URLs, custom headers and path segments. Pure functions
 * (URL parsing uses libcurl's curl_url(), the same parser the worker's requests use). */
#include "valid.h"

#include "codec.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool valid_event_name(const char *s, size_t n)
{
    if (!s || n == 0 || n > EVENT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

bool valid_tenant(const char *s, size_t n)
{
    if (n < 1 || n > TENANT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool event_name_reserved(const char *s, size_t n)
{
    size_t p = sizeof EVENT_NAME_RESERVED - 1;
    return s && n >= p && memcmp(s, EVENT_NAME_RESERVED, p) == 0;
}

int valid_mailto(const char *url, size_t n, char *err, size_t errlen)
{
    size_t p = sizeof MAILTO_PREFIX - 1;
    if (!url || n < p || memcmp(url, MAILTO_PREFIX, p) != 0) {
        set_err(err, errlen, "a mailto: URL must start with \"mailto:\"");
        return -1;
    }
    if (n > MAILTO_MAX) {
        set_err(err, errlen, "a mailto: URL is at most 254 bytes");
        return -1;
    }
    const char *a = url + p, *end = url + n;
    const char *at = memchr(a, '@', (size_t)(end - a));
    if (!at || at == a || at + 1 == end || memchr(at + 1, '@', (size_t)(end - at - 1))) {
        set_err(err, errlen, "a mailto: URL takes one address, local@domain");
        return -1;
    }
    static const char local_extra[] = "!#$&'*+/=^_`{|}~.-";
    for (const char *c = a; c < at; c++) {
        if (!is_alnum((unsigned char)*c) && (!*c || !strchr(local_extra, *c))) {
            set_err(err, errlen,
                    "the address of a mailto: URL may use letters, digits and !#$&'*+/=^_`{|}~.- "
                    "before the @ (no percent-encoding, query or second address)");
            return -1;
        }
        if (*c == '.' && (c == a || c + 1 == at || c[1] == '.')) {
            set_err(err, errlen, "the address of a mailto: URL has a misplaced dot");
            return -1;
        }
    }
    const char *label = at + 1;
    for (const char *c = at + 1;; c++) {
        if (c == end || *c == '.') {
            size_t len = (size_t)(c - label);
            if (len == 0 || len > 63 || label[0] == '-' || c[-1] == '-') {
                set_err(err, errlen, "the domain of a mailto: URL must be dot-separated labels "
                                     "of letters, digits and '-'");
                return -1;
            }
            if (c == end)
                break;
            label = c + 1;
        } else if (!is_alnum((unsigned char)*c) && *c != '-') {
            set_err(err, errlen, "the domain of a mailto: URL must be dot-separated labels of "
                                 "letters, digits and '-'");
            return -1;
        }
    }
    return 0;
}

bool valid_idempotency_key(const char *s, size_t n)
{
    if (!s || n == 0 || n > IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e)
            return false;
    }
    return true;
}

/* Reads one part of a parsed URL; *out is NULL when the part is absent. Caller curl_free()s. */
static CURLUcode url_part(CURLU *u, CURLUPart what, char **out)
{
    *out = NULL;
    CURLUcode rc = curl_url_get(u, what, out, 0);
    if (rc != CURLUE_OK)
        *out = NULL;
    return rc;
}

int valid_webhook_url(const char *url, size_t n, struct url_host *out, char *err, size_t errlen)
{
    if (!url || n == 0) {
        set_err(err, errlen, "webhookUrl must not be empty");
        return -1;
    }
    if (n > WEBHOOK_URL_MAX) {
        set_err(err, errlen, "webhookUrl is longer than 2048 bytes");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = url[i];
        if (c == '\r' || c == '\n' || c == '\0' || c == '\t' || c == ' ') {
            set_err(err, errlen, "webhookUrl must not contain spaces or control characters");
            return -1;
        }
        if (c == '\\') {
            set_err(err, errlen, "webhookUrl must not contain backslashes");
            return -1;
        }
        if (c == '#') {
            set_err(err, errlen, "webhookUrl must not contain a fragment");
            return -1;
        }
    }
    if (!utf8_valid(url, n)) {
        set_err(err, errlen, "webhookUrl must be valid UTF-8");
        return -1;
    }

    char text[WEBHOOK_URL_MAX + 1];
    memcpy(text, url, n);
    text[n] = '\0';

    int ret = -1;
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *fragment = NULL;
    CURLU *u = curl_url();
    if (!u) {
        set_err(err, errlen, "webhookUrl could not be checked (out of memory)");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, text, 0) != CURLUE_OK) {
        set_err(err, errlen, "webhookUrl is not a valid absolute http or https URL");
        goto out_free_url;
    }
    if (url_part(u, CURLUPART_SCHEME, &scheme) != CURLUE_OK || !scheme ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        set_err(err, errlen, "webhookUrl must use http or https");
        goto out_free_url;
    }
    /* curl tolerates "http:/host" and reads "http:///path" as host "path"; insist on the
     * canonical "scheme://authority" so what we accept is what a reader sees. */
    size_t slen = strlen(scheme);
    if (n < slen + 4 || memcmp(text + slen, "://", 3) != 0 || text[slen + 3] == '/') {
        set_err(err, errlen, "webhookUrl must have the form http(s)://host/path");
        goto out_free_url;
    }
    url_part(u, CURLUPART_USER, &user);
    url_part(u, CURLUPART_PASSWORD, &password);
    if (user || password) {
        set_err(err, errlen, "webhookUrl must not contain a user name or password");
        goto out_free_url;
    }
    if (url_part(u, CURLUPART_HOST, &host) != CURLUE_OK || !host || host[0] == '\0') {
        set_err(err, errlen, "webhookUrl must have a host");
        goto out_free_url;
    }
    /* Percent-encoding in the host would be decoded by libcurl after its IPv4 normalisation:
     * "%30" is the name "0", which the resolver reads as 0.0.0.0. Only a bracketed IPv6
     * zone id ("[fe80::1%25eth0]") may contain '%'. */
    const char *auth = text + slen + 3, *rb = NULL;
    size_t alen = strcspn(auth, "/?#");
    if (auth[0] == '[')
        rb = memchr(auth, ']', alen);
    const char *after = rb ? rb + 1 : auth;
    if (memchr(after, '%', alen - (size_t)(after - auth))) {
        set_err(err, errlen, "webhookUrl host must not be percent-encoded");
        goto out_free_url;
    }
    if (host[0] != '[') {
        /* A DNS name (internationalised ones as UTF-8) or an IPv4 literal: nothing else, so
         * that no "%", "!" or "$" reaches the resolver. IPv6 literals were checked by curl. */
        for (const char *c = host; *c; c++) {
            if (!is_alnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_' &&
                (unsigned char)*c < 0x80) {
                set_err(err, errlen,
                        "webhookUrl host may only contain letters, digits, '-', '.' and '_'");
                goto out_free_url;
            }
        }
    }
    url_part(u, CURLUPART_FRAGMENT, &fragment);
    if (fragment) {
        set_err(err, errlen, "webhookUrl must not contain a fragment");
        goto out_free_url;
    }
    if (out) {
        /* the host as a resolver takes it: IPv6 literals without brackets (nor zone id) */
        const char *h = host;
        size_t hl = strlen(host);
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
            h++;
            hl -= 2;
        }
        if (hl >= sizeof out->name) { /* cannot happen: a host is at most the URL's length */
            set_err(err, errlen, "webhookUrl host is too long");
            goto out_free_url;
        }
        memcpy(out->name, h, hl);
        out->name[hl] = '\0';
        out->https = strcasecmp(scheme, "https") == 0;
    }
    ret = 0;

out_free_url:
    curl_free(fragment);
    curl_free(password);
    curl_free(user);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ret;
}

/* RFC 7230 tchar. */
static bool is_tchar(unsigned char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Headers the worker sets itself or that control framing or the connection. */
static bool header_reserved(const char *name, size_t n)
{
    static const char *const exact[] = {
        "host",       "content-length", "content-type", "transfer-encoding",
        "connection", "keep-alive",     "upgrade",      "te",
        "trailer",    "expect",         "user-agent",
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strlen(exact[i]) == n && strncasecmp(name, exact[i], n) == 0)
            return true;
    return (n >= 6 && strncasecmp(name, "proxy-", 6) == 0) ||
           (n >= 8 && strncasecmp(name, "webhook-", 8) == 0);
}

int valid_header(const char *name, const char *value, char *err, size_t errlen)
{
    if (!name || !value) {
        set_err(err, errlen, "header name and value are required");
        return -1;
    }
    size_t nlen = strnlen(name, HEADER_NAME_MAX + 1);
    if (nlen == 0 || nlen > HEADER_NAME_MAX) {
        set_err(err, errlen, "header names must be 1 to 256 bytes long");
        return -1;
    }
    for (size_t i = 0; i < nlen; i++) {
        if (!is_tchar((unsigned char)name[i])) {
            set_err(err, errlen, "header names may only contain HTTP token characters");
            return -1;
        }
    }
    if (header_reserved(name, nlen)) {
        if (err && errlen)
            snprintf(err, errlen, "header \"%s\" is set by the broker and cannot be overridden",
                     name);
        return -1;
    }
    size_t vlen = strnlen(value, HEADER_VALUE_MAX + 1);
    if (vlen > HEADER_VALUE_MAX) {
        set_err(err, errlen, "header values must be at most 4096 bytes long");
        return -1;
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F) {
            set_err(err, errlen, "header values must not contain CR, LF or control characters");
            return -1;
        }
    }
    if (!utf8_valid(value, vlen)) {
        set_err(err, errlen, "header values must be valid UTF-8");
        return -1;
    }
    return 0;
}


long path_segment_decode(const char *in, size_t n, char *out, size_t outcap)
{
    if (outcap == 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0' || o >= outcap - 1)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}
