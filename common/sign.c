/* Standard Webhooks signing: secret generation and parsing, HMAC-SHA256 "v1," signatures. */
#include "sign.h"

#include "codec.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define HMAC_SHA256_LEN 32

int sign_secret_new(char *out, size_t outlen)
{
    unsigned char key[SECRET_NEW_BYTES];
    size_t prefix = sizeof SECRET_PREFIX - 1;
    if (outlen < prefix + b64_encoded_len(sizeof key) + 1)
        return -1;
    if (RAND_bytes(key, sizeof key) != 1)
        return -1;
    memcpy(out, SECRET_PREFIX, prefix);
    b64_encode(key, sizeof key, out + prefix);
    OPENSSL_cleanse(key, sizeof key);
    return 0;
}

int sign_secret_decode(const char *secret, unsigned char *key)
{
    size_t prefix = sizeof SECRET_PREFIX - 1;
    if (!secret || strncmp(secret, SECRET_PREFIX, prefix) != 0)
        return -1;
    const char *b64 = secret + prefix;
    /* Longer text cannot decode to at most SECRET_MAX_BYTES; no need to scan all of it. */
    size_t n = strnlen(b64, SECRET_TEXT_MAX);
    if (n >= SECRET_TEXT_MAX)
        return -1;
    long len = b64_decode(b64, n, key, SECRET_MAX_BYTES);
    if (len < SECRET_MIN_BYTES || len > SECRET_MAX_BYTES)
        return -1;
    return (int)len;
}

int sign_secret_check(const char *s, size_t n, char *err, size_t errlen)
{
    size_t prefix = sizeof SECRET_PREFIX - 1;
    if (!s || n == 0) {
        snprintf(err, errlen, "secret is empty");
        return -1;
    }
    if (n < prefix || memcmp(s, SECRET_PREFIX, prefix) != 0) {
        snprintf(err, errlen, "secret must start with \"" SECRET_PREFIX "\"");
        return -1;
    }
    const char *b64 = s + prefix;
    size_t len = n - prefix;
    if (len > b64_encoded_len(SECRET_MAX_BYTES)) {
        snprintf(err, errlen,
                 "secret is too long: it must be " SECRET_PREFIX " followed by the base64 of %d "
                 "to %d bytes",
                 SECRET_MIN_BYTES, SECRET_MAX_BYTES);
        return -1;
    }
    unsigned char key[SECRET_MAX_BYTES + 2]; /* what the longest text allowed here decodes to */
    long keylen = memchr(b64, '\0', len) ? -1 : b64_decode(b64, len, key, sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    if (keylen < 0) {
        snprintf(err, errlen,
                 "secret must be " SECRET_PREFIX " followed by canonical standard base64 "
                 "(A-Z a-z 0-9 + /, '=' padding, no whitespace)");
        return -1;
    }
    if (keylen < SECRET_MIN_BYTES) {
        snprintf(err, errlen, "secret is too short: it decodes to %ld bytes; %d to %d are allowed",
                 keylen, SECRET_MIN_BYTES, SECRET_MAX_BYTES);
        return -1;
    }
    if (keylen > SECRET_MAX_BYTES) {
        snprintf(err, errlen, "secret is too long: it decodes to %ld bytes; %d to %d are allowed",
                 keylen, SECRET_MIN_BYTES, SECRET_MAX_BYTES);
        return -1;
    }
    return 0;
}

/* The HMAC implementation, fetched once and kept for the life of the process. */
static EVP_MAC *hmac_impl(void)
{
    static EVP_MAC *mac;
    if (!mac)
        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    return mac;
}

int sign_v1(const unsigned char *key, size_t keylen, const char *msg_id, long long timestamp,
            const char *body, size_t bodylen, char *out, size_t outlen)
{
    unsigned char mac[HMAC_SHA256_LEN];
    size_t maclen = 0;
    char ts[24];
    int tslen = snprintf(ts, sizeof ts, "%lld", timestamp);
    if (tslen < 0 || (size_t)tslen >= sizeof ts)
        return -1;
    if (outlen < 3 + b64_encoded_len(sizeof mac) + 1)
        return -1;

    EVP_MAC *impl = hmac_impl();
    if (!impl)
        return -1;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(impl);
    if (!ctx)
        return -1;
    int ret = -1;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(ctx, key, keylen, params) != 1)
        goto out_free_ctx;
    if (EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tslen) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)body, bodylen) != 1)
        goto out_free_ctx;
    if (EVP_MAC_final(ctx, mac, &maclen, sizeof mac) != 1 || maclen != sizeof mac)
        goto out_free_ctx;
    memcpy(out, "v1,", 3);
    b64_encode(mac, maclen, out + 3);
    ret = 0;

out_free_ctx:
    EVP_MAC_CTX_free(ctx);
    return ret;
}
