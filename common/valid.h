/* Validation of event names, webhook URLs, custom headers and path segments. Pure functions
 * (URL parsing uses libcurl's curl_url(), the same parser the worker's requests use). */
#ifndef WH_VALID_H
#define WH_VALID_H

#include <stdbool.h>
#include <stddef.h>

#define EVENT_NAME_MAX 128
#define WEBHOOK_URL_MAX 2048
#define HEADER_NAME_MAX 256
#define HEADER_VALUE_MAX 4096
#define HEADERS_MAX_COUNT 32
#define IDEMPOTENCY_KEY_MAX 255

/* [A-Za-z0-9._:-]{1,128}, exact bytes (no decoding done here). */
bool valid_event_name(const char *s, size_t n);

/* A tenant id (issue 13): [A-Za-z0-9_-]{1,64}, exact bytes. */
#define TENANT_ID_MAX 64
bool valid_tenant(const char *s, size_t n);

/* Names under EVENT_NAME_RESERVED ("broker.", exact case) are the broker's own operational
 * events: anyone may subscribe to them, only the broker triggers them. */
#define EVENT_NAME_RESERVED "broker."
bool event_name_reserved(const char *s, size_t n);

/* An e-mail alert destination (worker/mail.c), accepted for EVENT_NAME_RESERVED names only:
 * "mailto:" (lower case) and one bare address local@domain, at most MAILTO_MAX bytes in all.
 * Local part: letters, digits and !#$&'*+/=^_`{|}~.- (no leading, trailing or double dot);
 * domain: dot-separated labels of letters, digits and '-' (1 to 63 bytes, no '-' at either
 * end). No percent-encoding, no query (?subject=...), no second address, no spaces, angle
 * brackets or control characters. 0, or -1 with a reason in err. */
#define MAILTO_PREFIX "mailto:"
#define MAILTO_MAX 254
int valid_mailto(const char *url, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* An Idempotency-Key header value: 1..IDEMPOTENCY_KEY_MAX bytes of printable ASCII (0x20 to
 * 0x7e; HTTP has already removed spaces around the value). */
bool valid_idempotency_key(const char *s, size_t n);

/* The host of a webhook URL as a resolver takes it: IPv4 literals in dotted-quad form whatever
 * their spelling ("127.1", "0x7f000001" and "2130706433" all give "127.0.0.1", as libcurl
 * dials them), IPv6 literals without brackets or zone id, names as written. */
struct url_host {
    char name[WEBHOOK_URL_MAX + 1];
    bool https; /* the scheme is https */
};

/* http or https only (scheme case-insensitive), a non-empty host (an IPv6 literal, or
 * letters, digits, '-', '.', '_' and UTF-8 for internationalised names; not percent-encoded),
 * no userinfo, no fragment, at most WEBHOOK_URL_MAX bytes, no CR, LF, NUL, tab, space or
 * backslash anywhere, must be valid UTF-8 and parse with curl_url(). 0 when acceptable, with
 * the host in *out unless out is NULL; -1 with a reason in err ("webhookUrl must use http or
 * https"). */
int valid_webhook_url(const char *url, size_t n, struct url_host *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* A custom header the subscriber asked us to send. Name: RFC 7230 token characters,
 * 1..HEADER_NAME_MAX bytes, not one we set or that controls framing (case-insensitive):
 * host, content-length, content-type, transfer-encoding, connection, keep-alive, upgrade,
 * te, trailer, expect, proxy-*, user-agent, and any name starting with "webhook-".
 * Value: at most HEADER_VALUE_MAX bytes, valid UTF-8, no CR, LF or NUL (other control
 * characters except tab are refused too). 0 when acceptable; -1 with a reason in err. */
int valid_header(const char *name, const char *value, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Percent-decodes one path segment in[0..n) into out (capacity outcap, NUL-terminated).
 * Rejects malformed escapes ("%G1", "%4"), "%00", and a result longer than outcap - 1.
 * Returns the decoded length or -1. '+' is left as is. */
long path_segment_decode(const char *in, size_t n, char *out, size_t outcap);

#endif
