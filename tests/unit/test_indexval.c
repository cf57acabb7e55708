/* Unit tests for common/indexval.c: the event index value round trip and what the decoder
 * refuses. */
#include "indexval.h"
#include "unit.h"

static const char ID[] = "0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b";

static bool dec(const char *s, struct indexval *out)
{
    return indexval_decode(s, strlen(s), out);
}

static void test_round_trip(void)
{
    char v[INDEXVAL_SIZE];
    struct indexval iv;
    CHECK_EQ_INT(indexval_encode(v, ID), INDEXVAL_LEN);
    CHECK_EQ_INT(strlen(v), INDEXVAL_LEN);
    CHECK_STR(v, "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"}");
    CHECK(indexval_decode(v, INDEXVAL_LEN, &iv));
    CHECK_STR(iv.id, ID);
    CHECK_STR(iv.status, "active");
    /* an upper-case id is written and read back lowercased */
    CHECK_EQ_INT(indexval_encode(v, "0190B0A2-3C4D-7E5F-8A6B-1C2D3E4F5A6B"), INDEXVAL_LEN);
    CHECK(dec(v, &iv));
    CHECK_STR(iv.id, ID);
    /* another status word is read as such (the caller decides what it means) */
    CHECK(dec("{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"x\"}", &iv));
    CHECK_STR(iv.status, "x");
    CHECK(dec("{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"abcdefghijklmnop\"}",
              &iv));
    CHECK_STR(iv.status, "abcdefghijklmnop");
}

static void test_filter(void)
{
    struct buf b = {0};
    struct indexval iv;
    char v[INDEXVAL_SIZE];
    /* without a filter: byte for byte the plain value */
    indexval_encode_filter(&b, ID, NULL, 0);
    indexval_encode(v, ID);
    CHECK_EQ_INT(b.len, INDEXVAL_LEN);
    CHECK_STR(b.data, v);
    CHECK(dec(v, &iv) && iv.filter == NULL && iv.filter_len == 0);
    buf_reset(&b);
    static const char f[] = "{\"a\": {\"$gt\": 1}, \"b\": \"}\"}";
    indexval_encode_filter(&b, ID, f, sizeof f - 1);
    CHECK_STR(b.data, "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\","
                      "\"filter\":{\"a\": {\"$gt\": 1}, \"b\": \"}\"}}");
    CHECK(indexval_decode(b.data, b.len, &iv));
    CHECK_STR(iv.id, ID);
    CHECK_STR(iv.status, "active");
    CHECK(iv.filter_len == sizeof f - 1 && iv.filter && memcmp(iv.filter, f, sizeof f - 1) == 0);
    /* the smallest filter */
    CHECK(dec("{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\","
              "\"filter\":{}}",
              &iv) &&
          iv.filter_len == 2);
    static const char *const bad[] = {
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"filter\":}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"filter\":1}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"filter\":{}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"filter\":[]}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"filte\":{}}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\" ,\"filter\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!CHECK(!dec(bad[i], &iv)))
            fprintf(stderr, "    accepted: %s\n", bad[i]);
    /* cut anywhere: refused */
    buf_reset(&b);
    indexval_encode_filter(&b, ID, "{}", 2);
    for (size_t n = 0; n < b.len; n++)
        CHECK(!indexval_decode(b.data, n, &iv));
    buf_free(&b);
}

static void test_refused(void)
{
    static const char *const bad[] = {
        "",
        "{}",
        "{\"id\":\"\",\"status\":\"active\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6\",\"status\":\"active\"}",   /* short id */
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6bb\",\"status\":\"active\"}", /* long id */
        "{\"id\":\"0190b0a2x3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"}",  /* not a uuid */
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6g\",\"status\":\"active\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"\"}", /* no status */
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"Active\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"act ive\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"abcdefghijklmnopq\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"} ", /* trailing */
        " {\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"}", /* leading */
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"",   /* cut */
        "{\"id\": \"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"}",
        "{\"status\":\"active\",\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\"}", /* order */
        "{\"x\":1,\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\"}",
        "{\"id\":\"0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b\",\"status\":\"active\",\"x\":1}",
        "0190b0a2-3c4d-7e5f-8a6b-1c2d3e4f5a6b",
    };
    struct indexval iv;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (!CHECK(!dec(bad[i], &iv)))
            fprintf(stderr, "    accepted: %s\n", bad[i]);
    }
    CHECK(!indexval_decode(NULL, 0, &iv));
    /* the length given counts, not a NUL: a valid value cut short, or with a NUL inside */
    char v[INDEXVAL_SIZE + 8];
    indexval_encode(v, ID);
    for (size_t n = 0; n < INDEXVAL_LEN; n++)
        CHECK(!indexval_decode(v, n, &iv));
    v[INDEXVAL_LEN] = 'x';
    CHECK(!indexval_decode(v, INDEXVAL_LEN + 1, &iv));
    v[INDEXVAL_LEN] = '\0';
    CHECK(!indexval_decode(v, INDEXVAL_LEN + 1, &iv));
    v[10] = '\0';
    CHECK(!indexval_decode(v, INDEXVAL_LEN, &iv));
}

int main(int argc, char **argv)
{
    (void)argc;
    test_round_trip();
    test_filter();
    test_refused();
    return unit_done(argv[0]);
}
