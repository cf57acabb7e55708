/* Unit tests for common/jsonv.c: strict RFC 8259 validation and duplicate-key detection. */
#include "jsonv.h"
#include "mem.h"
#include "unit.h"

#include <stdlib.h>

static char last_err[256];

static int validate(const char *p, size_t n)
{
    last_err[0] = '\0';
    return jsonv_validate(p, n, last_err, sizeof last_err);
}

static void ok_n(const char *p, size_t n, int line)
{
    if (!unit_check(validate(p, n) == 0, __FILE__, line, "valid JSON accepted"))
        fprintf(stderr, "    input \"%.*s\": %s\n", (int)(n > 80 ? 80 : n), p, last_err);
}

static void bad_n(const char *p, size_t n, int line)
{
    int rc = validate(p, n);
    if (!unit_check(rc == -1, __FILE__, line, "invalid JSON rejected"))
        fprintf(stderr, "    input \"%.*s\" was accepted\n", (int)(n > 80 ? 80 : n), p);
    else
        unit_check(strncmp(last_err, "invalid JSON at byte ", 21) == 0, __FILE__, line,
                   "error message names the byte offset");
}

/* Literal lengths, so embedded NULs count. */
#define OK(lit) ok_n(lit, sizeof(lit) - 1, __LINE__)
#define BAD(lit) bad_n(lit, sizeof(lit) - 1, __LINE__)

static void test_valid_docs(void)
{
    OK("{}");
    OK("[]");
    OK("null");
    OK("true");
    OK("false");
    OK("0");
    OK("-0");
    OK("10");
    OK("1.5e-3");
    OK("-12.75E+2");
    OK("1e308");
    OK("1.7976931348623157e308");
    OK("-1.7976931348623157e308");
    OK("1e-400"); /* underflow is not overflow */
    OK("0e99999999999999999999");
    OK("0.000000000000000000000000000000000000001e300");
    OK("\"\"");
    OK("\"plain\"");
    OK("\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\u20AC\"");
    OK("\"\\uD83D\\uDE00\"");
    OK("\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\"");
    OK("\"\x7f\"");
    OK(" \t\r\n{\"a\": [1, 2.5, \"x\", null, true, false, {\"b\": {}}, []]} \r\n\t ");
    OK("{\"a\":{\"b\":{\"c\":[[[{\"d\":\"e\"}]]]}},\"f\":-1}");
    OK("[ ]");
    OK("{ }");
    OK("[1,[2,[3]]]");
}

static void test_invalid_docs(void)
{
    BAD("");
    BAD(" ");
    BAD(" \n\t\r ");
    BAD("{} x");
    BAD("{}{}");
    BAD("[] []");
    BAD("1 2");
    BAD("\"\\u0000\"");
    BAD("\"a\x01"
        "b\"");
    BAD("\"a\x1f\"");
    BAD("\"\xc0\x80\"");     /* overlong */
    BAD("\"\xed\xa0\x80\""); /* encoded surrogate */
    BAD("\"\xff\"");
    BAD("\"\xe2\x82\"");         /* truncated sequence, then the quote */
    BAD("\"\xe2\x82");           /* truncated at the end of input */
    BAD("\"\xf4\x90\x80\x80\""); /* above U+10FFFF */
    BAD("\xef\xbb\xbf{}");       /* BOM */
    BAD("\"\\uD800\"");
    BAD("\"\\uDC00\"");
    BAD("\"\\uD83D\"");
    BAD("\"\\uD83Dx\"");
    BAD("\"\\uD83D\\u0041\"");
    BAD("\"\\uDE00\\uD83D\"");
    BAD("\"\\u12\"");
    BAD("\"\\u12G4\"");
    BAD("\"\\x41\"");
    BAD("\"\\'\"");
    BAD("\"abc");
    BAD("\"abc\\");
    BAD("01");
    BAD("-01");
    BAD("00");
    BAD("1.");
    BAD(".5");
    BAD("+1");
    BAD("-");
    BAD("1e");
    BAD("1e+");
    BAD("1.e5");
    BAD("0x10");
    BAD("1e400");
    BAD("-1e400");
    BAD("1.8e308");
    BAD("0.1e310");
    BAD("NaN");
    BAD("Infinity");
    BAD("-Infinity");
    BAD("'a'");
    BAD("{'a':1}");
    BAD("[1,]");
    BAD("[1,2,]");
    BAD("{\"a\":1,}");
    BAD("[,1]");
    BAD("{,}");
    BAD("\"a\nb\"");
    BAD("\"a\tb\"");
    BAD("{\"a\" 1}");
    BAD("{\"a\":}");
    BAD("{a:1}");
    BAD("{\"a\":1");
    BAD("[1");
    BAD("[");
    BAD("{");
    BAD("]");
    BAD("tru");
    BAD("truex");
    BAD("nul");
    BAD("True");
    BAD("[1 2]");
    BAD("{\"a\":1 \"b\":2}");
    BAD("{} \x0b"); /* vertical tab is not JSON whitespace */
    BAD("\f{}");
    BAD("{}\0");
    BAD("\0");
    BAD("/* c */ {}");
}

