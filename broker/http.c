/* The HTTP front: evhttp with limits, routing to handlers, request contexts that survive the
 * client going away, and JSON responses and errors. */
#include "http.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "auth.h"
#include "cfg.h"
#include "codec.h"
#include "conn.h"
#include "jsonv.h"
#include "libmem.h"
#include "log.h"
#include "metrics.h"
#include "schema.h"
#include "valid.h"

static struct evhttp *http;
static struct evhttp_bound_socket *bound;
static unsigned long req_counter;

typedef void handler_fn(struct req *r);

/* A path: nprefix literal segments, nparams parameters, then the literal suffix if any
 * (".../<name>/<id>/rotate-secret"); a suffix ending in '/' is followed by one more parameter
 * (".../<name>/<id>/recover/<rid>"). */
struct route {
    const char *prefix[3];
    int nprefix;
    int nparams;
    const char *suffix;
    handler_fn *get, *post, *del, *put, *patch;
    unsigned roles; /* the ROLE_ bits allowed (any one suffices); 0: public, no key needed */
};

/* Who may use a route (issue 13, decision 45; docs/api.md lists them per route). Handlers of
 * MANAGE routes confine a tenant key to its tenant (req_tenant_scope). */
#define ANY_KEY (ROLE_ADMIN | ROLE_PRODUCER | ROLE_TENANT)
#define MANAGE (ROLE_ADMIN | ROLE_TENANT)
#define TRIGGER (ROLE_ADMIN | ROLE_PRODUCER)
#define ADMIN ROLE_ADMIN

static const struct route routes[] = {
    {{"healthz"}, 1, 0, NULL, api_healthz, NULL, NULL, NULL, NULL, 0},
    {{"readyz"}, 1, 0, NULL, api_readyz, NULL, NULL, NULL, NULL, 0},
    {{"api", "v0", "webhooks"}, 3, 0, NULL, subs_list, subs_register, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "webhooks"}, 3, 1, NULL, subs_list_event, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "webhooks"}, 3, 2, NULL, subs_get, NULL, subs_delete, NULL, subs_patch, MANAGE},
    {{"api", "v0", "webhooks"}, 3, 2, "rotate-secret", NULL, subs_rotate_secret, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "trigger-event"}, 3, 1, NULL, NULL, trigger_post, NULL, NULL, NULL, TRIGGER},
    {{"api", "v0", "events"}, 3, 1, NULL, events_get, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "jobs"}, 3, 0, NULL, jobs_list, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "jobs"}, 3, 1, NULL, jobs_get, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "admin"}, 3, 0, "delivery", admin_delivery_get, NULL, NULL, admin_delivery_put,
     NULL, ADMIN},
    /* issue 10, recovery (broker/recover.c) */
    {{"api", "v0", "jobs"}, 3, 1, "retry", NULL, recover_retry, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "webhooks"}, 3, 2, "recover", NULL, recover_start, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "webhooks"}, 3, 2, "recover/", recover_get, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "events"}, 3, 1, "replay", NULL, recover_replay, NULL, NULL, NULL, MANAGE},
    /* status (issue 10, decision 29) */
    {{"api", "v0", "webhooks"}, 3, 2, "status", status_get, NULL, NULL, NULL, NULL, MANAGE},
    {{"api", "v0", "stats"}, 3, 0, NULL, stats_get, NULL, NULL, NULL, NULL, MANAGE},
    /* API keys and the caller's own principal (issue 13, decision 45; broker/keys.c) */
    {{"api", "v0", "keys"}, 3, 0, NULL, keys_list, keys_create, NULL, NULL, NULL, ADMIN},
    {{"api", "v0", "keys"}, 3, 1, NULL, NULL, NULL, keys_revoke, NULL, NULL, ADMIN},
    {{"api", "v0", "whoami"}, 3, 0, NULL, keys_whoami, NULL, NULL, NULL, NULL, ANY_KEY},
    /* the OpenAPI document (issue 12, decision 36): docs/openapi.json lists every route above */
    {{"api", "v0", "openapi.json"}, 3, 0, NULL, openapi_get, NULL, NULL, NULL, NULL, 0},
    /* Prometheus metrics (issue 12, decision 37; docs/metrics.md): no API key */
    {{"metrics"}, 1, 0, NULL, sample_get, NULL, NULL, NULL, NULL, 0},
    /* the web console's files (issue 12, decision 38; broker/console.c): no API key, they hold
     * no data; the page asks for the key and sends it with each API call */
    {{NULL}, 0, 0, NULL, console_index, NULL, NULL, NULL, NULL, 0},
    {{"console", "app.js"}, 2, 0, NULL, console_app_js, NULL, NULL, NULL, NULL, 0},
    {{"console", "style.css"}, 2, 0, NULL, console_style_css, NULL, NULL, NULL, NULL, 0},
};

