/* Endpoint verification at registration ("verify": true): a signed challenge POSTed to the
 * webhook URL, which must echo it back; libcurl multi on the broker's event loop. */
/* Driven as the worker drives its deliveries, by the same module (common/curlloop.c, curl's
 * multi-event.c): libcurl tells the loop which sockets to watch and when to wake it, and never
 * blocks it. The SSRF guard checks the address libcurl is about to dial
 * (CURLOPT_OPENSOCKETFUNCTION, decision 15), redirects are not followed, the response body is
 * read up to VERIFY_BODY_MAX, and the whole exchange is bounded by VERIFY_TIMEOUT_MS.
 * Decision 32. */
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "codec.h"
#include "curlloop.h"
#include "dialguard.h"
#include "ids.h"
#include "libmem.h"
#include "log.h"
#include "mem.h"
#include "netguard.h"
#include "sign.h"

#define CHALLENGE_BYTES 32

/* One challenge under way: in the list from verify_check until its CURLMSG_DONE (or
 * verify_stop), which unlinks it, calls back and frees it. */
struct verification {
    struct verification *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char *url;  /* for the log */
    char *body; /* the request body: libcurl reads it in place */
    char challenge[2 * CHALLENGE_BYTES + 1];
    struct buf resp;       /* the response body, at most VERIFY_BODY_MAX bytes */
    bool truncated;        /* the response body was longer: the transfer was stopped */
    struct dialguard dial; /* what the SSRF guard did to the dials */
    char error[CURL_ERROR_SIZE];
    verify_cb *cb;
    void *arg;
};

static struct netguard guard;
static struct curlloop *loop;
static struct verification *inflight;
static int ninflight;

/* The response body, kept up to VERIFY_BODY_MAX bytes; more stops the transfer (an echo is a
 * small object, and a receiver streaming megabytes back is not one that verifies). */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct verification *v = userdata;
    size_t n = size * nmemb;
    if (v->resp.len + n > VERIFY_BODY_MAX) {
        v->truncated = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    buf_add(&v->resp, ptr, n);
    return n;
}

static void link_in(struct verification *v)
{
    v->prev = NULL;
    v->next = inflight;
    if (inflight)
        inflight->prev = v;
    inflight = v;
    ninflight++;
}

static void unlink_out(struct verification *v)
{
    if (v->prev)
        v->prev->next = v->next;
    else
        inflight = v->next;
    if (v->next)
        v->next->prev = v->prev;
    v->prev = v->next = NULL;
    ninflight--;
}

/* Takes the transfer out of libcurl and frees everything but the callback's part. */
static void transfer_end(struct verification *v)
{
    if (v->easy) {
        curlloop_remove(loop, v->easy);
        curl_easy_cleanup(v->easy);
        v->easy = NULL;
    }
    curl_slist_free_all(v->headers);
    v->headers = NULL;
}

static void verification_free(struct verification *v)
{
    transfer_end(v);
    free(v->url);
    free(v->body);
    buf_free(&v->resp);
    free(v);
}

/* Up to VERIFY_EXCERPT_MAX bytes of p[0..n) as printable ASCII ('?' for any other byte), "..."
 * when cut, into out. */
