/* Encryption at rest of short secrets: AES-256-GCM through OpenSSL's EVP API, a key ring, and
 * the "enc:v1:<key id>:<base64>" text form. Pure apart from the random nonces. */
#include "secretbox.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"

#define NONCE_BYTES 12
#define TAG_BYTES 16
#define HEADER_LEN (sizeof SECRETBOX_PREFIX - 1 + SECRETBOX_KEYID_LEN + 1) /* "enc:v1:id:" */
#define BLOB_MAX (NONCE_BYTES + SECRETBOX_PLAIN_MAX + TAG_BYTES)

static void key_id(struct secretbox_key *k)
{
    static const unsigned char domain[] = "wh-secretbox"; /* with its NUL */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(c, domain, sizeof domain) == 1 &&
              EVP_DigestUpdate(c, k->key, sizeof k->key) == 1 &&
              EVP_DigestFinal_ex(c, md, &mdlen) == 1;
    EVP_MD_CTX_free(c);
    if (!ok)
        memset(md, 0, 4); /* SHA-256 cannot fail short of OOM; an all-zero id still works */
    hex_encode(md, SECRETBOX_KEYID_LEN / 2, k->id);
}

int secretbox_parse_key(const char *text, struct secretbox_key *k, char *err, size_t errlen)
{
    size_t n = strlen(text);
    long got = -1;
    unsigned char tmp[SECRETBOX_KEY_BYTES + 2];
    if (n == 2 * SECRETBOX_KEY_BYTES)
        got = hex_decode(text, n, tmp, sizeof tmp);
    else if (n == 44)
        got = b64_decode(text, n, tmp, sizeof tmp);
    if (got != SECRETBOX_KEY_BYTES) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        snprintf(err, errlen,
                 "a key must be 32 bytes written as 64 hex digits or as 44 characters of "
                 "standard base64 (got %zu characters that are neither; generate one with "
                 "`openssl rand -hex 32`)",
                 n);
        return -1;
    }
    memcpy(k->key, tmp, SECRETBOX_KEY_BYTES);
    OPENSSL_cleanse(tmp, sizeof tmp);
    key_id(k);
    return 0;
}

static int ring_add(struct secretbox *sb, const char *text, const char *what, char *err,
                    size_t errlen)
{
    char why[256];
    if (sb->n == SECRETBOX_MAX_KEYS) {
        snprintf(err, errlen, "at most %d previous keys", SECRETBOX_MAX_KEYS - 1);
        return -1;
    }
    struct secretbox_key *k = &sb->keys[sb->n];
    if (secretbox_parse_key(text, k, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", what, why);
        return -1;
    }
    for (int i = 0; i < sb->n; i++) {
        if (strcmp(sb->keys[i].id, k->id) == 0) {
            OPENSSL_cleanse(k, sizeof *k);
            snprintf(err, errlen, "%s: the same key (id %s) is given twice", what, sb->keys[i].id);
            return -1;
        }
    }
    sb->n++;
    return 0;
}

int secretbox_init(struct secretbox *sb, const char *current, const char *previous, char *err,
                   size_t errlen)
{
    memset(sb, 0, sizeof *sb);
    if (!current || !*current) {
        snprintf(err, errlen,
                 "SECRETS_KEY is not set: webhook signing secrets are stored encrypted with it. "
                 "Set it to 32 random bytes as 64 hex digits (`openssl rand -hex 32`), the same "
                 "on the broker and every worker");
        return -1;
    }
    if (ring_add(sb, current, "SECRETS_KEY", err, errlen) < 0)
        goto out_clear;
    const char *p = previous ? previous : "";
    while (*p) {
        p += strspn(p, " ");
        size_t len = strcspn(p, ",");
        size_t end = len;
        while (end > 0 && p[end - 1] == ' ')
            end--;
        if (end > 0) {
            char one[128];
            if (end >= sizeof one) {
                snprintf(err, errlen, "SECRETS_KEY_PREVIOUS: an entry is far too long for a key");
                goto out_clear;
            }
            memcpy(one, p, end);
            one[end] = '\0';
            int rc = ring_add(sb, one, "SECRETS_KEY_PREVIOUS", err, errlen);
            OPENSSL_cleanse(one, sizeof one);
            if (rc < 0)
                goto out_clear;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
out_clear:
    secretbox_clear(sb);
    return -1;
}

int secretbox_load(struct secretbox *sb, char *current, char *previous, char *err, size_t errlen)
{
    int rc = secretbox_init(sb, current, previous, err, errlen);
    if (current)
        OPENSSL_cleanse(current, strlen(current));
    if (previous)
        OPENSSL_cleanse(previous, strlen(previous));
    return rc;
}

void secretbox_clear(struct secretbox *sb)
{
    OPENSSL_cleanse(sb, sizeof *sb);
    sb->n = 0;
}

bool secretbox_is_sealed(const char *text)
{
    return text && strncmp(text, SECRETBOX_PREFIX, sizeof SECRETBOX_PREFIX - 1) == 0;
}

bool secretbox_is_current(const struct secretbox *sb, const char *text)
{
    const char *id = text + sizeof SECRETBOX_PREFIX - 1;
    return sb->n > 0 && secretbox_is_sealed(text) && strlen(text) > HEADER_LEN &&
           memcmp(id, sb->keys[0].id, SECRETBOX_KEYID_LEN) == 0 && id[SECRETBOX_KEYID_LEN] == ':';
}

/* One AES-256-GCM operation over in[0..n) into out; enc: seal (tag written), else open (tag
 * checked). aad = header then context. 0, or -1 (authentication failure when opening). */
static int gcm(bool enc, const unsigned char *key, const unsigned char *nonce, const char *header,
               const char *context, const unsigned char *in, int n, unsigned char *out,
               unsigned char *tag)
{
    int len = 0, ok = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -1;
    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1 ||
        EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1 ||
        EVP_CipherUpdate(c, NULL, &len, (const unsigned char *)header, (int)strlen(header)) != 1 ||
        EVP_CipherUpdate(c, NULL, &len, (const unsigned char *)context, (int)strlen(context)) != 1)
        goto out_free;
    if (n > 0 && EVP_CipherUpdate(c, out, &len, in, n) != 1)
        goto out_free;
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1)
        goto out_free;
    if (EVP_CipherFinal_ex(c, out + len, &len) != 1)
        goto out_free;
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag) != 1)
        goto out_free;
    ok = 1;
