/* Unit tests for common/valid.c: event names, idempotency keys, webhook URLs, custom headers,
 * path segments. */
#include "mem.h"
#include "unit.h"
#include "valid.h"

#include <stdlib.h>
#include <string.h>

#define NAME_OK(lit) CHECK(valid_event_name(lit, sizeof(lit) - 1))
#define NAME_BAD(lit) CHECK(!valid_event_name(lit, sizeof(lit) - 1))

static void test_event_names(void)
{
    NAME_OK("book.created");
    NAME_OK("a");
    NAME_OK("A-Z_0.9:x");
    NAME_OK("order:v2.shipped-late_x");
    NAME_BAD("");
    NAME_BAD("a/b");
    NAME_BAD("a b");
    NAME_BAD("a*");
    NAME_BAD("a?");
    NAME_BAD("a[1]");
    NAME_BAD("a%2Fb");
    NAME_BAD("\xc3\xa9"); /* é */
    NAME_BAD("a\0b");
    NAME_BAD("a\n");
    CHECK(!valid_event_name(NULL, 0));

    char name[EVENT_NAME_MAX + 2];
    memset(name, 'x', sizeof name);
    CHECK(valid_event_name(name, 128));
    CHECK(!valid_event_name(name, 129));
}

#define KEY_OK(lit) CHECK(valid_idempotency_key(lit, sizeof(lit) - 1))
#define KEY_BAD(lit) CHECK(!valid_idempotency_key(lit, sizeof(lit) - 1))

static void test_idempotency_keys(void)
{
    KEY_OK("a");
    KEY_OK("order-42/retry 1");
    KEY_OK(" !~");
    KEY_OK("550e8400-e29b-41d4-a716-446655440000");
    KEY_BAD("");
    KEY_BAD("a\tb");
    KEY_BAD("a\x7f");
    KEY_BAD("a\x1f");
    KEY_BAD("\xc3\xa9"); /* é */
    KEY_BAD("a\0b");
    KEY_BAD("a\r\n");
    CHECK(!valid_idempotency_key(NULL, 0));

    char key[IDEMPOTENCY_KEY_MAX + 1];
    memset(key, '~', sizeof key);
    CHECK(valid_idempotency_key(key, 255));
    CHECK(!valid_idempotency_key(key, 256));
}

static char url_err[256];

static int url_check(const char *u, size_t n)
{
    url_err[0] = '\0';
    return valid_webhook_url(u, n, NULL, url_err, sizeof url_err);
}

static void url_ok(const char *u, size_t n, int line)
{
    if (!unit_check(url_check(u, n) == 0, __FILE__, line, "URL accepted"))
        fprintf(stderr, "    \"%.*s\": %s\n", (int)n, u, url_err);
}

static void url_bad(const char *u, size_t n, int line)
{
    if (!unit_check(url_check(u, n) == -1, __FILE__, line, "URL refused"))
        fprintf(stderr, "    \"%.*s\" was accepted\n", (int)(n > 80 ? 80 : n), u);
    else
        unit_check(strncmp(url_err, "webhookUrl ", 11) == 0, __FILE__, line, "reason given");
}

#define URL_OK(lit) url_ok(lit, sizeof(lit) - 1, __LINE__)
#define URL_BAD(lit) url_bad(lit, sizeof(lit) - 1, __LINE__)

