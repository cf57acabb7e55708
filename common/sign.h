/* Standard Webhooks signing: secret generation and parsing, HMAC-SHA256 "v1," signatures. */
#ifndef WH_SIGN_H
#define WH_SIGN_H

#include <stddef.h>

#define SECRET_PREFIX "whsec_"
#define SECRET_MIN_BYTES 24
#define SECRET_MAX_BYTES 64
#define SECRET_NEW_BYTES 32
#define SECRET_TEXT_MAX 128 /* "whsec_" + base64(64 bytes) + NUL fits */
#define SIGNATURE_MAX 64    /* "v1," + base64(32 bytes) + NUL fits */

/* New secret: "whsec_" + base64 of SECRET_NEW_BYTES bytes from OpenSSL RAND_bytes.
 * out must hold SECRET_TEXT_MAX bytes. Returns 0, or -1 if the RNG failed. */
int sign_secret_new(char *out, size_t outlen) __attribute__((warn_unused_result));

/* Parses "whsec_<base64>" whose decoded key is SECRET_MIN_BYTES..SECRET_MAX_BYTES long into key
 * (capacity SECRET_MAX_BYTES). Returns the key length, or -1 when malformed. */
int sign_secret_decode(const char *secret, unsigned char *key) __attribute__((warn_unused_result));

/* Checks a secret a caller supplied, s[0..n): SECRET_PREFIX, then canonical standard base64
 * (the '=' padding required, no whitespace, no URL-safe characters, zero padding bits) of
 * SECRET_MIN_BYTES..SECRET_MAX_BYTES bytes; exactly what sign_secret_decode accepts. 0 when
 * acceptable; -1 with the reason in err ("secret must start with whsec_"), which never quotes
 * the secret. */
int sign_secret_check(const char *s, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* "v1," + base64(HMAC-SHA256(key, msg_id "." timestamp "." body)) into out (SIGNATURE_MAX).
 * The body is hashed in place (no copy). Returns 0, or -1 on a libcrypto failure. */
int sign_v1(const unsigned char *key, size_t keylen, const char *msg_id, long long timestamp,
            const char *body, size_t bodylen, char *out, size_t outlen)
    __attribute__((warn_unused_result));

#endif
