/* E-mail alerts: the message of an operational event for a mailto: subscriber, sent through
 * SMTP_URL by a libcurl transfer on the delivery multi handle. */
#include "mail.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "libmem.h"
#include "log.h"
#include "valid.h"

#define MAIL_PREFIX "mailto:"
#define MAIL_LINE_MAX 900 /* SMTP allows 998 bytes a line: longer values are folded */

/* One message being sent; its transfer is in deliver.c's multi handle. */
struct mail {
    struct mail *prev, *next;
    CURL *e;
    struct buf msg;
    size_t off; /* bytes libcurl has read */
    struct curl_slist *rcpt;
};

static struct mail *mails;

bool mail_is(const struct job *j)
{
    return job_url(j) && strncmp(job_url(j), MAIL_PREFIX, sizeof MAIL_PREFIX - 1) == 0;
}

static void mail_free(struct mail *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        mails = m->next;
    if (m->next)
        m->next->prev = m->prev;
    curl_slist_free_all(m->rcpt);
    buf_free(&m->msg);
    free(m);
}

static size_t on_read(char *out, size_t size, size_t nitems, void *arg)
{
    struct mail *m = arg;
    size_t room = size * nitems, left = m->msg.len - m->off;
    size_t n = left < room ? left : room;
    memcpy(out, m->msg.data + m->off, n);
    m->off += n;
    return n;
}

/* A header value: printable ASCII only (no CR/LF: nothing can add a header), at most max. */
static void add_header_text(struct buf *b, const char *s, size_t max)
{
    for (size_t i = 0; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf_addc(b, c >= 0x20 && c < 0x7f ? (char)c : '?');
    }
}

/* A body value: UTF-8 kept, control characters replaced, folded at MAIL_LINE_MAX bytes. */
static void add_body_text(struct buf *b, const char *s)
{
    size_t col = 0;
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (col >= MAIL_LINE_MAX && (c & 0xC0) != 0x80) {
            buf_adds(b, "\r\n    ");
            col = 4;
        }
        buf_addc(b, c < 0x20 || c == 0x7f ? ' ' : (char)c);
        col++;
    }
}

/* The message: headers, then one "field: value" line per field of the event's payload. */
static void compose(const struct job *j, const char *to, struct buf *b)
{
    cJSON *doc = cJSON_ParseWithLength(j->payload->data, j->payload->len);
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(doc, "url");
    char date[64];
    time_t now = (time_t)(clock_now_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *domain = strchr(W.cfg.smtp_from, '@');
    buf_adds(b, "From: <");
    add_header_text(b, W.cfg.smtp_from, 254);
    buf_adds(b, ">\r\nTo: <");
    add_header_text(b, to, 254);
    buf_printf(b, ">\r\nDate: %s\r\nMessage-ID: <%s.%d@", date, j->m.job, j->m.attempt);
    add_header_text(b, domain ? domain + 1 : "localhost", 253);
    buf_adds(b, ">\r\nSubject: [webhooks] ");
    add_header_text(b, j->m.name, EVENT_NAME_MAX);
    if (cJSON_IsString(url)) {
        buf_adds(b, ": ");
        add_header_text(b, url->valuestring, 200);
    }
    buf_adds(b, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n\r\n");
    buf_adds(b, "The webhook broker reports an operational event.\r\n\r\n");
    if (cJSON_IsObject(doc)) {
        for (const cJSON *it = doc->child; it; it = it->next) {
            add_body_text(b, it->string);
            buf_adds(b, ": ");
            if (cJSON_IsString(it)) {
                add_body_text(b, it->valuestring);
            } else {
                char *v = cJSON_PrintUnformatted(it);
                add_body_text(b, v ? v : "");
                free(v);
            }
            buf_adds(b, "\r\n");
        }
    } else {
        struct buf raw = {0};
        buf_add(&raw, j->payload->data, j->payload->len);
        buf_addc(&raw, '\0');
        add_body_text(b, raw.data);
        buf_adds(b, "\r\n");
        buf_free(&raw);
    }
    buf_printf(b, "eventId: %s\r\n", j->m.event);
    cJSON_Delete(doc);
}

static void fail_now(struct job *j, const char *why)
{
    j->duration_ms = (long)(clock_now_ms() - j->started_ms);
    j->status_code = 0;
    snprintf(j->error, sizeof j->error, "%s", why);
    log_warn(j->m.job, "e-mail to %s not sent: %s", job_url(j), why);
    outcome_failed(j);
}

void mail_start(struct job *j)
{
    const char *to = job_url(j) + sizeof MAIL_PREFIX - 1;
    j->status_code = 0;
    j->retry_after_ms = -1;
    j->error[0] = '\0';
    buf_reset(&j->excerpt);
    if (!W.cfg.smtp_url[0]) {
        fail_now(j, "SMTP_URL is not set");
        return;
    }
    if (!*to || strpbrk(to, "<>\r\n ,")) {
        fail_now(j, "malformed mailto: address");
        return;
    }
    struct mail *m = xcalloc(1, sizeof *m);
    compose(j, to, &m->msg);
    char rcpt[300];
    snprintf(rcpt, sizeof rcpt, "<%.290s>", to);
    m->rcpt = xslist_append(NULL, rcpt);
    char from[300];
    snprintf(from, sizeof from, "<%.290s>", W.cfg.smtp_from);
    CURL *e = curl_easy_init();
    if (!e) {
        fprintf(stderr, "fatal: curl_easy_init failed\n");
        abort();
    }
    m->e = e;
    m->next = mails;
    if (mails)
        mails->prev = m;
    mails = m;
    curl_easy_setopt(e, CURLOPT_URL, W.cfg.smtp_url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, m->rcpt);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, m);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)m->msg.len);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, W.cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, W.cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->error);
    if (deliver_add(j, e) < 0) {
        char why[sizeof j->error];
        snprintf(why, sizeof why, "%s", j->error);
        mail_free(m);
        curl_easy_cleanup(e);
        fail_now(j, why);
    }
}

void mail_done(struct job *j, CURL *e, CURLcode res)
{
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    for (struct mail *m = mails; m; m = m->next) {
        if (m->e == e) {
            mail_free(m);
            break;
        }
    }
    curl_easy_cleanup(e);
    j->duration_ms = (long)(clock_now_ms() - j->started_ms);
    j->status_code = 0; /* an SMTP reply code is not an HTTP status: named in the error */
    if (res == CURLE_OK) {
        j->out = OUT_DELIVERED;
        j->error[0] = '\0';
        log_debug(j->m.job, "e-mail sent to %s in %ld ms (attempt %d)", job_url(j), j->duration_ms,
                  j->m.attempt);
        outcome_submit(j);
        return;
    }
    char detail[sizeof j->error];
    snprintf(detail, sizeof detail, "%s", j->error[0] ? j->error : curl_easy_strerror(res));
    if (code > 0)
        snprintf(j->error, sizeof j->error, "SMTP %ld: %.200s", code, detail);
    else
        snprintf(j->error, sizeof j->error, "SMTP: %.220s", detail);
    log_debug(j->m.job, "e-mail attempt %d to %s failed: %s", j->m.attempt, job_url(j), j->error);
    outcome_failed(j);
}

void mail_shutdown(void)
{
    while (mails)
        mail_free(mails);
}
