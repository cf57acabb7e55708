/* Unit tests for common/shape.c: payloadFields checks and canonical text, the UUIDv7 time, and
 * the delivered body (envelope, raw with fields merged, the clash rule, non-object payloads,
 * escaped and non-ASCII keys, a big payload). */
#include <stdlib.h>

#include "jsonv.h"
#include "shape.h"
#include "unit.h"

#define ID "018bcfe5-687b-7abc-8def-0123456789ab" /* 2023-11-14T22:13:20.123Z */

static char err[256];

/* shape_body into a NUL-terminated string (caller frees). */
static char *body(enum shape kind, const char *payload, const char *fields)
{
    struct buf b = {0};
    shape_body(&b, kind, payload, strlen(payload), fields, fields ? strlen(fields) : 0, ID,
               "order.created");
    buf_addc(&b, '\0');
    return buf_steal(&b, NULL);
}

#define BODY(kind, payload, fields, want)                                                          \
    do {                                                                                           \
        char *got_ = body(kind, payload, fields);                                                  \
        CHECK_STR(got_, want);                                                                     \
        CHECK(jsonv_validate(got_, strlen(got_), err, sizeof err) == 0);                           \
        free(got_);                                                                                \
    } while (0)

/* shape_fields_check on text; the canonical text in out (or the error in err). */
static int fields(const char *text, char *out, size_t n)
{
    cJSON *v = cJSON_Parse(text);
    struct buf c = {0};
    err[0] = '\0';
    int rc = shape_fields_check(v, &c, err, sizeof err);
    snprintf(out, n, "%s", c.data ? c.data : "");
    buf_free(&c);
    cJSON_Delete(v);
    return rc;
}

static void test_parse(void)
{
    enum shape s = SHAPE_ENVELOPE;
    CHECK(shape_parse("raw", &s) == 0 && s == SHAPE_RAW);
    CHECK(shape_parse("envelope", &s) == 0 && s == SHAPE_ENVELOPE);
    CHECK(shape_parse("Envelope", &s) < 0);
    CHECK(shape_parse("", &s) < 0);
}

static void test_fields_check(void)
{
    char out[8192];
    CHECK(fields("{}", out, sizeof out) == 0);
    CHECK_STR(out, "{}");
    CHECK(fields("{ \"env\" : \"prod\", \"n\": [1, 2.5, {\"a\": null}], \"é\": true }", out,
                 sizeof out) == 0);
    CHECK_STR(out, "{\"env\":\"prod\",\"n\":[1,2.5,{\"a\":null}],\"é\":true}");
    CHECK(fields("[]", out, sizeof out) < 0);
    CHECK(strstr(err, "payloadFields") != NULL);
    CHECK(fields("\"x\"", out, sizeof out) < 0);
    CHECK(fields("{\"\": 1}", out, sizeof out) < 0);
    CHECK(strstr(err, "payloadFields keys") != NULL);
    CHECK(fields("{\"a\": 1, \"a\": 2}", out, sizeof out) < 0);
    CHECK(strstr(err, "twice") != NULL);

    /* 128-byte key accepted, 129 refused */
    char key[200], text[400];
    memset(key, 'k', 128);
    key[128] = '\0';
    snprintf(text, sizeof text, "{\"%s\": 1}", key);
    CHECK(fields(text, out, sizeof out) == 0);
    memset(key, 'k', 129);
    key[129] = '\0';
    snprintf(text, sizeof text, "{\"%s\": 1}", key);
    CHECK(fields(text, out, sizeof out) < 0);

    /* 20 members accepted, 21 refused */
    struct buf t = {0};
    buf_addc(&t, '{');
    for (int i = 0; i < 21; i++) {
        buf_printf(&t, "%s\"f%d\":%d", i ? "," : "", i, i);
        if (i == 19) {
            buf_adds(&t, "}");
            CHECK(fields(t.data, out, sizeof out) == 0);
            t.len--;
        }
    }
    buf_adds(&t, "}");
    CHECK(fields(t.data, out, sizeof out) < 0);
    CHECK(strstr(err, "more than 20") != NULL);
    buf_free(&t);

    /* 4096 bytes of compact text accepted, 4097 refused: {"a":"<s>"} is 8 + len(s) */
    struct buf big = {0};
    buf_adds(&big, "{\"a\":\"");
    for (int i = 0; i < 4088; i++)
        buf_addc(&big, 'x');
    buf_adds(&big, "\"}");
    CHECK(fields(big.data, out, sizeof out) == 0);
    CHECK_EQ_INT(strlen(out), 4096);
    big.len -= 2;
    buf_adds(&big, "x\"}");
    CHECK(fields(big.data, out, sizeof out) < 0);
    CHECK(strstr(err, "4096 bytes") != NULL);
    buf_free(&big);
}