static void test_error_offset(void)
{
    CHECK_EQ_INT(validate("{} x", 4), -1);
    CHECK(strstr(last_err, "at byte 3") != NULL);
    CHECK_EQ_INT(validate("[1,2,]", 6), -1);
    CHECK(strstr(last_err, "at byte 5") != NULL);
    CHECK_EQ_INT(validate("\"ab\x01\"", 5), -1);
    CHECK(strstr(last_err, "at byte 3") != NULL);
    CHECK_EQ_INT(validate("", 0), -1);
    CHECK(strstr(last_err, "at byte 0") != NULL);
    /* A NULL or zero-sized error buffer is fine. */
    CHECK_EQ_INT(jsonv_validate("x", 1, NULL, 0), -1);
    char tiny[8];
    CHECK_EQ_INT(jsonv_validate("x", 1, tiny, sizeof tiny), -1);
    CHECK_EQ_INT(strlen(tiny), sizeof tiny - 1);
}

static void test_never_reads_past_n(void)
{
    /* Heap copies without a NUL terminator, so ASan catches any over-read. */
    static const char *const docs[] = {"\"abc",  "\"\\u12", "\"\\uD83D\\uDE0", "1e",     "-", "[1,",
                                       "{\"a\"", "tru",     "\"\xf0\x9f\x98",  "1.5e-3", "{}"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        size_t n = strlen(docs[i]);
        char *p = xmalloc(n);
        memcpy(p, docs[i], n);
        int rc = validate(p, n);
        CHECK_EQ_INT(rc, i >= 9 ? 0 : -1);
        free(p);
    }
}

/* Numbers written out in full: the overflow check does not depend on an exponent. */
static void test_long_numbers(void)
{
    struct buf b = {0};
    buf_adds(&b, "1");
    for (int i = 0; i < 308; i++)
        buf_addc(&b, '0');
    CHECK_EQ_INT(validate(b.data, b.len), 0); /* 1e308 */
    buf_addc(&b, '0');
    CHECK_EQ_INT(validate(b.data, b.len), -1); /* 1e309 */
    buf_reset(&b);
    buf_adds(&b, "-0.");
    for (int i = 0; i < 5000; i++)
        buf_addc(&b, '0');
    buf_adds(&b, "1e5300");
    CHECK_EQ_INT(validate(b.data, b.len), 0); /* about -1e299 */
    buf_reset(&b);
    buf_adds(&b, "0.");
    for (int i = 0; i < 5000; i++)
        buf_addc(&b, '9');
    CHECK_EQ_INT(validate(b.data, b.len), 0);
    buf_free(&b);
}

