/* Unit tests for common/secretbox.c: key parsing, the key ring, sealing and opening, tamper
 * detection, wrong keys and contexts, rotation. */
#include "codec.h"
#include "secretbox.h"
#include "unit.h"

#include <stdbool.h>

#define KEY_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define KEY_C "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M=" /* base64 of 32 'c' */
#define CTX "0190a4b2-0000-7000-8000-000000000001"
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static bool ring(struct secretbox *sb, const char *cur, const char *prev)
{
    char err[256];
    return secretbox_init(sb, cur, prev, err, sizeof err) == 0;
}

static void test_parse_key(void)
{
    struct secretbox_key k, k2;
    char err[256];
    CHECK(secretbox_parse_key(KEY_A, &k, err, sizeof err) == 0);
    CHECK_EQ_INT(k.key[0], 0);
    CHECK_EQ_INT(k.key[31], 0x1f);
    CHECK_EQ_INT(strlen(k.id), SECRETBOX_KEYID_LEN);
    /* The same key in upper case hex has the same id; another key another id. */
    CHECK(secretbox_parse_key("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                              &k2, err, sizeof err) == 0);
    CHECK_STR(k.id, k2.id);
    CHECK(secretbox_parse_key(KEY_B, &k2, err, sizeof err) == 0);
    CHECK(strcmp(k.id, k2.id) != 0);
    CHECK(secretbox_parse_key(KEY_C, &k2, err, sizeof err) == 0);
    CHECK_EQ_INT(k2.key[0], 'c');
    CHECK_EQ_INT(k2.key[31], 'c');

    static const char *const bad[] = {
        "",
        "00",
        KEY_A "00",                                                         /* 33 bytes */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",  /* 63 digits */
        "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", /* not hex */
        "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2M",                      /* no padding */
        "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2N=",                     /* bad base64 */
        "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj===",                      /* 31 bytes */
        " " KEY_A,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(secretbox_parse_key(bad[i], &k, err, sizeof err) < 0);
        CHECK(strstr(err, "64 hex digits") != NULL);
        CHECK(strlen(bad[i]) < 8 || strstr(err, bad[i]) == NULL); /* never quotes the key */
    }
}

static void test_init(void)
{
    struct secretbox sb;
    char err[256];
    CHECK(secretbox_init(&sb, NULL, NULL, err, sizeof err) < 0);
    CHECK(strstr(err, "SECRETS_KEY is not set") != NULL);
    CHECK(secretbox_init(&sb, "", "", err, sizeof err) < 0);
    CHECK(secretbox_init(&sb, "nope", NULL, err, sizeof err) < 0);
    CHECK(strstr(err, "SECRETS_KEY:") == err);
    CHECK(ring(&sb, KEY_A, NULL));
    CHECK_EQ_INT(sb.n, 1);
    CHECK(ring(&sb, KEY_A, ""));
    CHECK_EQ_INT(sb.n, 1);
    CHECK(ring(&sb, KEY_A, " " KEY_B " , " KEY_C ","));
    CHECK_EQ_INT(sb.n, 3);
    CHECK(secretbox_init(&sb, KEY_A, KEY_B ",bad", err, sizeof err) < 0);
    CHECK(strstr(err, "SECRETS_KEY_PREVIOUS:") == err);
    CHECK_EQ_INT(sb.n, 0);
    CHECK(secretbox_init(&sb, KEY_A, KEY_A, err, sizeof err) < 0);
    CHECK(strstr(err, "twice") != NULL);
    CHECK(secretbox_init(&sb, KEY_A, KEY_B "," KEY_C "," KEY_B, err, sizeof err) < 0);
    CHECK(secretbox_init(&sb, KEY_A,
                         KEY_B "," KEY_C
                               ",1111111111111111111111111111111111111111111111111111111111111111,"
                               "2222222222222222222222222222222222222222222222222222222222222222,"
                               "3333333333333333333333333333333333333333333333333333333333333333",
                         err, sizeof err) < 0);
    CHECK(strstr(err, "at most") != NULL);

    /* secretbox_load wipes the configuration's copies, whether or not they parse. */
    char cur[] = KEY_A, prev[] = KEY_B, bad[] = "not-a-key-at-all";
    CHECK(secretbox_load(&sb, cur, prev, err, sizeof err) == 0);
    CHECK_EQ_INT(sb.n, 2);
    CHECK_EQ_INT(cur[0] | cur[10] | cur[63] | prev[0] | prev[63], 0);
    CHECK(secretbox_load(&sb, bad, NULL, err, sizeof err) < 0);
    CHECK_EQ_INT(bad[0] | bad[5], 0);
    CHECK(secretbox_load(&sb, NULL, NULL, err, sizeof err) < 0);
}

static void test_round_trip(void)
{
    struct secretbox sb;
    char a[SECRETBOX_TEXT_MAX], b[SECRETBOX_TEXT_MAX], out[SECRETBOX_PLAIN_MAX + 1], err[256];
    CHECK(ring(&sb, KEY_A, NULL));
    CHECK(secretbox_seal(&sb, SECRET, CTX, a, sizeof a) == 0);
    CHECK(secretbox_is_sealed(a));
    CHECK(secretbox_is_current(&sb, a));
    CHECK(strncmp(a, "enc:v1:", 7) == 0);
    CHECK(strncmp(a + 7, sb.keys[0].id, SECRETBOX_KEYID_LEN) == 0);
    CHECK(strstr(a, SECRET + 6) == NULL);
    CHECK(secretbox_open(&sb, a, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, SECRET);
    /* A fresh nonce per seal: the same secret seals differently. */
    CHECK(secretbox_seal(&sb, SECRET, CTX, b, sizeof b) == 0);
    CHECK(strcmp(a, b) != 0);
    CHECK(secretbox_open(&sb, b, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, SECRET);
    /* Empty and the longest plaintext. */
    CHECK(secretbox_seal(&sb, "", CTX, b, sizeof b) == 0);
    CHECK(secretbox_open(&sb, b, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, "");
    char longest[SECRETBOX_PLAIN_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[SECRETBOX_PLAIN_MAX] = '\0';
    CHECK(secretbox_seal(&sb, longest, CTX, b, sizeof b) == 0);
    CHECK(strlen(b) < SECRETBOX_TEXT_MAX);
    CHECK(secretbox_open(&sb, b, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, longest);
    longest[SECRETBOX_PLAIN_MAX] = 'x';
    longest[SECRETBOX_PLAIN_MAX + 1] = '\0';
    CHECK(secretbox_seal(&sb, longest, CTX, b, sizeof b) < 0);
    CHECK(secretbox_seal(&sb, SECRET, CTX, b, 40) < 0); /* out too small */
    /* Out too small to open into. */
    CHECK(secretbox_open(&sb, a, CTX, out, 10, err, sizeof err) < 0);
    /* A value stored before encryption comes back as it is. */
    CHECK(!secretbox_is_sealed(SECRET));
    CHECK(!secretbox_is_current(&sb, SECRET));
    CHECK(secretbox_open(&sb, SECRET, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, SECRET);
    secretbox_clear(&sb);
    CHECK_EQ_INT(sb.n, 0);
}

static void test_tamper(void)
{
    struct secretbox sb;
    char a[SECRETBOX_TEXT_MAX], t[SECRETBOX_TEXT_MAX], out[SECRETBOX_PLAIN_MAX + 1], err[256];
    CHECK(ring(&sb, KEY_A, NULL));
    CHECK(secretbox_seal(&sb, SECRET, CTX, a, sizeof a) == 0);
    /* Flip every bit of every byte of nonce, ciphertext and tag: nothing opens. */
    size_t header = 7 + SECRETBOX_KEYID_LEN + 1;
    unsigned char blob[SECRETBOX_TEXT_MAX];
    long n = b64_decode(a + header, strlen(a) - header, blob, sizeof blob);
    CHECK(n == 12 + (long)strlen(SECRET) + 16);
    int opened = 0;
    for (long i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            blob[i] ^= (unsigned char)(1u << bit);
            memcpy(t, a, header);
            b64_encode(blob, (size_t)n, t + header);
            opened += secretbox_open(&sb, t, CTX, out, sizeof out, err, sizeof err) == 0;
            blob[i] ^= (unsigned char)(1u << bit);
        }
    }
    CHECK_EQ_INT(opened, 0);
    CHECK(strstr(err, "authentication") != NULL);
    CHECK_STR(out, ""); /* wiped after a failure */
    /* Truncated, extended, bad base64, no key id. */
    snprintf(t, sizeof t, "%.*s", (int)strlen(a) - 4, a);
    CHECK(secretbox_open(&sb, t, CTX, out, sizeof out, err, sizeof err) < 0);
    snprintf(t, sizeof t, "%sAAAA", a);
    CHECK(secretbox_open(&sb, t, CTX, out, sizeof out, err, sizeof err) < 0);
    snprintf(t, sizeof t, "%.*s!", (int)strlen(a) - 1, a);
    CHECK(secretbox_open(&sb, t, CTX, out, sizeof out, err, sizeof err) < 0);
    CHECK(secretbox_open(&sb, "enc:v1:", CTX, out, sizeof out, err, sizeof err) < 0);
    CHECK(secretbox_open(&sb, "enc:v1:abcdefgh", CTX, out, sizeof out, err, sizeof err) < 0);
    snprintf(t, sizeof t, "%.*sAAAAAAAA", (int)header, a);
    CHECK(secretbox_open(&sb, t, CTX, out, sizeof out, err, sizeof err) < 0);
    /* Another context (another subscription's row): refused. */
    CHECK(secretbox_open(&sb, a, "0190a4b2-0000-7000-8000-000000000002", out, sizeof out, err,
                         sizeof err) < 0);
    CHECK(strstr(err, "authentication") != NULL);
    /* The key id is authenticated too: relabelled under another key of the ring, refused. */
    struct secretbox two;
    CHECK(ring(&two, KEY_B, KEY_A));
    memcpy(t, a, strlen(a) + 1);
    memcpy(t + 7, two.keys[0].id, SECRETBOX_KEYID_LEN);
    CHECK(secretbox_open(&two, t, CTX, out, sizeof out, err, sizeof err) < 0);
    CHECK(strstr(t, SECRET + 6) == NULL);
}

static void test_wrong_key_and_rotation(void)
{
    struct secretbox a, b, ba, c;
    char s[SECRETBOX_TEXT_MAX], s2[SECRETBOX_TEXT_MAX], out[SECRETBOX_PLAIN_MAX + 1], err[256];
    CHECK(ring(&a, KEY_A, NULL));
    CHECK(ring(&b, KEY_B, NULL));
    CHECK(ring(&ba, KEY_B, KEY_A));
    CHECK(secretbox_seal(&a, SECRET, CTX, s, sizeof s) == 0);
    /* B alone does not know A's id. */
    CHECK(secretbox_open(&b, s, CTX, out, sizeof out, err, sizeof err) < 0);
    CHECK(strstr(err, "key id") != NULL);
    CHECK(strstr(err, a.keys[0].id) != NULL);
    /* A different key under A's id (a forged or colliding id): authentication fails. */
    c = b;
    memcpy(c.keys[0].id, a.keys[0].id, sizeof c.keys[0].id);
    CHECK(secretbox_open(&c, s, CTX, out, sizeof out, err, sizeof err) < 0);
    CHECK(strstr(err, "authentication") != NULL);
    /* B current with A previous: opens A's, is not current; new seals are B's. */
    CHECK(secretbox_open(&ba, s, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, SECRET);
    CHECK(!secretbox_is_current(&ba, s));
    CHECK(secretbox_is_current(&a, s));
    CHECK(secretbox_seal(&ba, out, CTX, s2, sizeof s2) == 0);
    CHECK(secretbox_is_current(&ba, s2));
    CHECK(strncmp(s2 + 7, b.keys[0].id, SECRETBOX_KEYID_LEN) == 0);
    CHECK(secretbox_open(&b, s2, CTX, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, SECRET);
    CHECK(secretbox_open(&a, s2, CTX, out, sizeof out, err, sizeof err) < 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_parse_key();
    test_init();
    test_round_trip();
    test_tamper();
    test_wrong_key_and_rotation();
    return unit_done(argv[0]);
}