/* True when segment i is the literal s (without a trailing '/'). */
static bool seg_is(const char *const seg[7], const size_t len[7], int i, const char *s)
{
    size_t n = strlen(s);
    n -= n > 0 && s[n - 1] == '/';
    return len[i] == n && memcmp(seg[i], s, len[i]) == 0;
}

/* Whether the route's suffix is followed by a parameter. */
static int route_tail(const struct route *rt)
{
    return rt->suffix && rt->suffix[0] && rt->suffix[strlen(rt->suffix) - 1] == '/';
}

static void on_conn_gone(void *arg)
{
    struct req *r = arg;
    log_debug(r->id, "client went away before the reply");
    r->ev = NULL;
    r->conn = NULL;
}

static void req_free(struct req *r)
{
    struct broker *b = r->b;
    free(r);
    broker_work_done(b);
}

/* Sends status with data as ctype, then the newline when nl (the request is not freed).
 * Every answer passes here once: a trigger's is counted, the client gone or not. */
static void reply_send(struct req *r, int status, const char *ctype, const char *cache,
                       const void *data, size_t len, bool nl)
{
    if (r->trigger)
        metrics_inc(M_TRIGGERS, metrics_trigger_set(status));
    if (r->ev) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->ev);
        evhttp_add_header(h, "Content-Type", ctype);
        evhttp_add_header(h, "Cache-Control", cache);
        struct evbuffer *out = evhttp_request_get_output_buffer(r->ev);
        if (len)
            evbuffer_add(out, data, len);
        if (nl)
            evbuffer_add(out, "\n", 1);
        if (r->conn)
            conn_request_end(r->conn);
        log_debug(r->id, "-> %d", status);
        evhttp_send_reply(r->ev, status, NULL, NULL);
    }
}

void http_reply(struct req *r, int status, struct buf *body)
{
    reply_send(r, status, "application/json", "no-store", body ? body->data : NULL,
               body ? body->len : 0, true);
    if (body)
        buf_free(body);
    req_free(r);
}

void http_reply_bytes(struct req *r, int status, const void *data, size_t len)
{
    reply_send(r, status, "application/json", "no-store", data, len, false);
    req_free(r);
}

void http_reply_typed(struct req *r, int status, const char *ctype, const char *cache,
                      const void *data, size_t len)
{
    reply_send(r, status, ctype, cache, data, len, false);
    req_free(r);
}

void http_error(struct req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct buf b = {0};
    json_error_body(&b, code, msg);
    if (status >= 500)
        log_warn(r->id, "%d %s: %s", status, code, msg);
    else
        log_debug(r->id, "%d %s: %s", status, code, msg);
    http_reply(r, status, &b);
}

void http_db_error(struct req *r, PGresult *res, const char *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!res)
        http_error(r, 503, "unavailable", "the database is unavailable (%s); retry later", err);
    else if (state && strcmp(state, "57014") == 0) /* statement_timeout (decision 51) */
        http_error(r, 503, "unavailable",
                   "the database did not finish this request within %d s (%s); retry later",
                   SCHEMA_STATEMENT_TIMEOUT_S, err);
    else
        http_error(r, 500, "internal", "database error: %s", err);
}

bool http_require_json_body(struct req *r)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(r->ev), "Content-Type");
    if (!ct) {
        http_error(r, 415, "unsupported_media_type",
                   "Content-Type must be application/json (none was sent)");
        return false;
    }
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n != 16 || strncasecmp(ct, "application/json", 16) != 0) {
        http_error(r, 415, "unsupported_media_type", "Content-Type must be application/json");
        return false;
    }
    if (r->body_len == 0) {
        http_error(r, 400, "invalid_json", "the request body is empty; send a JSON value");
        return false;
    }
    return true;
}