static void test_timestamp(void)
{
    char ts[SHAPE_TS_LEN + 1];
    CHECK(shape_timestamp(ID, ts) == 0);
    CHECK_STR(ts, "2023-11-14T22:13:20.123Z");
    CHECK(shape_timestamp("00000000-0000-7000-8000-000000000000", ts) == 0);
    CHECK_STR(ts, "1970-01-01T00:00:00.000Z");
    CHECK(shape_timestamp("018BCFE5-687B-7abc-8def-0123456789ab", ts) == 0);
    CHECK_STR(ts, "2023-11-14T22:13:20.123Z");
    CHECK(shape_timestamp("018bcfe5x687b-7abc-8def-0123456789ab", ts) < 0);
    CHECK(shape_timestamp("zz", ts) < 0);
    CHECK(shape_timestamp("ffffffff-ffff-7abc-8def-0123456789ab", ts) < 0); /* year 10889 */
}

static void test_envelope(void)
{
    const char *env = "{\"id\":\"" ID "\",\"type\":\"order.created\","
                      "\"timestamp\":\"2023-11-14T22:13:20.123Z\",\"data\":";
    char want[1024];
    snprintf(want, sizeof want, "%s{\"a\": 1.50}}", env);
    BODY(SHAPE_ENVELOPE, "{\"a\": 1.50}", NULL, want); /* numbers as sent */
    snprintf(want, sizeof want, "%s[1,2]}", env);
    BODY(SHAPE_ENVELOPE, " \n[1,2]\t\r\n", NULL, want); /* outer whitespace trimmed */
    snprintf(want, sizeof want, "%s\"text\"}", env);
    BODY(SHAPE_ENVELOPE, "\"text\"", NULL, want);
    snprintf(want, sizeof want, "%s12345678901234567890123}", env);
    BODY(SHAPE_ENVELOPE, "12345678901234567890123", NULL, want);
    /* fields after data; the envelope's four keys cannot be replaced */
    snprintf(want, sizeof want, "%s{\"id\":7},\"env\":\"prod\",\"x\":[1]}", env);
    BODY(SHAPE_ENVELOPE, "{\"id\":7}",
         "{\"id\":\"mine\",\"env\":\"prod\",\"type\":1,\"timestamp\":2,\"data\":3,\"x\":[1]}",
         want);
    snprintf(want, sizeof want, "%snull}", env);
    BODY(SHAPE_ENVELOPE, "null", "{\"\\u0064ata\":1}", want); /* "data" escaped */
    BODY(SHAPE_ENVELOPE, "null", "{}", want);

    /* an event name that needs escaping cannot happen (names are A-Z a-z 0-9 . _ : -), but the
     * name is escaped anyway */
    struct buf b = {0};
    shape_body(&b, SHAPE_ENVELOPE, "1", 1, NULL, 0, ID, "a\"b");
    buf_addc(&b, '\0');
    CHECK(strstr(b.data, "\"type\":\"a\\\"b\"") != NULL);
    buf_free(&b);
}

