/* Unit tests for common/sign.c: Standard Webhooks vectors, secret generation and parsing. */
#include "codec.h"
#include "sign.h"
#include "unit.h"

#include <stdbool.h>

/* The two vectors of tests/testdata/standard-webhooks.json (from the Standard Webhooks
 * reference libraries' tests). */
static const struct {
    const char *secret, *id;
    long long ts;
    const char *body, *signature;
} vectors[] = {
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
     "{\"test\": 2432232314}", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
    {"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
     "{\"email\":\"test@example.com\",\"username\":\"test_user\"}",
     "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="},
};

static void test_vectors(void)
{
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        unsigned char key[SECRET_MAX_BYTES];
        int keylen = sign_secret_decode(vectors[i].secret, key);
        CHECK_EQ_INT(keylen, 24);
        char sig[SIGNATURE_MAX];
        int rc = sign_v1(key, (size_t)keylen, vectors[i].id, vectors[i].ts, vectors[i].body,
                         strlen(vectors[i].body), sig, sizeof sig);
        CHECK_EQ_INT(rc, 0);
        CHECK_STR(sig, vectors[i].signature);
        /* Any change to id, timestamp or body changes the signature. */
        CHECK_EQ_INT(sign_v1(key, (size_t)keylen, vectors[i].id, vectors[i].ts + 1, vectors[i].body,
                             strlen(vectors[i].body), sig, sizeof sig),
                     0);
        CHECK(strcmp(sig, vectors[i].signature) != 0);
        CHECK_EQ_INT(sign_v1(key, (size_t)keylen, vectors[i].id, vectors[i].ts, vectors[i].body,
                             strlen(vectors[i].body) - 1, sig, sizeof sig),
                     0);
        CHECK(strcmp(sig, vectors[i].signature) != 0);
    }
}

static void test_sign_output(void)
{
    unsigned char key[32] = {1, 2, 3};
    char sig[SIGNATURE_MAX];
    CHECK_EQ_INT(sign_v1(key, sizeof key, "msg_1", 0, "", 0, sig, sizeof sig), 0);
    CHECK_EQ_INT(strlen(sig), 3 + 44);
    CHECK(strncmp(sig, "v1,", 3) == 0);
    /* Body bytes are hashed as given, embedded NULs included. */
    char a[SIGNATURE_MAX], b[SIGNATURE_MAX];
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", 1, "x\0y", 3, a, sizeof a), 0);
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", 1, "x\0z", 3, b, sizeof b), 0);
    CHECK(strcmp(a, b) != 0);
    /* Negative and large timestamps format as plain decimal. */
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", -1, "{}", 2, a, sizeof a), 0);
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", 9223372036854775807LL, "{}", 2, a, sizeof a), 0);
    /* Too small an output buffer is an error, not an overflow. */
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", 1, "{}", 2, a, 47), -1);
    CHECK_EQ_INT(sign_v1(key, sizeof key, "m", 1, "{}", 2, a, 48), 0);
}

static void test_secret_new(void)
{
    char s1[SECRET_TEXT_MAX], s2[SECRET_TEXT_MAX];
    CHECK_EQ_INT(sign_secret_new(s1, sizeof s1), 0);
    CHECK_EQ_INT(sign_secret_new(s2, sizeof s2), 0);
    CHECK(strncmp(s1, SECRET_PREFIX, 6) == 0);
    CHECK_EQ_INT(strlen(s1), 6 + 44);
    CHECK(strcmp(s1, s2) != 0);
    unsigned char key[SECRET_MAX_BYTES];
    CHECK_EQ_INT(sign_secret_decode(s1, key), SECRET_NEW_BYTES);
    char exact[51]; /* "whsec_" + 44 + NUL */
    CHECK_EQ_INT(sign_secret_new(exact, sizeof exact - 1), -1);
    CHECK_EQ_INT(sign_secret_new(exact, sizeof exact), 0);
    CHECK_EQ_INT(sign_secret_decode(exact, key), SECRET_NEW_BYTES);
}

/* "whsec_" + base64 of n bytes. */
static void make_secret(size_t n, char *out)
{
    unsigned char raw[128];
    for (size_t i = 0; i < n; i++)
        raw[i] = (unsigned char)(i * 7 + 1);
    memcpy(out, SECRET_PREFIX, 6);
    b64_encode(raw, n, out + 6);
}