cJSON *http_body_object(struct req *r)
{
    char err[256];
    if (!http_require_json_body(r))
        return NULL;
    if (jsonv_validate(r->body, r->body_len, err, sizeof err) < 0) {
        http_error(r, 400, "invalid_json", "%s", err);
        return NULL;
    }
    cJSON *doc = cJSON_ParseWithLength(r->body, r->body_len);
    if (!doc) {
        http_error(r, 400, "invalid_json", "the body is not valid JSON");
        return NULL;
    }
    if (!cJSON_IsObject(doc)) {
        http_error(r, 400, "invalid_json", "the body must be a JSON object");
    } else if (jsonv_has_dup_keys(doc)) {
        http_error(r, 400, "invalid_json", "the body has the same field twice");
    } else {
        return doc;
    }
    cJSON_Delete(doc);
    return NULL;
}

char *http_query_param(struct req *r, const char *name)
{
    if (!r->query)
        return NULL;
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (evhttp_parse_query_str(r->query, &q) != 0) {
        evhttp_clear_headers(&q);
        return NULL;
    }
    const char *v = evhttp_find_header(&q, name);
    char *out = v ? xstrdup(v) : NULL;
    evhttp_clear_headers(&q);
    return out;
}

/* "Authorization: Bearer <key>" with a configured key: its principal in *who. */
static bool authorized(struct evhttp_request *ev, struct principal *who)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(ev), "Authorization");
    return h && auth_check(h, strlen(h), who);
}

const char *req_tenant_scope(const struct req *r)
{
    return (r->who.roles & ROLE_ADMIN) ? NULL : r->who.tenant;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "?";
}

/* Splits the raw path into at most 7 segments (none for "/"); -1 on an empty segment or too
 * many. */
static int split_path(const char *path, const char *seg[7], size_t len[7])
{
    if (!path || path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0;
    int n = 0;
    const char *p = path + 1;
    while (1) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (l == 0 || n == 7)
            return -1;
        seg[n] = p;
        len[n] = l;
        n++;
        if (!slash)
            return n;
        p = slash + 1;
    }
}

static void dispatch(struct req *r, enum evhttp_cmd_type method, const char *path)
{
    /* The OpenAPI document is public: it describes the API and holds no data (decision 36). */
    if (path && strncmp(path, "/api/", 5) == 0 && strcmp(path, "/api/v0/openapi.json") != 0 &&
        !authorized(r->ev, &r->who)) {
        evhttp_add_header(evhttp_request_get_output_headers(r->ev), "WWW-Authenticate",
                          "Bearer");
        http_error(r, 401, "unauthorized",
                   "send a valid API key as 'Authorization: Bearer <key>'");
        return;
    }
    const char *seg[7];
    size_t len[7];
    int n = split_path(path, seg, len);
    for (size_t i = 0; n >= 0 && i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        if (n != rt->nprefix + rt->nparams + (rt->suffix != NULL) + route_tail(rt))
            continue;
        bool match = !rt->suffix || seg_is(seg, len, rt->nprefix + rt->nparams, rt->suffix);
        for (int k = 0; k < rt->nprefix && match; k++)
            match = seg_is(seg, len, k, rt->prefix[k]);
        if (!match)
            continue;
        handler_fn *h = method == EVHTTP_REQ_GET      ? rt->get
                        : method == EVHTTP_REQ_POST   ? rt->post
                        : method == EVHTTP_REQ_DELETE ? rt->del
                        : method == EVHTTP_REQ_PUT    ? rt->put
                        : method == EVHTTP_REQ_PATCH  ? rt->patch
                                                      : NULL;
        if (!h) {
            char allow[40] = "";
            size_t al = 0;
            const struct {
                handler_fn *h;
                const char *name;
            } ms[] = {{rt->get, "GET"},    {rt->post, "POST"},    {rt->put, "PUT"},
                      {rt->del, "DELETE"}, {rt->patch, "PATCH"}};
            for (size_t m = 0; m < sizeof ms / sizeof ms[0]; m++)
                if (ms[m].h)
                    al += (size_t)snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "",
                                           ms[m].name);
            evhttp_add_header(evhttp_request_get_output_headers(r->ev), "Allow", allow);
            http_error(r, 405, "method_not_allowed", "%s is not allowed here; use %s",
                       method_name(method), allow);
            return;
        }
        if (rt->roles && !(r->who.roles & rt->roles)) {
            struct buf have = {0}, need = {0};
            auth_roles_json(&have, r->who.roles);
            auth_roles_json(&need, rt->roles);
            http_error(r, 403, "forbidden", "this key (roles %.*s) may not %s %s: it needs one of %.*s",
                       (int)have.len, have.data, method_name(method), path, (int)need.len,
                       need.data);
            buf_free(&have);
            buf_free(&need);
            return;
        }
        r->nseg = rt->nparams + route_tail(rt);
        for (int k = 0; k < r->nseg; k++) {
            int at = k < rt->nparams ? rt->nprefix + k : n - 1; /* the tail follows the suffix */
            const char *s = seg[at];
            size_t l = len[at];
            if (path_segment_decode(s, l, r->seg[k], sizeof r->seg[k]) < 0) {
                http_error(r, 400, "invalid_field",
                           "path segment %d is too long or not valid percent-encoding", k + 1);
                return;
            }
        }
        h(r);
        return;
    }
    http_error(r, 404, "not_found", "no route for %s %s", method_name(method), path ? path : "");
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    struct broker *b = arg;
    struct req *r = xcalloc(1, sizeof *r);
    r->b = b;
    r->ev = ev;
    r->conn = evhttp_request_get_connection(ev);
    snprintf(r->id, sizeof r->id, "req-%lu", ++req_counter);
    b->outstanding++;
    enum evhttp_cmd_type method = evhttp_request_get_command(ev);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    static const char trigger_path[] = "/api/v0/trigger-event";
    r->trigger = path && strncmp(path, trigger_path, sizeof trigger_path - 1) == 0 &&
                 (path[sizeof trigger_path - 1] == '/' || path[sizeof trigger_path - 1] == '\0');
    struct conn_refusal refusal;
    if (r->conn && conn_request_begin(r->conn, on_conn_gone, r, &refusal)) {
        evhttp_add_header(evhttp_request_get_output_headers(ev), "Connection", "close");
        http_error(r, refusal.status, refusal.code, "%s", refusal.msg);
        return;
    }
    r->query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evbuffer *in = evhttp_request_get_input_buffer(ev);
    r->body_len = evbuffer_get_length(in);
    r->body = r->body_len ? xnonnull(evbuffer_pullup(in, -1), "evbuffer_pullup") : "";
    log_debug(r->id, "%s %s (%zu bytes)", method_name(method), path ? path : "?", r->body_len);
    if (conn_body_too_large((long long)r->body_len, &refusal)) {
        http_error(r, refusal.status, refusal.code, "%s", refusal.msg);
        return;
    }
    if (b->draining) {
        http_error(r, 503, "unavailable", "the broker is shutting down; retry on another instance");
        return;
    }
    dispatch(r, method, path);
}

