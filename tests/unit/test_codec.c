/* Unit tests for common/codec.c: base64, hex, UTF-8 validation, JSON string escaping. */
#include "codec.h"
#include "mem.h"
#include "unit.h"

#include <stdlib.h>

static void test_b64_rfc4648(void)
{
    static const struct {
        const char *plain, *enc;
    } v[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = strlen(v[i].plain);
        char enc[16];
        CHECK_EQ_INT(b64_encoded_len(n), strlen(v[i].enc));
        CHECK_EQ_INT(b64_encode((const unsigned char *)v[i].plain, n, enc), strlen(v[i].enc));
        CHECK_STR(enc, v[i].enc);
        unsigned char dec[16];
        long d = b64_decode(v[i].enc, strlen(v[i].enc), dec, sizeof dec);
        CHECK_EQ_INT(d, n);
        CHECK(d >= 0 && memcmp(dec, v[i].plain, n) == 0);
    }
}

static void test_b64_round_trip(void)
{
    unsigned char in[300], out[300];
    char enc[512];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= 5; n++) {
        size_t e = b64_encode(in, n, enc);
        CHECK_EQ_INT(e, b64_encoded_len(n));
        CHECK_EQ_INT(strlen(enc), e);
        CHECK_EQ_INT(b64_decode(enc, e, out, sizeof out), n);
        CHECK(memcmp(in, out, n) == 0);
    }
    /* All 256 byte values. */
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    size_t e = b64_encode(all, sizeof all, enc);
    CHECK_EQ_INT(b64_decode(enc, e, out, sizeof out), 256);
    CHECK(memcmp(all, out, 256) == 0);
    CHECK_STR(enc + e - 4, "/w==");
    /* A vector with '+' and '/'. */
    unsigned char pm[3] = {0xfb, 0xff, 0xbf};
    b64_encode(pm, 3, enc);
    CHECK_STR(enc, "+/+/");
}

static void test_b64_decode_rejects(void)
{
    unsigned char out[64];
    CHECK_EQ_INT(b64_decode("Zg=", 3, out, sizeof out), -1);      /* length not a multiple of 4 */
    CHECK_EQ_INT(b64_decode("Zg", 2, out, sizeof out), -1);       /* padding required */
    CHECK_EQ_INT(b64_decode("Zm9v!A==", 8, out, sizeof out), -1); /* bad character */
    CHECK_EQ_INT(b64_decode("Zm 9", 4, out, sizeof out), -1);     /* whitespace */
    CHECK_EQ_INT(b64_decode("Zm9\n", 4, out, sizeof out), -1);
    CHECK_EQ_INT(b64_decode("Zm-_", 4, out, sizeof out), -1); /* URL alphabet */
    CHECK_EQ_INT(b64_decode("Z===", 4, out, sizeof out), -1); /* too much padding */
    CHECK_EQ_INT(b64_decode("====", 4, out, sizeof out), -1);
    CHECK_EQ_INT(b64_decode("Zg==Zm8=", 8, out, sizeof out), -1); /* padding in the middle */
    CHECK_EQ_INT(b64_decode("Z=g=", 4, out, sizeof out), -1);
    CHECK_EQ_INT(b64_decode("Zh==", 4, out, sizeof out), -1); /* non-zero pad bits */
    CHECK_EQ_INT(b64_decode("Zm9=", 4, out, sizeof out), -1);
    CHECK_EQ_INT(b64_decode("Zm9v\0\0\0\0", 8, out, sizeof out), -1); /* NUL bytes */
    /* Overflow: exactly fitting is fine, one byte short is not. */
    CHECK_EQ_INT(b64_decode("Zm9vYmFy", 8, out, 6), 6);
    CHECK_EQ_INT(b64_decode("Zm9vYmFy", 8, out, 5), -1);
    CHECK_EQ_INT(b64_decode("Zm9vYmE=", 8, out, 4), -1);
    CHECK_EQ_INT(b64_decode("Zg==", 4, out, 0), -1);
    CHECK_EQ_INT(b64_decode("", 0, out, 0), 0);
}

static void test_hex(void)
{
    char out[16];
    hex_encode((const unsigned char *)"\x00\x01\xab\xff", 4, out);
    CHECK_STR(out, "0001abff");
    hex_encode((const unsigned char *)"", 0, out);
    CHECK_STR(out, "");
}

static void test_hex_decode(void)
{
    unsigned char out[8];
    CHECK_EQ_INT(hex_decode("7b7D", 4, out, sizeof out), 2);
    CHECK(out[0] == 0x7b && out[1] == 0x7d);
    CHECK_EQ_INT(hex_decode("", 0, out, sizeof out), 0);
    CHECK_EQ_INT(hex_decode("7b7", 3, out, sizeof out), -1);  /* odd length */
    CHECK_EQ_INT(hex_decode("7g", 2, out, sizeof out), -1);   /* not hex */
    CHECK_EQ_INT(hex_decode("000102030405060708", 18, out, sizeof out), -1); /* too long */
    CHECK_EQ_INT(hex_value('0'), 0);
    CHECK_EQ_INT(hex_value('f'), 15);
    CHECK_EQ_INT(hex_value('F'), 15);
    CHECK_EQ_INT(hex_value('g'), -1);
    char enc[9];
    unsigned char in[4] = {0x00, 0xff, 0x10, 0xab}, back[4];
    hex_encode(in, 4, enc);
    CHECK_EQ_INT(hex_decode(enc, 8, back, sizeof back), 4);
    CHECK(memcmp(in, back, 4) == 0);
}

