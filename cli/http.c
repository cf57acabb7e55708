/* The libcurl client of webhookctl: one blocking request to the broker, its status and body. */
#include "http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "libmem.h"

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    buf_add(arg, p, size * n);
    return size * n;
}

int http_send(const struct cli *c, const struct http_req *rq, long *status, struct buf *body,
              char *err, size_t errlen)
{
    int rc = -1;
    CURL *h = xnonnull(curl_easy_init(), "curl_easy_init");
    struct curl_slist *hdrs = NULL;
    char *url = xasprintf("%s%s", c->api_url, rq->path);
    char errbuf[CURL_ERROR_SIZE] = "";

    if (rq->auth) {
        char *line = xasprintf("Authorization: Bearer %s", c->api_key);
        hdrs = xslist_append(hdrs, line);
        free(line);
    }
    /* Without a body, no Content-Type at all (libcurl would add a form type for a POST). */
    hdrs = xslist_append(hdrs, rq->body ? "Content-Type: application/json" : "Content-Type:");
    if (rq->idem_key) {
        char *line = xasprintf("Idempotency-Key: %s", rq->idem_key);
        hdrs = xslist_append(hdrs, line);
        free(line);
    }
    hdrs = xslist_append(hdrs, "Expect:"); /* no 100-continue round trip for larger bodies */

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    if (strcmp(rq->method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    else if (rq->body || strcmp(rq->method, "DELETE") != 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(rq->body ? rq->body_len : 0));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "webhookctl");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms < 10000 ? c->timeout_ms : 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");

    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        buf_free(body);
        goto out_free;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (!body->data)
        buf_add(body, "", 0); /* always a NUL-terminated string, even when empty */
    rc = 0;
out_free:
    free(url);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return rc;
}