static void test_raw(void)
{
    /* no fields, or fields that all clash: the payload byte for byte */
    BODY(SHAPE_RAW, " {\"a\" : 1 }\n", NULL, " {\"a\" : 1 }\n");
    BODY(SHAPE_RAW, " {\"a\" : 1 }\n", "{}", " {\"a\" : 1 }\n");
    BODY(SHAPE_RAW, " {\"a\" : 1 }\n", "{\"a\":2}", " {\"a\" : 1 }\n");
    /* merged before the closing brace, the payload's whitespace kept */
    BODY(SHAPE_RAW, " {\"a\" : 1 }\n", "{\"a\":2,\"b\":{\"c\":[]},\"d\":\"x\"}",
         " {\"a\" : 1 ,\"b\":{\"c\":[]},\"d\":\"x\"}\n");
    BODY(SHAPE_RAW, "{}", "{\"b\":1}", "{\"b\":1}");
    BODY(SHAPE_RAW, "{ \n }", "{\"b\":1,\"c\":2}", "{ \n \"b\":1,\"c\":2}");
    /* nested keys do not clash; only the top level counts */
    BODY(SHAPE_RAW, "{\"o\":{\"b\":1},\"s\":\"}\\\"b\\\"\",\"l\":[{\"b\":2}]}", "{\"b\":3}",
         "{\"o\":{\"b\":1},\"s\":\"}\\\"b\\\"\",\"l\":[{\"b\":2}],\"b\":3}");
    /* strings ending in an escaped backslash, long strings with escaped quotes */
    BODY(SHAPE_RAW, "{\"s\":\"end\\\\\",\"b\":0}", "{\"b\":1,\"c\":2}",
         "{\"s\":\"end\\\\\",\"b\":0,\"c\":2}");
    BODY(SHAPE_RAW,
         "{\"l\":\"0123456789012345678901234567890123456789\\\"b\\\":1,\\\\\\\"\"}",
         "{\"b\":1}",
         "{\"l\":\"0123456789012345678901234567890123456789\\\"b\\\":1,\\\\\\\"\",\"b\":1}");
    /* scalars at the end of the payload */
    BODY(SHAPE_RAW, "{\"t\":true,\"n\":-1.5e3,\"z\":null}", "{\"b\":1}",
         "{\"t\":true,\"n\":-1.5e3,\"z\":null,\"b\":1}");
    /* not an object: delivered as triggered, fields not merged */
    BODY(SHAPE_RAW, "[1,{\"a\":2}]", "{\"b\":1}", "[1,{\"a\":2}]");
    BODY(SHAPE_RAW, " \"text\" ", "{\"b\":1}", " \"text\" ");
    BODY(SHAPE_RAW, "42", "{\"b\":1}", "42");
    BODY(SHAPE_RAW, "null", "{\"b\":1}", "null");
}

static void test_unicode_keys(void)
{
    /* keys compare decoded: "\u00e9" in the payload is the field "é" */
    BODY(SHAPE_RAW, "{\"\\u00e9\":1}", "{\"é\":2,\"f\":3}", "{\"\\u00e9\":1,\"f\":3}");
    BODY(SHAPE_RAW, "{\"é\":1}", "{\"\\u00e9\":2}", "{\"é\":1}");
    /* a surrogate pair against the raw 4-byte UTF-8 */
    BODY(SHAPE_RAW, "{\"\\ud83d\\ude00\":1}", "{\"😀\":2}", "{\"\\ud83d\\ude00\":1}");
    BODY(SHAPE_RAW, "{\"a\\/b\":1,\"c\\nd\":1}", "{\"a/b\":2,\"c\\nd\":2,\"q\":\"日本\"}",
         "{\"a\\/b\":1,\"c\\nd\":1,\"q\":\"日本\"}");
    /* a key longer than SHAPE_KEY_MAX in the payload cannot clash */
    struct buf p = {0}, want = {0};
    buf_adds(&p, "{\"");
    for (int i = 0; i < 300; i++)
        buf_addc(&p, 'k');
    buf_adds(&p, "\":1}");
    buf_add(&want, p.data, p.len - 1);
    buf_adds(&want, ",\"k\":2}");
    buf_addc(&p, '\0');
    buf_addc(&want, '\0');
    BODY(SHAPE_RAW, p.data, "{\"k\":2}", want.data);
    buf_free(&p);
    buf_free(&want);
}

static void test_big(void)
{
    /* 1 MiB payload: one pass over it, the fields at the end */
    struct buf p = {0};
    buf_adds(&p, "{\"items\":[");
    for (int i = 0; p.len < (1 << 20); i++)
        buf_printf(&p, "%s{\"id\":%d,\"name\":\"item \\\"%d\\\"\",\"tags\":[\"x\",\"y\"]}",
                   i ? "," : "", i, i);
    buf_adds(&p, "],\"id\":\"last\"}");
    struct buf out = {0};
    shape_body(&out, SHAPE_RAW, p.data, p.len, "{\"id\":0,\"env\":\"prod\"}", 22, ID, "big");
    CHECK_EQ_INT(out.len, p.len + 13);
    CHECK(memcmp(out.data, p.data, p.len - 1) == 0);
    CHECK(memcmp(out.data + p.len - 1, ",\"env\":\"prod\"}", 14) == 0);
    CHECK(jsonv_validate(out.data, out.len, err, sizeof err) == 0);
    buf_reset(&out);
    shape_body(&out, SHAPE_ENVELOPE, p.data, p.len, NULL, 0, ID, "big");
    CHECK(jsonv_validate(out.data, out.len, err, sizeof err) == 0);
    CHECK(out.len > p.len && memcmp(out.data + out.len - p.len - 1, p.data, p.len) == 0);
    buf_free(&out);
    buf_free(&p);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_parse();
    test_fields_check();
    test_timestamp();
    test_envelope();
    test_raw();
    test_unicode_keys();
    test_big();
    return unit_done(argv[0]);
}