int http_start(struct broker *b, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (cfg_parse_hostport(b->cfg.listen, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "BROKER_LISTEN must be host:port (got \"%s\")", b->cfg.listen);
        return -1;
    }
    if (auth_load(b->cfg.api_keys, err, errlen) < 0)
        return -1;
    http = xnonnull(evhttp_new(b->base), "evhttp_new");
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(http, (int)((b->cfg.request_timeout_ms + 999) / 1000));
    evhttp_set_gencb(http, on_request, b);
    bound = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (!bound) {
        snprintf(err, errlen, "cannot listen on %s", b->cfg.listen);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bound);
    int bound_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    struct conn_limits lim = {b->cfg.max_connections, b->cfg.request_deadline_ms,
                              b->cfg.max_header_bytes, b->cfg.max_headers, b->cfg.max_body};
    if (conn_attach(b->base, http, evhttp_bound_socket_get_listener(bound), &lim, err, errlen) < 0)
        return -1;
    log_info(NULL, "listening on http://%s:%d (Prometheus metrics at /metrics)", host, bound_port);
    return 0;
}

void http_stop_accepting(void)
{
    if (http && bound) {
        conn_stop_accepting();
        evhttp_del_accept_socket(http, bound);
        bound = NULL;
    }
}

void http_free(void)
{
    if (http)
        evhttp_free(http);
    http = NULL;
    conn_free();
}

void http_col_str(struct buf *b, const char *key, PGresult *res, int row, int col)
{
    buf_printf(b, ",\"%s\":", key);
    if (PQgetisnull(res, row, col))
        buf_adds(b, "null");
    else
        json_escape(b, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
}

void http_col_num(struct buf *b, const char *key, PGresult *res, int row, int col)
{
    buf_printf(b, ",\"%s\":%s", key,
               PQgetisnull(res, row, col) ? "null" : PQgetvalue(res, row, col));
}