static void excerpt(const char *p, size_t n, char *out, size_t outlen)
{
    size_t k = 0, take = n < VERIFY_EXCERPT_MAX ? n : VERIFY_EXCERPT_MAX;
    for (size_t i = 0; i < take && k + 1 < outlen; i++) {
        unsigned char c = (unsigned char)p[i];
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (take < n && k + 3 < outlen) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

enum verify_result verify_judge(const char *challenge, long status, const char *body, size_t len,
                                bool truncated, char *why, size_t whylen)
{
    char ex[VERIFY_EXCERPT_MAX + 4];
    excerpt(body, len, ex, sizeof ex);
    const char *what = NULL;
    if (status < 200 || status > 299) {
        snprintf(why, whylen,
                 "the challenge was answered HTTP %ld (a 2xx is required%s); body: \"%s\"", status,
                 status >= 300 && status <= 399 ? ", redirects are not followed" : "", ex);
        return VERIFY_FAILED;
    }
    if (truncated) {
        snprintf(why, whylen,
                 "the challenge was answered HTTP %ld with a body over %d bytes; body: \"%s\"",
                 status, VERIFY_BODY_MAX, ex);
        return VERIFY_FAILED;
    }
    cJSON *doc = strlen(body) == len ? cJSON_ParseWithOpts(body, NULL, 1) : NULL;
    const cJSON *c =
        cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "challenge") : NULL;
    if (!cJSON_IsObject(doc))
        what = len ? "is not a JSON object" : "is empty";
    else if (!cJSON_IsString(c))
        what = "has no \"challenge\" string";
    else if (strcmp(c->valuestring, challenge) != 0)
        what = "echoes another challenge";
    cJSON_Delete(doc);
    if (!what)
        return VERIFY_OK;
    snprintf(why, whylen,
             "the challenge was answered HTTP %ld but the body %s (expected {\"challenge\": "
             "<the challenge sent>}); body: \"%s\"",
             status, what, ex);
    return VERIFY_FAILED;
}

/* curlloop's done callback (CURLMSG_DONE, e already out of the multi handle): the verdict,
 * then the callback; v is freed here. */
static void finish(CURL *e, CURLcode res, void *unused)
{
    struct verification *v = NULL;
    long status = 0;
    char why[512];
    enum verify_result out;
    (void)unused;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&v);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    unlink_out(v);
    curl_easy_cleanup(e);
    v->easy = NULL;
    transfer_end(v);
    if (dialguard_refused_all(&v->dial, res)) {
        snprintf(why, sizeof why, "the challenge request was refused by the SSRF guard: %.220s",
                 v->dial.why);
        out = VERIFY_REFUSED;
    } else if (status > 0 && (res == CURLE_OK || v->truncated)) {
        out = verify_judge(v->challenge, status, v->resp.data ? v->resp.data : "", v->resp.len,
                           v->truncated, why, sizeof why);
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        snprintf(why, sizeof why, "no answer to the challenge within %d s: %.200s",
                 VERIFY_TIMEOUT_MS / 1000, v->error[0] ? v->error : curl_easy_strerror(res));
        out = VERIFY_FAILED;
    } else {
        snprintf(why, sizeof why, "the challenge request failed%s: %.200s",
                 status > 0 ? " after a response began" : "",
                 v->error[0] ? v->error : curl_easy_strerror(res));
        out = VERIFY_FAILED;
    }
    log_info(NULL, "verification of %s: %s", v->url, out == VERIFY_OK ? "echoed" : why);
    verify_cb *cb = v->cb;
    void *arg = v->arg;
    verification_free(v);
    cb(arg, out, out == VERIFY_OK ? NULL : why);
}

/* Adds the custom headers (a JSON object of strings) to v's list, as the worker sends them. */
static void add_custom_headers(struct verification *v, const char *json)
{
    cJSON *h = json ? cJSON_Parse(json) : NULL;
    for (const cJSON *it = cJSON_IsObject(h) ? h->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it))
            continue;
        /* "Name;" is libcurl's form for an empty value ("Name:" would mean "do not send") */
        bool empty = it->valuestring[strspn(it->valuestring, " \t")] == '\0';
        char *line =
            empty ? xasprintf("%s;", it->string) : xasprintf("%s: %s", it->string, it->valuestring);
        v->headers = xslist_append(v->headers, line);
        free(line);
    }
    cJSON_Delete(h);
}