static void test_urls(void)
{
    URL_OK("http://example.com/x");
    URL_OK("https://example.com:8443/p?q=1");
    URL_OK("http://127.0.0.1:9000/hook"); /* private targets are the SSRF layer's business */
    URL_OK("http://[::1]:80/");
    URL_OK("HTTPS://Example.COM/Hooks");
    URL_OK("http://example.com");
    URL_OK("https://example.com/p%20q?a=b&c=%2F");
    URL_OK("https://m\xc3\xbcnchen.example/x"); /* UTF-8 host */

    URL_OK("http://my_host-1.example./x");
    URL_BAD("http://2%25%25/");
    URL_BAD("http://ex%61mple.com/");
    URL_BAD("http://%30/");
    URL_BAD("http://%31%32%37.0.0.1:80/");
    URL_OK("http://[fe80::1%25eth0]/"); /* a zone id (the guard refuses link-local anyway) */
    URL_OK("http://example.com/%30?%31=%32");
    URL_BAD("http://a!b.example/");
    URL_BAD("http://a$b.example/");
    URL_BAD("http://a*b.example/");
    URL_BAD("ftp://x");
    URL_BAD("file:///etc/passwd");
    URL_BAD("gopher://example.com/");
    URL_BAD("javascript:alert(1)");
    URL_BAD("http://");
    URL_BAD("http:///path");
    URL_BAD("http:/example.com/");
    URL_BAD("http:example.com");
    URL_BAD("//example.com");
    URL_BAD("http://user:pw@example.com/");
    URL_BAD("http://user@example.com/");
    URL_BAD("http://@example.com/");
    URL_BAD("http://:@example.com/");
    URL_BAD("http://good.example@127.0.0.1/");
    URL_BAD("http://exa mple.com");
    URL_BAD("http://example.com/\r\nX: y");
    URL_BAD("http://example.com/\n");
    URL_BAD("http://example.com/\t");
    URL_BAD("http://example.com/a\0b");
    URL_BAD("http://example.com\\@evil.com/");
    URL_BAD("http:\\\\example.com\\");
    URL_BAD("example.com");
    URL_BAD("http://example.com/#frag");
    URL_BAD("http://example.com/#");
    URL_BAD("http://example.com:99999/");
    URL_BAD("http://example.com/\xff");
    URL_BAD("http://\xc0\xae.com/");
    URL_BAD(" http://example.com/");
    URL_BAD("");
    CHECK_EQ_INT(valid_webhook_url(NULL, 0, NULL, NULL, 0), -1);
    /* Scheme message as in the API documentation. */
    CHECK_EQ_INT(url_check("ftp://x", 7), -1);
    CHECK_STR(url_err, "webhookUrl must use http or https");

    /* Length: 2048 bytes is fine, 2049 is not. */
    char *u = xmalloc(WEBHOOK_URL_MAX + 2);
    const char *prefix = "https://example.com/";
    size_t pl = strlen(prefix);
    memcpy(u, prefix, pl);
    memset(u + pl, 'a', WEBHOOK_URL_MAX + 1 - pl);
    u[WEBHOOK_URL_MAX + 1] = '\0';
    url_ok(u, WEBHOOK_URL_MAX, __LINE__);
    url_bad(u, WEBHOOK_URL_MAX + 1, __LINE__);
    free(u);

    /* Only n bytes are looked at: no NUL terminator needed. */
    const char *longer = "http://example.com/xyz junk";
    url_ok(longer, 22, __LINE__);
}

static char hdr_err[256];

static void hdr_ok(const char *name, const char *value, int line)
{
    hdr_err[0] = '\0';
    if (!unit_check(valid_header(name, value, hdr_err, sizeof hdr_err) == 0, __FILE__, line,
                    "header accepted"))
        fprintf(stderr, "    \"%s: %s\": %s\n", name, value, hdr_err);
}

static void hdr_bad(const char *name, const char *value, int line)
{
    hdr_err[0] = '\0';
    if (!unit_check(valid_header(name, value, hdr_err, sizeof hdr_err) == -1, __FILE__, line,
                    "header refused"))
        fprintf(stderr, "    \"%s\" was accepted\n", name);
    else
        unit_check(hdr_err[0] != '\0', __FILE__, line, "reason given");
}

#define HDR_OK(n, v) hdr_ok(n, v, __LINE__)
#define HDR_BAD(n, v) hdr_bad(n, v, __LINE__)

