/* API keys of the management and trigger API: loading WEBHOOK_API_KEYS and checking the value
 * of a presented Authorization header in constant time. Used by conn.c (before a request's
 * body is read) and by http.c (every /api/ request). */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#define API_KEYS_MAX 32
#define API_KEY_MIN 16
#define API_KEY_MAX 256

/* Each accepted key zero-padded to one byte more than the longest key, and its length: a
 * presented key is padded the same way and compared with every key over the whole width, so
 * the time taken does not depend on its content or on which key (if any) it matches. */
#define KEY_WIDTH (API_KEY_MAX + 1)
static unsigned char keys[API_KEYS_MAX][KEY_WIDTH];
static size_t key_len[API_KEYS_MAX];
static int nkeys;

int auth_load(const char *list, char *err, size_t errlen)
{
    const char *p = list;
    nkeys = 0;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0)
            break;
        if (n < API_KEY_MIN || n > API_KEY_MAX) {
            snprintf(err, errlen, "WEBHOOK_API_KEYS: each key must be %d to %d characters",
                     API_KEY_MIN, API_KEY_MAX);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i] <= ' ' || p[i] > '~') {
                snprintf(err, errlen, "WEBHOOK_API_KEYS: keys are printable ASCII without spaces");
                return -1;
            }
        }
        if (nkeys == API_KEYS_MAX) {
            snprintf(err, errlen, "WEBHOOK_API_KEYS: at most %d keys", API_KEYS_MAX);
            return -1;
        }
        memset(keys[nkeys], 0, KEY_WIDTH);
        memcpy(keys[nkeys], p, n);
        key_len[nkeys++] = n;
        p += n;
        p += strcspn(p, ",");
    }
    if (nkeys == 0) {
        snprintf(err, errlen,
                 "WEBHOOK_API_KEYS is empty: set at least one API key for the management API "
                 "(make run creates a development key in .run/api-key)");
        return -1;
    }
    return 0;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

bool auth_check(const char *value, size_t n, struct principal *who)
{
    if (who)
        memset(who, 0, sizeof *who);
    while (n > 0 && blank(value[0]))
        value++, n--;
    while (n > 0 && blank(value[n - 1]))
        n--;
    if (n < 7 || strncasecmp(value, "Bearer ", 7) != 0)
        return false;
    const char *key = value + 7;
    n -= 7;
    while (n > 0 && *key == ' ')
        key++, n--;
    if (n > KEY_WIDTH)
        n = KEY_WIDTH; /* too long for any key: its first KEY_WIDTH bytes cannot match */
    unsigned char given[KEY_WIDTH] = {0};
    memcpy(given, key, n);
    /* Every key is compared, whether or not an earlier one matched. */
    int ok = 0;
    for (int i = 0; i < nkeys; i++)
        ok |= (CRYPTO_memcmp(given, keys[i], KEY_WIDTH) == 0) & (n == key_len[i]);
    if (ok && who)
        who->roles = ROLE_ADMIN;
    return ok;
}