static void test_utf8(void)
{
    CHECK(utf8_valid("", 0));
    CHECK(utf8_valid("plain ascii", 11));
    CHECK(utf8_valid("\xc3\xa9", 2));          /* é */
    CHECK(utf8_valid("\xe2\x82\xac", 3));      /* € */
    CHECK(utf8_valid("\xf0\x9f\x98\x80", 4));  /* 😀 */
    CHECK(utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    CHECK(utf8_valid("\xed\x9f\xbf", 3));      /* U+D7FF */
    CHECK(utf8_valid("\xee\x80\x80", 3));      /* U+E000 */
    CHECK(utf8_valid("a\0b", 3));              /* NUL is valid UTF-8 */
    CHECK(!utf8_valid("\xc0\x80", 2));         /* overlong NUL */
    CHECK(!utf8_valid("\xc1\xbf", 2));         /* overlong */
    CHECK(!utf8_valid("\xe0\x80\xaf", 3));     /* overlong '/' */
    CHECK(!utf8_valid("\xf0\x80\x80\xaf", 4)); /* overlong */
    CHECK(!utf8_valid("\xed\xa0\x80", 3));     /* U+D800 surrogate */
    CHECK(!utf8_valid("\xed\xbf\xbf", 3));     /* U+DFFF surrogate */
    CHECK(!utf8_valid("\xf4\x90\x80\x80", 4)); /* U+110000 */
    CHECK(!utf8_valid("\xf5\x80\x80\x80", 4));
    CHECK(!utf8_valid("\xff", 1));
    CHECK(!utf8_valid("\xfe", 1));
    CHECK(!utf8_valid("\x80", 1));         /* stray continuation */
    CHECK(!utf8_valid("\xc3", 1));         /* truncated */
    CHECK(!utf8_valid("\xe2\x82", 2));     /* truncated */
    CHECK(!utf8_valid("\xf0\x9f\x98", 3)); /* truncated */
    CHECK(!utf8_valid("\xc3\xa9", 1));     /* truncated by n */
    CHECK(!utf8_valid("\xc3\x41", 2));     /* bad continuation */
    CHECK(!utf8_valid("\xe2\x28\xa1", 3));
}

static void check_escape(const char *in, size_t n, const char *want, int line)
{
    struct buf b = {0};
    json_escape(&b, in, n);
    if (!unit_check(b.data && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0, __FILE__,
                    line, "json_escape"))
        fprintf(stderr, "    got \"%s\", want \"%s\"\n", b.data ? b.data : "(null)", want);
    buf_free(&b);
}

static void test_json_escape(void)
{
    check_escape("", 0, "\"\"", __LINE__);
    check_escape("abc", 3, "\"abc\"", __LINE__);
    check_escape("a\"b", 3, "\"a\\\"b\"", __LINE__);
    check_escape("a\\b", 3, "\"a\\\\b\"", __LINE__);
    check_escape("a\nb", 3, "\"a\\nb\"", __LINE__);
    check_escape("\r\t\b\f", 4, "\"\\r\\t\\b\\f\"", __LINE__);
    check_escape("\x01", 1, "\"\\u0001\"", __LINE__);
    check_escape("\x1f", 1, "\"\\u001f\"", __LINE__);
    check_escape("a\0b", 3, "\"a\\u0000b\"", __LINE__);
    check_escape("/\x7f", 2, "\"/\x7f\"", __LINE__);
    check_escape("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", __LINE__);
    check_escape("a\xff!", 3, "\"a\xef\xbf\xbd!\"", __LINE__);
    /* Each invalid byte becomes one U+FFFD. */
    check_escape("\xc0\x80", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"", __LINE__);
    check_escape("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"", __LINE__);
    check_escape("x\xe2\x82", 3, "\"x\xef\xbf\xbd\xef\xbf\xbd\"", __LINE__);

    /* Appends to what is already there. */
    struct buf b = {0};
    buf_adds(&b, "k=");
    json_escape(&b, "v", 1);
    CHECK_STR(b.data, "k=\"v\"");
    buf_free(&b);
}

static void test_json_error_body(void)
{
    struct buf b = {0};
    json_error_body(&b, "invalid_field", "a \"quoted\" name\n");
    CHECK_STR(b.data, "{\"error\":{\"code\":\"invalid_field\",\"message\":"
                      "\"a \\\"quoted\\\" name\\n\"}}");
    buf_free(&b);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_b64_rfc4648();
    test_b64_round_trip();
    test_b64_decode_rejects();
    test_hex();
    test_hex_decode();
    test_utf8();
    test_json_escape();
    test_json_error_body();
    return unit_done(argv[0]);
}