static void test_headers(void)
{
    HDR_OK("X-Team", "books");
    HDR_OK("x-trace_id", "a\tb");
    HDR_OK("Authorization", "Bearer abc.def");
    HDR_OK("X-Empty", "");
    HDR_OK("X-Cafe", "caf\xc3\xa9"); /* UTF-8 value */
    HDR_OK("!#$%&'*+-.^_`|~09AZaz", "v");
    HDR_OK("Webhook", "not the webhook- prefix");
    HDR_OK("Hosts", "not host");

    HDR_BAD("Host", "example.com");
    HDR_BAD("host", "example.com");
    HDR_BAD("Content-Length", "1");
    HDR_BAD("content-length", "1");
    HDR_BAD("CONTENT-LENGTH", "1");
    HDR_BAD("Content-Type", "text/plain");
    HDR_BAD("Webhook-Signature", "v1,x");
    HDR_BAD("webhook-id", "x");
    HDR_BAD("WEBHOOK-TIMESTAMP", "1");
    HDR_BAD("User-Agent", "x");
    HDR_BAD("Transfer-Encoding", "chunked");
    HDR_BAD("Connection", "close");
    HDR_BAD("Keep-Alive", "1");
    HDR_BAD("Upgrade", "h2c");
    HDR_BAD("TE", "trailers");
    HDR_BAD("Trailer", "x");
    HDR_BAD("Expect", "100-continue");
    HDR_BAD("Proxy-Authorization", "x");
    HDR_BAD("proxy-connection", "x");
    HDR_BAD("Bad Name", "x");
    HDR_BAD("X:Y", "x");
    HDR_BAD("", "x");
    HDR_BAD("X-\xc3\xa9", "x");
    HDR_BAD("X(1)", "x");
    HDR_BAD("X-Team", "a\rb");
    HDR_BAD("X-Team", "a\nb");
    HDR_BAD("X-Team", "a\r\nX-Injected: 1");
    HDR_BAD("X-Team", "a\x01");
    HDR_BAD("X-Team", "a\x7f");
    HDR_BAD("X-Team", "\xff");
    HDR_BAD("X-Team", "\xc0\x80");
    CHECK_EQ_INT(valid_header(NULL, "x", NULL, 0), -1);
    CHECK_EQ_INT(valid_header("X-A", NULL, NULL, 0), -1);

    char *big = xmalloc(HEADER_VALUE_MAX + 2);
    memset(big, 'v', HEADER_VALUE_MAX + 1);
    big[HEADER_VALUE_MAX + 1] = '\0';
    HDR_BAD("X-Big", big); /* 4097 bytes */
    big[HEADER_VALUE_MAX] = '\0';
    HDR_OK("X-Big", big); /* 4096 bytes */
    free(big);

    char name[HEADER_NAME_MAX + 2];
    memset(name, 'n', sizeof name - 1);
    name[HEADER_NAME_MAX + 1] = '\0';
    HDR_BAD(name, "x"); /* 257 bytes */
    name[HEADER_NAME_MAX] = '\0';
    HDR_OK(name, "x"); /* 256 bytes */
}

static void decode_is(const char *in, const char *want, int line)
{
    char out[64];
    long n = path_segment_decode(in, strlen(in), out, sizeof out);
    if (!unit_check(n >= 0 && (size_t)n == strlen(want) && strcmp(out, want) == 0, __FILE__, line,
                    "path_segment_decode"))
        fprintf(stderr, "    \"%s\" -> %ld \"%s\", want \"%s\"\n", in, n, n >= 0 ? out : "", want);
}

static void decode_bad(const char *in, size_t n, int line)
{
    char out[64];
    unit_check(path_segment_decode(in, n, out, sizeof out) == -1, __FILE__, line, in);
}

#define DEC_BAD(lit) decode_bad(lit, sizeof(lit) - 1, __LINE__)

static void test_path_segments(void)
{
    decode_is("book.created", "book.created", __LINE__);
    decode_is("", "", __LINE__);
    decode_is("a%2Fb", "a/b", __LINE__);
    decode_is("a%2fb", "a/b", __LINE__);
    decode_is("%2541", "%41", __LINE__); /* decoded once only */
    decode_is("a+b", "a+b", __LINE__);
    decode_is("%41%42c", "ABc", __LINE__);
    decode_is("%C3%A9", "\xc3\xa9", __LINE__);
    /* "a%2Fb" decodes, and the caller then refuses it as an event name. */
    char out[64];
    long n = path_segment_decode("a%2Fb", 5, out, sizeof out);
    CHECK_EQ_INT(n, 3);
    CHECK(!valid_event_name(out, (size_t)n));

    DEC_BAD("%00");
    DEC_BAD("a%00b");
    DEC_BAD("a\0b");
    DEC_BAD("%4");
    DEC_BAD("%");
    DEC_BAD("abc%");
    DEC_BAD("%G1");
    DEC_BAD("%1G");
    DEC_BAD("%%41");

    /* Capacity: the result and its NUL must fit. */
    char small[4];
    CHECK_EQ_INT(path_segment_decode("abc", 3, small, sizeof small), 3);
    CHECK_STR(small, "abc");
    CHECK_EQ_INT(path_segment_decode("abcd", 4, small, sizeof small), -1);
    CHECK_EQ_INT(path_segment_decode("%41%42%43", 9, small, sizeof small), 3);
    CHECK_EQ_INT(path_segment_decode("%41%42%43%44", 12, small, sizeof small), -1);
    CHECK_EQ_INT(path_segment_decode("", 0, small, 1), 0);
    CHECK_EQ_INT(path_segment_decode("a", 1, small, 1), -1);
    CHECK_EQ_INT(path_segment_decode("", 0, small, 0), -1);
    /* Only n bytes are read. */
    CHECK_EQ_INT(path_segment_decode("ab%4", 2, out, sizeof out), 2);
}

