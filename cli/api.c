/* One call to the broker's API and its outcome: the path built with escaped segments, the
 * answer printed as it came (--json) or parsed for the command to render, errors on stderr
 * and the exit code of their class. */
#include "api.h"

#include <stdio.h>
#include <string.h>

#include "http.h"
#include "table.h"

static void escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf_addc(b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_add(b, e, 3);
        }
    }
}

void api_seg(struct buf *path, const char *s)
{
    buf_addc(path, '/');
    escape(path, s);
}

void api_query(struct buf *path, const char *name, const char *value)
{
    if (!value)
        return;
    buf_addc(path, path->data && memchr(path->data, '?', path->len) ? '&' : '?');
    buf_adds(path, name);
    buf_addc(path, '=');
    escape(path, value);
}

int api_exit_code(long status)
{
    if (status >= 200 && status < 300)
        return EXIT_OK;
    if (status == 401)
        return EXIT_AUTH;
    if (status >= 400 && status < 500)
        return EXIT_CLIENT;
    return EXIT_SERVER;
}

/* Prints the API's error ({"error":{"code","message"}}) or, for an answer of another shape,
 * its first bytes. */
static void print_error(const struct cli *c, long status, const struct buf *body)
{
    cJSON *j = cJSON_ParseWithLength(body->data, body->len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (cJSON_IsString(code) && cJSON_IsString(msg)) {
        fprintf(stderr, "%s: HTTP %ld %s: %s\n", c->prog, status, code->valuestring,
                msg->valuestring);
    } else {
        int n = body->len > 300 ? 300 : (int)body->len;
        while (n > 0 && (body->data[n - 1] == '\n' || body->data[n - 1] == '\r'))
            n--;
        fprintf(stderr, "%s: HTTP %ld: %.*s\n", c->prog, status, n, body->data);
    }
    if (status == 401)
        fprintf(stderr,
                "%s: set WEBHOOK_API_KEY (or --api-key) to a key of the broker's "
                "WEBHOOK_API_KEYS or one made by webhookctl keys create (not revoked)\n",
                c->prog);
    cJSON_Delete(j);
}

static void print_raw(const struct buf *body)
{
    fwrite(body->data, 1, body->len, stdout);
    if (body->len == 0 || body->data[body->len - 1] != '\n')
        fputc('\n', stdout);
}

int api_do(const struct cli *c, const struct api_call *call, cJSON **out, long *status)
{
    struct http_req rq = {.method = call->method,
                          .path = call->path,
                          .body = call->body,
                          .body_len = call->body_len,
                          .idem_key = call->idem_key,
                          .auth = !call->no_auth};
    struct buf body = {0};
    char err[512];
    long st = 0;
    *out = NULL;
    if (status)
        *status = 0;
    if (http_send(c, &rq, &st, &body, err, sizeof err) < 0) {
        fprintf(stderr, "%s: cannot reach the broker at %s: %s\n", c->prog, c->api_url, err);
        return EXIT_CONNECT;
    }
    if (status)
        *status = st;
    int rc = api_exit_code(st);
    if (rc != EXIT_OK) {
        if (c->json)
            print_raw(&body);
        print_error(c, st, &body);
        goto out_free_body;
    }
    if (c->json) {
        print_raw(&body);
        goto out_free_body;
    }
    *out = cJSON_ParseWithLength(body.data, body.len);
    if (!*out) {
        fprintf(stderr, "%s: HTTP %ld with an answer that is not JSON: %.200s\n", c->prog, st,
                body.data);
        rc = EXIT_SERVER;
    }
out_free_body:
    buf_free(&body);
    return rc;
}

int api_show(const struct cli *c, const struct api_call *call)
{
    cJSON *j;
    int rc = api_do(c, call, &j, NULL);
    if (rc == EXIT_OK && j)
        table_kv(stdout, j, NULL);
    cJSON_Delete(j);
    return rc;
}
