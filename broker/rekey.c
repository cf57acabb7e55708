/* Encrypting signing secrets still stored in plain, and re-encrypting those sealed under a
 * previous key, in bounded batches when the broker (re)connects to PostgreSQL. */
#include "rekey.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "mem.h"
#include "secretbox.h"

#define REKEY_BATCH "100"
#define REKEY_BATCH_N 100

static struct {
    bool busy;
    char after[ID_LEN + 1]; /* the batch starts after this id */
    char like[64];          /* 'enc:v1:<current id>:%' */
    char id[SECRETBOX_KEYID_LEN + 1];
    long sealed, unreadable;
} K;

static void rekey_batch(struct broker *b);

static void rekey_end(void)
{
    K.busy = false;
    if (K.sealed || K.unreadable)
        log_info("secrets",
                 "%ld stored secrets encrypted under key %s; %ld cannot be decrypted "
                 "and were left as they are",
                 K.sealed, K.id, K.unreadable);
    else
        log_info("secrets", "every stored secret is encrypted under the current key");
}

struct rekey_write {
    struct broker *b;
    long sent;
    bool last; /* the batch read was not full */
};

static void rekey_written(void *priv, PGresult *res, const char *err)
{
    struct rekey_write *w = priv;
    struct broker *b = w->b;
    bool last = w->last;
    long sent = w->sent;
    free(w);
    if (err) {
        log_warn("secrets", "cannot write re-encrypted secrets: %s", err);
        K.busy = false;
        return;
    }
    long n = PQntuples(res);
    K.sealed += n;
    if (n < sent)
        log_info("secrets",
                 "%ld subscriptions changed while being re-encrypted; the API wrote "
                 "them under the current key",
                 sent - n);
    if (last)
        rekey_end();
    else
        rekey_batch(b);
}

/* The plain text of stored (column of subscription id) sealed under the current key into out;
 * NULL value stays NULL. -1 when it cannot be opened (logged). */
static int reseal(struct broker *b, const char *id, const char *stored, const char *column,
                  char *out)
{
    char plain[SECRETBOX_PLAIN_MAX + 1], err[256];
    if (secretbox_open(&b->secrets, stored, id, plain, sizeof plain, err, sizeof err) < 0) {
        log_sub(LOG_ERROR, id, "the stored %s cannot be decrypted (%s); left as it is", column,
                err);
        return -1;
    }
    int rc = secretbox_seal(&b->secrets, plain, id, out, SECRETBOX_TEXT_MAX);
    OPENSSL_cleanse(plain, sizeof plain);
    if (rc < 0)
        log_sub(LOG_ERROR, id, "encrypting the %s failed", column);
    return rc;
}

static void rekey_read(void *priv, PGresult *res, const char *err)
{
    struct broker *b = priv;
    if (err) {
        log_warn("secrets", "cannot read secrets to encrypt: %s", err);
        K.busy = false;
        return;
    }
    int rows = PQntuples(res);
    struct buf ids = {0}, olds = {0}, news = {0}, oldp = {0}, newp = {0};
    pgarr_begin(&ids);
    pgarr_begin(&olds);
    pgarr_begin(&news);
    pgarr_begin(&oldp);
    pgarr_begin(&newp);
    long n = 0;
    char cs[SECRETBOX_TEXT_MAX], cp[SECRETBOX_TEXT_MAX];
    for (int i = 0; i < rows; i++) {
        const char *id = PQgetvalue(res, i, 0);
        const char *s = PQgetvalue(res, i, 1), *p = PQgetvalue(res, i, 2);
        bool s_null = PQgetisnull(res, i, 1), p_null = PQgetisnull(res, i, 2);
        snprintf(K.after, sizeof K.after, "%s", id);
        bool ok = true;
        if (!s_null && !secretbox_is_current(&b->secrets, s))
            ok = reseal(b, id, s, "secret", cs) == 0;
        else if (!s_null)
            snprintf(cs, sizeof cs, "%s", s);
        if (ok && !p_null && !secretbox_is_current(&b->secrets, p))
            ok = reseal(b, id, p, "previous secret", cp) == 0;
        else if (ok && !p_null)
            snprintf(cp, sizeof cp, "%s", p);
        if (!ok) {
            K.unreadable++;
            continue;
        }
        pgarr_add(&ids, id, strlen(id));
        if (s_null) {
            pgarr_null(&olds);
            pgarr_null(&news);
        } else {
            pgarr_add(&olds, s, strlen(s));
            pgarr_add(&news, cs, strlen(cs));
        }
        if (p_null) {
            pgarr_null(&oldp);
            pgarr_null(&newp);
        } else {
            pgarr_add(&oldp, p, strlen(p));
            pgarr_add(&newp, cp, strlen(cp));
        }
        n++;
    }
    pgarr_end(&ids);
    pgarr_end(&olds);
    pgarr_end(&news);
    pgarr_end(&oldp);
    pgarr_end(&newp);
    bool last = rows < REKEY_BATCH_N;
    if (n == 0) {
        if (last)
            rekey_end();
        else
            rekey_batch(b);
        goto out_free;
    }
    /* Compare-and-set on both columns as read: a row the API changed meanwhile is skipped
     * (whatever the API wrote is sealed under the current key already). */
    static const char sql[] =
        "UPDATE subscriptions s SET secret = u.ns, previous_secret = u.np "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) "
        "AS u(id, os, ns, op, np) "
        "WHERE s.id = u.id AND s.secret IS NOT DISTINCT FROM u.os "
        "AND s.previous_secret IS NOT DISTINCT FROM u.op RETURNING s.id";
    const char *params[] = {ids.data, olds.data, news.data, oldp.data, newp.data};
    struct rekey_write *w = xcalloc(1, sizeof *w);
    w->b = b;
    w->sent = n;
    w->last = last;
    if (pg_query(b->pg_api, sql, 5, params, NULL, NULL, 0, rekey_written, w) < 0) {
        free(w);
        K.busy = false;
    }
out_free:
    OPENSSL_cleanse(cs, sizeof cs);
    OPENSSL_cleanse(cp, sizeof cp);
    buf_free(&ids);
    buf_free(&olds);
    buf_free(&news);
    buf_free(&oldp);
    buf_free(&newp);
}

/* The next REKEY_BATCH rows, by id, whose secret or previous secret is not sealed under the
 * current key (deleted subscriptions have neither). */
static void rekey_batch(struct broker *b)
{
    static const char sql[] =
        "SELECT id::text, secret, previous_secret FROM subscriptions WHERE id > $1::uuid "
        "AND (secret NOT LIKE $2 OR previous_secret NOT LIKE $2) ORDER BY id LIMIT " REKEY_BATCH;
    const char *params[] = {K.after, K.like};
    if (pg_query(b->pg_api, sql, 2, params, NULL, NULL, 0, rekey_read, b) < 0)
        K.busy = false;
}

void rekey_start(struct broker *b)
{
    if (K.busy || !pg_up(b->pg_api))
        return;
    K.busy = true;
    K.sealed = K.unreadable = 0;
    snprintf(K.after, sizeof K.after, "00000000-0000-0000-0000-000000000000");
    snprintf(K.like, sizeof K.like, SECRETBOX_PREFIX "%s:%%", b->secrets.keys[0].id);
    snprintf(K.id, sizeof K.id, "%s", b->secrets.keys[0].id);
    rekey_batch(b);
}
