/* Delivering jobs: libcurl's multi socket API on the worker's loop (common/curlloop.c, as curl's
 * multi-event.c), keep-alive connections shared by every transfer, Standard Webhooks signing
 * per attempt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "curlloop.h"
#include "libmem.h"
#include "log.h"
#include "mail.h"
#include "worker.h"

static struct curlloop *loop;
static long active;
static CURL **pool;
static size_t npool, cappool;
static struct job *xfers; /* jobs whose transfer is in the multi handle */

static void xfer_link(struct job *j)
{
    j->xfer_prev = NULL;
    j->xfer_next = xfers;
    if (xfers)
        xfers->xfer_prev = j;
    xfers = j;
}

static void xfer_unlink(struct job *j)
{
    if (j->xfer_prev)
        j->xfer_prev->xfer_next = j->xfer_next;
    else
        xfers = j->xfer_next;
    if (j->xfer_next)
        j->xfer_next->xfer_prev = j->xfer_prev;
    j->xfer_prev = j->xfer_next = NULL;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct job *j = userdata;
    size_t n = size * nmemb;
    if (j->excerpt.len < EXCERPT_MAX) {
        size_t take = EXCERPT_MAX - j->excerpt.len;
        buf_add(&j->excerpt, ptr, n < take ? n : take);
    }
    return n; /* the rest is read and dropped; the total timeout bounds it */
}

static size_t on_header(char *ptr, size_t size, size_t nitems, void *userdata)
{
    struct job *j = userdata;
    size_t n = size * nitems;
    if (n > 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        j->retry_after_ms = -1; /* a new response (after 100 Continue) */
    } else if (n > 12 && strncasecmp(ptr, "retry-after:", 12) == 0) {
        char v[128];
        size_t vl = n - 12 < sizeof v - 1 ? n - 12 : sizeof v - 1;
        memcpy(v, ptr + 12, vl);
        v[vl] = '\0';
        char *s = v;
        while (*s == ' ' || *s == '\t')
            s++;
        s[strcspn(s, "\r\n")] = '\0';
        long ms;
        if (backoff_parse_retry_after(s, time(NULL), &ms) == 0)
            j->retry_after_ms = ms;
    }
    return n;
}

/* Returns a handle to the pool, detached from its job (whose memory is about to go). */
static void pool_put(CURL *e)
{
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    if (npool == cappool) {
        cappool = cappool ? cappool * 2 : 64;
        pool = xrealloc(pool, cappool * sizeof *pool);
    }
    pool[npool++] = e;
}

/* Nothing was sent: the destination itself is refused, so retrying cannot help. */
static void finish_refused(struct job *j)
{
    j->duration_ms = (long)(clock_now_ms() - j->started_ms);
    j->status_code = 0;
    snprintf(j->error, sizeof j->error, "refused by the SSRF guard: %.220s", j->dial.why);
    log_warn(j->m.job, "not delivering to %s: %s (not retried)", job_url(j), j->error);
    j->out = OUT_DEAD;
    outcome_submit(j);
}

/* curlloop's done callback: e is already out of the multi handle. */
static void finish(CURL *e, CURLcode res, void *arg)
{
    struct job *j = NULL;
    long code = 0;
    (void)arg;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&j);
    if (mail_is(j)) { /* mail.c's own handle, never pooled */
        xfer_unlink(j);
        j->easy = NULL;
        active--;
        mail_done(j, e, res);
        return;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    pool_put(e); /* kept configured: only per-transfer options change */
    xfer_unlink(j);
    j->easy = NULL;
    curl_slist_free_all(j->req_headers);
    j->req_headers = NULL;
    active--;
    j->duration_ms = (long)(clock_now_ms() - j->started_ms);
    j->status_code = code;
    /* A 2xx status is the subscriber's acceptance, even if the connection then broke in the
     * response body (curl reports that as an error): retrying would only send a duplicate. */
    if (code >= 200 && code <= 299) {
        if (res != CURLE_OK)
            log_info(j->m.job, "HTTP %ld from %s, then: %s (counted as delivered)", code,
                     job_url(j), j->error[0] ? j->error : curl_easy_strerror(res));
        j->out = OUT_DELIVERED;
        j->error[0] = '\0';
        log_debug(j->m.job, "delivered to %s: HTTP %ld in %ld ms (attempt %d)", job_url(j), code,
                  j->duration_ms, j->m.attempt);
        outcome_submit(j);
        return;
    }
    if (dialguard_refused_all(&j->dial, res)) {
        finish_refused(j);
        return;
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        /* libcurl's message tells a connect timeout from a slow response */
        char detail[CURL_ERROR_SIZE];
        snprintf(detail, sizeof detail, "%s", j->error[0] ? j->error : "operation timed out");
        struct buf b = {0};
        buf_printf(&b, "timeout: %s", detail);
        size_t n = b.len < sizeof j->error - 1 ? b.len : sizeof j->error - 1;
        memcpy(j->error, b.data, n);
        j->error[n] = '\0';
        buf_free(&b);
    } else if (res != CURLE_OK) {
        /* the error buffer holds libcurl's detailed message; fall back to the generic one */
        if (!j->error[0])
            snprintf(j->error, sizeof j->error, "%s", curl_easy_strerror(res));
    } else {
        snprintf(j->error, sizeof j->error, "HTTP %ld", code);
    }
    log_debug(j->m.job, "attempt %d to %s failed: %s", j->m.attempt, job_url(j), j->error);
    outcome_failed(j);
}

static void add_header(struct job *j, const char *line)
{
    j->req_headers = xslist_append(j->req_headers, line);
}

