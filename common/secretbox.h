/* Encryption at rest of short secrets (webhook signing secrets in PostgreSQL): AES-256-GCM with
 * a random 96-bit nonce per seal, a key ring of one current key and older ones still accepted,
 * and a text form that names the key: "enc:v1:<key id>:<base64(nonce | ciphertext | tag)>". */
#ifndef WH_SECRETBOX_H
#define WH_SECRETBOX_H

#include <stdbool.h>
#include <stddef.h>

#define SECRETBOX_KEY_BYTES 32
#define SECRETBOX_KEYID_LEN 8   /* hex digits */
#define SECRETBOX_MAX_KEYS 5    /* the current key and up to four previous ones */
#define SECRETBOX_PLAIN_MAX 255 /* longest plaintext, without the NUL */
#define SECRETBOX_TEXT_MAX 400  /* longest sealed text + NUL: 7 + 8 + 1 + base64(12+255+16) + 1 */
#define SECRETBOX_PREFIX "enc:v1:"

struct secretbox_key {
    unsigned char key[SECRETBOX_KEY_BYTES];
    char
        id[SECRETBOX_KEYID_LEN + 1]; /* hex of the first 4 bytes of SHA-256("wh-secretbox\0" key) */
};

/* keys[0] seals; every key opens what was sealed under it. */
struct secretbox {
    struct secretbox_key keys[SECRETBOX_MAX_KEYS];
    int n;
};

/* Parses one key: 64 hex digits, or the canonical standard base64 of 32 bytes (44 characters
 * with the '=' padding). -1 with the reason in err (which never quotes the key). */
int secretbox_parse_key(const char *text, struct secretbox_key *k, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Builds the ring from SECRETS_KEY (current; required) and SECRETS_KEY_PREVIOUS (a
 * comma-separated list, spaces around commas allowed; may be NULL or empty). -1 with the
 * reason in err: key missing, malformed, repeated, or too many. */
int secretbox_init(struct secretbox *sb, const char *current, const char *previous, char *err,
                   size_t errlen) __attribute__((warn_unused_result));

/* secretbox_init from the two configuration strings, which are then wiped in place (either
 * may be NULL). */
int secretbox_load(struct secretbox *sb, char *current, char *previous, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Wipes the keys. */
void secretbox_clear(struct secretbox *sb);

/* True when text has the sealed form's prefix (whether or not it opens). */
bool secretbox_is_sealed(const char *text);

/* True when text is sealed under the current key (nothing to re-encrypt). */
bool secretbox_is_current(const struct secretbox *sb, const char *text);

/* Seals plain (at most SECRETBOX_PLAIN_MAX bytes) under the current key into out (outlen,
 * SECRETBOX_TEXT_MAX is enough), bound to context (additional authenticated data: the
 * ciphertext opens only with the same context). 0, or -1 when plain is too long, out too small
 * or libcrypto failed. */
int secretbox_seal(const struct secretbox *sb, const char *plain, const char *context, char *out,
                   size_t outlen) __attribute__((warn_unused_result));

/* Opens text sealed by secretbox_seal with the same context into out (outlen bytes, NUL
 * terminated). Text without the sealed prefix is a value written before encryption existed
 * and is copied as it is. -1 with the reason in err (unknown key id, malformed, or failed
 * authentication: tampered, wrong key or another context); out is then wiped. err never
 * contains the secret. */
int secretbox_open(const struct secretbox *sb, const char *text, const char *context, char *out,
                   size_t outlen, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