static void test_url_hosts(void)
{
    static const struct {
        const char *url, *host;
        bool https;
    } cases[] = {
        {"https://example.com/hook", "example.com", true},
        {"HTTP://Example.COM:8080/x?y=1", "Example.COM", false},
        {"http://127.1/", "127.0.0.1", false},
        {"http://0x7f000001/", "127.0.0.1", false},
        {"http://2130706433/", "127.0.0.1", false},
        {"http://0177.0.0.1/", "127.0.0.1", false},
        {"http://0/", "0.0.0.0", false},
        {"http://[::1]:8080/", "::1", false},
        {"http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", false},
        {"http://[fe80::1%25lo]/", "fe80::1", false},
        {"https://localhost./", "localhost.", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct url_host h = {.https = !cases[i].https};
        const char *u = cases[i].url;
        CHECK_EQ_INT(valid_webhook_url(u, strlen(u), &h, NULL, 0), 0);
        CHECK_STR(h.name, cases[i].host);
        CHECK_EQ_INT(h.https, cases[i].https);
    }
    /* a refused URL leaves out alone */
    struct url_host h = {.name = "untouched"};
    CHECK_EQ_INT(valid_webhook_url("not a url", 9, &h, NULL, 0), -1);
    CHECK_STR(h.name, "untouched");
    CHECK_EQ_INT(valid_webhook_url("http://%30/", 11, &h, NULL, 0), -1);
    CHECK_STR(h.name, "untouched");
    CHECK_EQ_INT(valid_webhook_url("http://exam.co/", 15, &h, NULL, 0), 0);
    CHECK_STR(h.name, "exam.co");
}

#define MAILTO_OK(lit) CHECK(valid_mailto(lit, sizeof(lit) - 1, err, sizeof err) == 0)
#define MAILTO_BAD(lit) CHECK(valid_mailto(lit, sizeof(lit) - 1, err, sizeof err) < 0)

static void test_mailto(void)
{
    char err[256];
    MAILTO_OK("mailto:ops@example.com");
    MAILTO_OK("mailto:a.b+alerts@mail.example-1.org");
    MAILTO_OK("mailto:x@localhost");
    MAILTO_BAD("mailto:");
    MAILTO_BAD("MAILTO:ops@example.com");
    MAILTO_BAD("mailto:ops");
    MAILTO_BAD("mailto:@example.com");
    MAILTO_BAD("mailto:ops@");
    MAILTO_BAD("mailto:a@b@example.com");
    MAILTO_BAD("mailto:ops@example.com,evil@example.com");
    MAILTO_BAD("mailto:ops@example.com?subject=x");
    MAILTO_BAD("mailto:ops%40x@example.com");
    MAILTO_BAD("mailto:ops@example.com\r\nRCPT TO:<x@y>");
    MAILTO_BAD("mailto:<ops@example.com>");
    MAILTO_BAD("mailto:o ps@example.com");
    MAILTO_BAD("mailto:.ops@example.com");
    MAILTO_BAD("mailto:ops.@example.com");
    MAILTO_BAD("mailto:o..ps@example.com");
    MAILTO_BAD("mailto:ops@-example.com");
    MAILTO_BAD("mailto:ops@example..com");
    MAILTO_BAD("mailto:ops@example.com.");
    MAILTO_BAD("mailto:ops@exa_mple.com");
    MAILTO_BAD("mailto:ops@ex\xc3\xa9.com");
    MAILTO_BAD("http://example.com/");
    CHECK(valid_mailto("mailto:a\0b@example.com", 21, err, sizeof err) < 0);
    char longer[300] = "mailto:";
    memset(longer + 7, 'a', 250);
    memcpy(longer + 257, "@x.io", 6);
    CHECK(valid_mailto(longer, strlen(longer), err, sizeof err) < 0);
}

static void test_reserved_event_names(void)
{
    CHECK(event_name_reserved("broker.endpoint.disabled", 24));
    CHECK(event_name_reserved("broker.", 7));
    CHECK(!event_name_reserved("broker", 6));
    CHECK(!event_name_reserved("Broker.endpoint.disabled", 24)); /* names are exact case */
    CHECK(!event_name_reserved("brokers.x", 9));
    CHECK(!event_name_reserved("my.broker.x", 11));
    CHECK(!event_name_reserved("", 0));
}

int main(int argc, char **argv)
{
    (void)argc;
    test_event_names();
    test_reserved_event_names();
    test_mailto();
    test_idempotency_keys();
    test_urls();
    test_headers();
    test_path_segments();
    test_url_hosts();
    return unit_done(argv[0]);
}