/* A new handle with the options that are the same for every transfer. */
static CURL *handle_new(void)
{
    CURL *e = curl_easy_init();
    if (!e) {
        fprintf(stderr, "fatal: curl_easy_init failed\n");
        abort();
    }
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, W.guard.https_only ? "https" : "http,https");
    /* the SSRF guard on the address about to be dialled (decision 15) */
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, dialguard_open_socket);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, W.cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, W.cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    return e;
}

void deliver_start(struct job *j)
{
    const char *url = job_url(j); /* the subscription's URL now, not the one queued */
    j->started_ms = clock_now_ms();
    dialguard_reset(&j->dial, &W.guard);
    j->m.rslot = 0; /* the reservation is used: a retry asks for a new one */
    if (mail_is(j)) {
        mail_start(j);
        return;
    }
    if (W.guard.https_only && strncasecmp(url, "https://", 8) != 0) {
        snprintf(j->dial.why, sizeof j->dial.why,
                 "the URL is not https and WEBHOOK_HTTPS_ONLY is on");
        j->dial.refused = true;
        finish_refused(j);
        return;
    }
    /* The body sent and signed: the payload as is (no copy) unless the subscription asks for
     * a payload shape (decision 31); then built per attempt, so a PATCH applies to the next. */
    const char *body = j->payload->data;
    size_t body_len = j->payload->len;
    if (j->ctl && (j->ctl->shape != SHAPE_RAW || j->ctl->fields)) {
        buf_reset(&j->body);
        shape_body(&j->body, j->ctl->shape, j->payload->data, j->payload->len, j->ctl->fields,
                   j->ctl->fields_len, j->m.event, j->m.name);
        body = j->body.data;
        body_len = j->body.len;
    }
    CURL *e = npool ? pool[--npool] : handle_new();
    j->easy = e;
    long long ts = j->started_ms / 1000;
    char sig[SIGNATURE_MAX], prev[SIGNATURE_MAX] = "", line[256];
    /* During a rotation's grace period the previous secret signs too (after the new one). Its
     * expiry is compared now, so a cached subscription never signs with an expired secret. */
    bool with_prev = j->sub->prev_keylen > 0 && j->started_ms < j->sub->prev_expires_ms;
    if (sign_v1(j->sub->key, (size_t)j->sub->keylen, j->m.event, ts, body, body_len, sig,
                sizeof sig) < 0 ||
        (with_prev && sign_v1(j->sub->prev_key, (size_t)j->sub->prev_keylen, j->m.event, ts,
                              body, body_len, prev, sizeof prev) < 0)) {
        snprintf(j->error, sizeof j->error, "signing failed");
        j->easy = NULL;
        pool_put(e);
        outcome_failed(j);
        return;
    }
    add_header(j, "Content-Type: application/json");
    add_header(j, "User-Agent: webhook-broker/" WORKER_VERSION);
    for (const struct curl_slist *h = j->sub->headers; h; h = h->next)
        add_header(j, h->data);
    snprintf(line, sizeof line, "webhook-id: %s", j->m.event);
    add_header(j, line);
    snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
    add_header(j, line);
    snprintf(line, sizeof line, "webhook-signature: %s%s%s", sig, with_prev ? " " : "", prev);
    add_header(j, line);
    add_header(j, "Expect:"); /* no 100-continue round trip for larger bodies */

    curl_easy_setopt(e, CURLOPT_URL, url);
    /* per transfer: the subscription's timeoutSeconds, else DELIVERY_TIMEOUT */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     j->ctl && j->ctl->timeout_ms ? j->ctl->timeout_ms : W.cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->req_headers);
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, &j->dial);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->error);
    j->error[0] = '\0';
    active++;
    CURLMcode mc = curlloop_add(loop, e);
    if (mc == CURLM_OK) {
        xfer_link(j);
    } else {
        active--;
        snprintf(j->error, sizeof j->error, "cannot start the transfer: %s",
                 curl_multi_strerror(mc));
        curl_slist_free_all(j->req_headers);
        j->req_headers = NULL;
        j->easy = NULL;
        pool_put(e);
        outcome_failed(j);
    }
}

int deliver_add(struct job *j, CURL *e)
{
    j->easy = e;
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    active++;
    CURLMcode mc = curlloop_add(loop, e);
    if (mc != CURLM_OK) {
        active--;
        j->easy = NULL;
        snprintf(j->error, sizeof j->error, "cannot start the transfer: %s",
                 curl_multi_strerror(mc));
        return -1;
    }
    xfer_link(j);
    return 0;
}

int deliver_init(void)
{
    loop = curlloop_new(W.base, finish, NULL);
    if (!loop)
        return -1;
    curl_multi_setopt(curlloop_multi(loop), CURLMOPT_MAX_TOTAL_CONNECTIONS, W.cfg.concurrency);
    curl_multi_setopt(curlloop_multi(loop), CURLMOPT_MAXCONNECTS, W.cfg.concurrency);
    return 0;
}

void deliver_shutdown(void)
{
    long n = 0;
    gate_shutdown(); /* the jobs waiting for a rate-limit slot */
    while (xfers) {
        struct job *j = xfers;
        xfer_unlink(j);
        curlloop_remove(loop, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
        active--;
        W.inflight--;
        job_free(j);
        n++;
    }
    if (n)
        log_info(NULL, "stopped %ld deliveries still in flight; their jobs stay pending in Redis",
                 n);
    curlloop_free(loop);
    loop = NULL;
    for (size_t i = 0; i < npool; i++)
        curl_easy_cleanup(pool[i]);
    free(pool);
    pool = NULL;
    npool = cappool = 0;
}