out_free:
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

int secretbox_seal(const struct secretbox *sb, const char *plain, const char *context, char *out,
                   size_t outlen)
{
    size_t n = strlen(plain);
    if (sb->n < 1 || n > SECRETBOX_PLAIN_MAX ||
        outlen < HEADER_LEN + b64_encoded_len(NONCE_BYTES + n + TAG_BYTES) + 1)
        return -1;
    unsigned char blob[BLOB_MAX];
    char header[HEADER_LEN + 1];
    snprintf(header, sizeof header, SECRETBOX_PREFIX "%s:", sb->keys[0].id);
    int rc = -1;
    if (RAND_bytes(blob, NONCE_BYTES) != 1)
        goto out_wipe;
    if (gcm(true, sb->keys[0].key, blob, header, context, (const unsigned char *)plain, (int)n,
            blob + NONCE_BYTES, blob + NONCE_BYTES + n) < 0)
        goto out_wipe;
    memcpy(out, header, HEADER_LEN);
    b64_encode(blob, NONCE_BYTES + n + TAG_BYTES, out + HEADER_LEN);
    rc = 0;
out_wipe:
    OPENSSL_cleanse(blob, sizeof blob);
    return rc;
}

int secretbox_open(const struct secretbox *sb, const char *text, const char *context, char *out,
                   size_t outlen, char *err, size_t errlen)
{
    if (!secretbox_is_sealed(text)) {
        size_t n = strlen(text);
        if (n >= outlen) {
            snprintf(err, errlen, "the stored plain value is too long");
            return -1;
        }
        memcpy(out, text, n + 1);
        return 0;
    }
    size_t tlen = strlen(text);
    const char *id = text + sizeof SECRETBOX_PREFIX - 1;
    if (tlen <= HEADER_LEN || id[SECRETBOX_KEYID_LEN] != ':') {
        snprintf(err, errlen, "malformed encrypted value (no key id)");
        return -1;
    }
    const struct secretbox_key *k = NULL;
    for (int i = 0; i < sb->n && !k; i++)
        if (memcmp(sb->keys[i].id, id, SECRETBOX_KEYID_LEN) == 0)
            k = &sb->keys[i];
    if (!k) {
        snprintf(err, errlen,
                 "encrypted under key id %.*s, which is neither SECRETS_KEY nor in "
                 "SECRETS_KEY_PREVIOUS",
                 SECRETBOX_KEYID_LEN, id);
        return -1;
    }
    unsigned char blob[BLOB_MAX];
    long blen = b64_decode(text + HEADER_LEN, tlen - HEADER_LEN, blob, sizeof blob);
    if (blen < NONCE_BYTES + TAG_BYTES) {
        snprintf(err, errlen, "malformed encrypted value (bad base64 or too short)");
        return -1;
    }
    size_t n = (size_t)blen - NONCE_BYTES - TAG_BYTES;
    int rc = -1;
    char header[HEADER_LEN + 1];
    memcpy(header, text, HEADER_LEN);
    header[HEADER_LEN] = '\0';
    if (n >= outlen) {
        snprintf(err, errlen, "the decrypted value would not fit");
        goto out_wipe;
    }
    if (gcm(false, k->key, blob, header, context, blob + NONCE_BYTES, (int)n, (unsigned char *)out,
            blob + NONCE_BYTES + n) < 0) {
        OPENSSL_cleanse(out, outlen);
        snprintf(err, errlen,
                 "encrypted value fails authentication (altered, wrong key, or copied from "
                 "another subscription)");
        goto out_wipe;
    }
    out[n] = '\0';
    if (memchr(out, '\0', n)) {
        OPENSSL_cleanse(out, outlen);
        snprintf(err, errlen, "the decrypted value contains a NUL byte");
        goto out_wipe;
    }
    rc = 0;
out_wipe:
    OPENSSL_cleanse(blob, sizeof blob);
    return rc;
}