static void test_depth(void)
{
    char doc[2 * 70];
    for (int depth = 63; depth <= 66; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++)
            doc[n++] = '[';
        for (int i = 0; i < depth; i++)
            doc[n++] = ']';
        int rc = validate(doc, n);
        CHECK_EQ_INT(rc, depth <= JSONV_MAX_DEPTH ? 0 : -1);
    }
    /* Objects count too, mixed with arrays. */
    struct buf b = {0};
    for (int i = 0; i < 32; i++)
        buf_adds(&b, "{\"a\":[");
    for (int i = 0; i < 32; i++)
        buf_adds(&b, "]}");
    CHECK_EQ_INT(validate(b.data, b.len), 0); /* 64 levels */
    buf_reset(&b);
    buf_adds(&b, "[");
    for (int i = 0; i < 32; i++)
        buf_adds(&b, "{\"a\":[");
    for (int i = 0; i < 32; i++)
        buf_adds(&b, "]}");
    buf_adds(&b, "]");
    CHECK_EQ_INT(validate(b.data, b.len), -1); /* 65 levels */
    CHECK(strstr(last_err, "deeper") != NULL);
    /* Deep nesting far past the limit is refused without exhausting the stack. */
    buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        buf_addc(&b, '[');
    CHECK_EQ_INT(validate(b.data, b.len), -1);
    buf_free(&b);
}

static void test_large_document(void)
{
    struct buf b = {0};
    buf_adds(&b, "{\"items\":[");
    for (int i = 0; b.len < 200 * 1024; i++)
        buf_printf(&b, "%s{\"id\":%d,\"name\":\"item \\u00e9 %d\",\"price\":%d.25,\"ok\":true}",
                   i ? "," : "", i, i, i);
    buf_adds(&b, "]}");
    CHECK(b.len >= 200 * 1024);
    CHECK_EQ_INT(validate(b.data, b.len), 0);
    /* The same document with one bad byte near the end is rejected at that byte. */
    b.data[b.len - 10] = '\x01';
    CHECK_EQ_INT(validate(b.data, b.len), -1);
    char want[64];
    snprintf(want, sizeof want, "at byte %zu:", b.len - 10);
    CHECK(strstr(last_err, want) != NULL);
    buf_free(&b);
}

static void check_dups(const char *json, bool want, int line)
{
    cJSON *doc = cJSON_Parse(json);
    if (!unit_check(doc != NULL, __FILE__, line, "cJSON_Parse"))
        return;
    unit_check(jsonv_has_dup_keys(doc) == want, __FILE__, line, json);
    cJSON_Delete(doc);
}

static void test_dup_keys(void)
{
    check_dups("{\"a\":1,\"a\":2}", true, __LINE__);
    check_dups("{\"a\":1,\"b\":2}", false, __LINE__);
    check_dups("{\"a\":1,\"b\":2,\"a\":3}", true, __LINE__);
    check_dups("{\"a\":{\"x\":1,\"x\":2},\"b\":2}", false, __LINE__); /* nested: not checked */
    check_dups("{\"A\":1,\"a\":2}", false, __LINE__);                 /* case matters */
    check_dups("{}", false, __LINE__);
    check_dups("{\"a\":1}", false, __LINE__);
    check_dups("[1,1]", false, __LINE__);
    check_dups("\"a\"", false, __LINE__);
    CHECK(!jsonv_has_dup_keys(NULL));

    /* Large objects take the sorting path. */
    struct buf b = {0};
    buf_adds(&b, "{");
    for (int i = 0; i < 500; i++)
        buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    buf_adds(&b, "}");
    check_dups(b.data, false, __LINE__);
    b.data[b.len - 1] = '\0';
    b.len--;
    buf_adds(&b, ",\"k250\":1}");
    check_dups(b.data, true, __LINE__);
    buf_free(&b);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_valid_docs();
    test_invalid_docs();
    test_error_offset();
    test_never_reads_past_n();
    test_long_numbers();
    test_depth();
    test_large_document();
    test_dup_keys();
    return unit_done(argv[0]);
}