/* The challenge, the body and its signed headers into v. 0, or -1 with a reason. */
static int build(struct verification *v, const char *secret, const char *headers, char *why,
                 size_t whylen)
{
    unsigned char raw[CHALLENGE_BYTES], key[SECRET_MAX_BYTES];
    char sig[SIGNATURE_MAX], line[256], msg_id[ID_LEN + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        snprintf(why, whylen, "the random number generator failed");
        return -1;
    }
    hex_encode(raw, sizeof raw, v->challenge);
    v->body = xasprintf("{\"type\":\"webhook.verification\",\"challenge\":\"%s\"}", v->challenge);
    int keylen = sign_secret_decode(secret, key);
    id_new(msg_id);
    long long ts = (long long)time(NULL);
    int rc = keylen < 0 ? -1
                        : sign_v1(key, (size_t)keylen, msg_id, ts, v->body, strlen(v->body), sig,
                                  sizeof sig);
    OPENSSL_cleanse(key, sizeof key);
    if (rc < 0) {
        snprintf(why, whylen, "signing the challenge failed");
        return -1;
    }
    v->headers = xslist_append(v->headers, "Content-Type: application/json");
    v->headers = xslist_append(v->headers, "User-Agent: webhook-broker/" BROKER_VERSION);
    add_custom_headers(v, headers);
    snprintf(line, sizeof line, "webhook-id: %s", msg_id);
    v->headers = xslist_append(v->headers, line);
    snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
    v->headers = xslist_append(v->headers, line);
    snprintf(line, sizeof line, "webhook-signature: %s", sig);
    v->headers = xslist_append(v->headers, line);
    v->headers = xslist_append(v->headers, "Expect:");
    return 0;
}

void verify_check(const char *url, const char *secret, const char *headers, verify_cb *cb,
                  void *arg)
{
    char why[256];
    if (!loop || ninflight >= VERIFY_MAX_INFLIGHT) {
        if (loop)
            log_warn(NULL, "verification of %s refused: %d challenges under way (the most)", url,
                     ninflight);
        cb(arg, VERIFY_BUSY,
           loop ? "too many endpoint verifications are under way; retry later"
                : "the broker is shutting down; retry on another instance");
        return;
    }
    struct verification *v = xcalloc(1, sizeof *v);
    v->url = xstrdup(url);
    v->cb = cb;
    v->arg = arg;
    if (build(v, secret, headers, why, sizeof why) < 0) {
        verification_free(v);
        cb(arg, VERIFY_FAILED, why);
        return;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        verification_free(v);
        cb(arg, VERIFY_FAILED, "cannot start the challenge request (curl_easy_init failed)");
        return;
    }
    v->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, guard.https_only ? "https" : "http,https");
    dialguard_reset(&v->dial, &guard);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, dialguard_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, &v->dial);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, v->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(v->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, v->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, v);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, v->error);
    curl_easy_setopt(e, CURLOPT_PRIVATE, v);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)VERIFY_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L); /* one exchange: no idle connections kept */
    link_in(v);
    CURLMcode mc = curlloop_add(loop, e);
    if (mc != CURLM_OK) {
        unlink_out(v);
        snprintf(why, sizeof why, "cannot start the challenge request: %s",
                 curl_multi_strerror(mc));
        verification_free(v);
        cb(arg, VERIFY_FAILED, why);
        return;
    }
    log_debug(NULL, "verification of %s: challenge sent (%d under way)", url, ninflight);
}

int verify_start(struct broker *b, char *err, size_t errlen)
{
    char e[256];
    if (netguard_init(&guard, b->cfg.allow_private, b->cfg.https_only, b->cfg.allowed_cidrs, e,
                      sizeof e) < 0) {
        snprintf(err, errlen, "WEBHOOK_ALLOWED_CIDRS: %s", e);
        return -1;
    }
    loop = curlloop_new(b->base, finish, NULL);
    if (!loop) {
        snprintf(err, errlen, "curl_multi_init failed");
        return -1;
    }
    curl_multi_setopt(curlloop_multi(loop), CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      (long)VERIFY_MAX_INFLIGHT);
    return 0;
}

void verify_stop(void)
{
    int n = 0;
    while (inflight) {
        struct verification *v = inflight;
        unlink_out(v);
        transfer_end(v);
        verify_cb *cb = v->cb;
        void *arg = v->arg;
        verification_free(v);
        cb(arg, VERIFY_BUSY, "the broker is shutting down; retry on another instance");
        n++;
    }
    if (n)
        log_info(NULL, "stopped %d endpoint verifications still under way", n);
    curlloop_free(loop);
    loop = NULL;
}