static void test_secret_decode(void)
{
    unsigned char key[SECRET_MAX_BYTES + 8];
    char s[256];
    make_secret(24, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), 24);
    CHECK_EQ_INT(key[23], 23 * 7 + 1);
    make_secret(64, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), 64);
    make_secret(32, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), 32);
    make_secret(23, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), -1);
    make_secret(65, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), -1);
    make_secret(90, s);
    CHECK_EQ_INT(sign_secret_decode(s, key), -1);

    CHECK_EQ_INT(sign_secret_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key), -1); /* no prefix */
    CHECK_EQ_INT(sign_secret_decode("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key), -1);
    CHECK_EQ_INT(sign_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", key), -1);
    CHECK_EQ_INT(sign_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", key), -1);
    CHECK_EQ_INT(sign_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ", key), -1);
    CHECK_EQ_INT(sign_secret_decode("whsec_", key), -1);
    CHECK_EQ_INT(sign_secret_decode("", key), -1);
    CHECK_EQ_INT(sign_secret_decode(NULL, key), -1);
}

static char check_err[256];

/* sign_secret_check on a NUL-terminated literal or buffer; the reason must never quote it. */
static int check_secret(const char *s, size_t n)
{
    check_err[0] = '\0';
    int rc = sign_secret_check(s, n, check_err, sizeof check_err);
    if (rc < 0 && n > 6)
        CHECK(!memmem(check_err, strlen(check_err), s + 6, n - 6)); /* no echo of the secret */
    return rc;
}

#define SECRET_OK(s) CHECK_EQ_INT(check_secret(s, strlen(s)), 0)
#define SECRET_BAD(s, why)                                                                         \
    do {                                                                                           \
        CHECK_EQ_INT(check_secret(s, strlen(s)), -1);                                              \
        if (!unit_check(strstr(check_err, why) != NULL, __FILE__, __LINE__, "reason: " why))       \
            fprintf(stderr, "    got \"%s\"\n", check_err);                                        \
    } while (0)

static void test_secret_check(void)
{
    char s[256];
    unsigned char key[SECRET_MAX_BYTES];

    /* Length bounds of the decoded key: 24 and 64 accepted, 23 and 65 refused. */
    make_secret(24, s);
    SECRET_OK(s);
    CHECK_EQ_INT(sign_secret_decode(s, key), 24);
    make_secret(64, s);
    SECRET_OK(s);
    CHECK_EQ_INT(sign_secret_decode(s, key), 64);
    make_secret(32, s);
    SECRET_OK(s);
    make_secret(23, s);
    SECRET_BAD(s, "too short: it decodes to 23 bytes");
    make_secret(65, s);
    SECRET_BAD(s, "too long: it decodes to 65 bytes");
    make_secret(66, s);
    SECRET_BAD(s, "too long");
    make_secret(67, s);
    SECRET_BAD(s, "too long");
    make_secret(1, s);
    SECRET_BAD(s, "too short");
    SECRET_BAD("whsec_", "too short: it decodes to 0 bytes");
    char gen[SECRET_TEXT_MAX];
    CHECK_EQ_INT(sign_secret_new(gen, sizeof gen), 0);
    SECRET_OK(gen); /* what we generate is acceptable input */
    SECRET_OK("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

    /* Empty and the prefix. */
    SECRET_BAD("", "empty");
    CHECK_EQ_INT(sign_secret_check(NULL, 0, check_err, sizeof check_err), -1);
    SECRET_BAD("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with \"whsec_\"");
    SECRET_BAD("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with");
    SECRET_BAD("whsec", "must start with");
    SECRET_BAD(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with");
    SECRET_BAD("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with");

    /* Padding: missing, extra, in the middle, wrong count. 25 bytes = 32 + "AQ==". */
    make_secret(25, s);
    SECRET_OK(s);
    size_t n = strlen(s);
    CHECK(s[n - 1] == '=' && s[n - 2] == '=');
    s[n - 2] = '\0'; /* padding dropped */
    SECRET_BAD(s, "canonical standard base64");
    make_secret(25, s);
    s[n - 1] = '\0'; /* one '=' of two */
    SECRET_BAD(s, "canonical standard base64");
    make_secret(25, s);
    memcpy(s + n, "==", 3); /* extra padding */
    SECRET_BAD(s, "canonical standard base64");
    make_secret(26, s); /* 26 bytes end with one '=' */
    n = strlen(s);
    CHECK(s[n - 1] == '=' && s[n - 2] != '=');
    s[n - 2] = '=';
    s[n - 1] = 'A'; /* '=' before a data character */
    SECRET_BAD(s, "canonical standard base64");
    make_secret(24, s);
    s[10] = '='; /* padding in the middle */
    SECRET_BAD(s, "canonical standard base64");

    /* Non-canonical: padding bits set ("AR==" decodes like "AQ==" in lax decoders). */
    make_secret(25, s);
    n = strlen(s);
    CHECK(s[n - 3] == 'Q');
    s[n - 3] = 'R';
    SECRET_BAD(s, "canonical standard base64");
    make_secret(26, s);
    n = strlen(s);
    CHECK(s[n - 2] == 'A'); /* ...xA=: the last two bits of 'A' (0) are padding */
    s[n - 2] = 'B';
    SECRET_BAD(s, "canonical standard base64");

    /* Whitespace, other alphabets, junk, NUL. */
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ", "canonical standard base64");
    SECRET_BAD("whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjU\nPD8ILPZIo2LaLaSw", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS\t", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-_", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS\xc3\xa9", "canonical standard base64");
    SECRET_BAD("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "canonical standard base64");
    CHECK_EQ_INT(check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa\0w", 38), -1);
    CHECK_EQ_INT(check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 38), 0);

    /* Far too long: refused without decoding. */
    memcpy(s, "whsec_", 6);
    memset(s + 6, 'A', 200);
    s[206] = '\0';
    SECRET_BAD(s, "too long");

    /* Whatever the check accepts, the worker's decoder accepts, and the reverse. */
    for (size_t len = 20; len <= 70; len++) {
        make_secret(len, s);
        bool ok = check_secret(s, strlen(s)) == 0;
        CHECK_EQ_INT(ok, len >= SECRET_MIN_BYTES && len <= SECRET_MAX_BYTES);
        CHECK_EQ_INT(sign_secret_decode(s, key) >= 0, ok);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    test_vectors();
    test_sign_output();
    test_secret_new();
    test_secret_decode();
    test_secret_check();
    return unit_done(argv[0]);
}
