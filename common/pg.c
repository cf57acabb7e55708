/* A non-blocking PostgreSQL connection on the event loop: a FIFO of parameterised queries sent
 * one at a time, set-up SQL (migrations) run on every connect, reconnection with backoff. Also
 * the text-array literal builder used to send whole batches as one statement. */
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "libmem.h"
#include "log.h"
#include "reconn.h"

/* A statement without an answer for this long: the server is stopped or unreachable. */
#define PG_ANSWER_TIMEOUT_MS 30000 /* > SCHEMA_STATEMENT_TIMEOUT_S (schema.h) */

enum pg_conn_state { PGS_DOWN, PGS_CONNECTING, PGS_SETUP, PGS_UP };

struct pgq {
    struct pgq *next;
    const char *name; /* prepared statement name (static string) or NULL */
    char *sql;
    int nparams;
    char **values;
    int *lengths;
    int *formats;
    int result_format;
    pg_result_fn *cb;
    void *priv;
};

struct pg {
    struct event_base *base;
    char *conninfo;
    char *name;
    char *setup_sql;
    PGconn *conn;
    enum pg_conn_state state;
    bool freeing;
    struct event *io_ev; /* socket; re-assigned when libpq changes sockets while connecting */
    struct event *timer_ev; /* reconnect backoff and connect deadline */
    struct event *watch_ev; /* answer watchdog */
    struct reconn_watch watch; /* silence since the statement in flight was sent */
    struct reconn backoff;
    struct pgq *head, *tail; /* head is in flight when busy */
    bool busy;
    bool preparing; /* the head's statement is being prepared */
    const char **prepared; /* names prepared on this connection (static strings) */
    size_t nprepared;
    PGresult *last; /* last result of the statement in flight */
    pg_state_fn *on_state;
    void *arg;
};

static void start_connect(struct pg *p);
static void send_next(struct pg *p);
static void on_io(evutil_socket_t fd, short what, void *arg);

static void pgq_free(struct pgq *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->values[i]);
    free(q->values);
    free(q->lengths);
    free(q->formats);
    free(q->sql);
    free(q);
}

static struct pgq *pop(struct pg *p)
{
    struct pgq *q = p->head;
    if (!q)
        return NULL;
    p->head = q->next;
    if (!p->head)
        p->tail = NULL;
    return q;
}

static void fail_all(struct pg *p, const char *why)
{
    struct pgq *q;
    p->busy = false;
    while ((q = pop(p))) {
        q->cb(q->priv, NULL, why);
        pgq_free(q);
    }
}

static void set_up(struct pg *p, bool up)
{
    if (p->on_state)
        p->on_state(p, up, p->arg);
}

static void watch(struct pg *p, short what)
{
    if (event_pending(p->io_ev, EV_READ | EV_WRITE, NULL) &&
        event_get_fd(p->io_ev) == PQsocket(p->conn) &&
        (event_get_events(p->io_ev) & (EV_READ | EV_WRITE)) == what)
        return; /* unchanged: no epoll_ctl */
    event_del(p->io_ev);
    event_assign(p->io_ev, p->base, PQsocket(p->conn), what | EV_PERSIST, on_io, p);
    event_add(p->io_ev, NULL);
}

static void first_line(const char *msg, char *out, size_t outlen);

/* Closes the connection, fails the queued statements and schedules the reconnect. why may
 * point into the connection's own memory (PQerrorMessage): it is copied before PQfinish. */
static void drop(struct pg *p, const char *why_in)
{
    char why[512];
    first_line(why_in, why, sizeof why);
    bool was_up = p->state == PGS_UP || p->state == PGS_SETUP;
    event_del(p->io_ev);
    evtimer_del(p->timer_ev);
    if (p->last) {
        PQclear(p->last);
        p->last = NULL;
    }
    if (p->conn) {
        PQfinish(p->conn);
        p->conn = NULL;
    }
    p->state = PGS_DOWN;
    p->nprepared = 0;
    p->preparing = false;
    if (p->freeing)
        return;
    log_warn(p->name, "PostgreSQL connection %s: %s (retrying in %ld ms)",
             was_up ? "lost" : "failed", why, reconn_delay(&p->backoff));
    fail_all(p, "database connection lost");
    if (was_up)
        set_up(p, false);
    reconn_schedule(&p->backoff, p->timer_ev);
}

static void first_line(const char *msg, char *out, size_t outlen)
{
    size_t n = strcspn(msg, "\n");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

static void notice(void *arg, const char *message)
{
    struct pg *p = arg;
    char line[512];
    first_line(message, line, sizeof line);
    log_debug(p->name, "PostgreSQL notice: %s", line);
}

static void flush_output(struct pg *p)
{
    int rc = PQflush(p->conn);
    if (rc < 0) {
        char line[512];
        first_line(PQerrorMessage(p->conn), line, sizeof line);
        drop(p, line);
    } else {
        watch(p, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
    }
}

/* A whole statement finished (PQgetResult returned NULL). */
static void complete(struct pg *p)
{
    PGresult *res = p->last;
    p->last = NULL;
    p->busy = false;
    char err[512];
    const char *errp = NULL;
    if (!res) {
        errp = "no result";
    } else {
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            first_line(PQresultErrorMessage(res), err, sizeof err);
            errp = err;
        }
    }
    if (p->state == PGS_SETUP) {
        if (errp) {
            log_error(p->name, "database set-up (migrations) failed: %s", errp);
            PQclear(res);
            drop(p, "set-up failed");
            return;
        }
        PQclear(res);
        p->state = PGS_UP;
        reconn_reset(&p->backoff);
        log_info(p->name, "connected to PostgreSQL (server %d)", PQserverVersion(p->conn));
        set_up(p, true);
    } else if (p->preparing) {
        p->preparing = false;
        if (errp) {
            struct pgq *q = pop(p);
            log_error(p->name, "cannot prepare %s: %s", q->name, errp);
            q->cb(q->priv, res, errp);
            pgq_free(q);
        } else {
            p->prepared = xrealloc(p->prepared, (p->nprepared + 1) * sizeof *p->prepared);
            p->prepared[p->nprepared++] = p->head->name;
        }
        PQclear(res);
    } else {
        struct pgq *q = pop(p);
        if (q) {
            q->cb(q->priv, res, errp);
            pgq_free(q);
        }
        PQclear(res);
    }
    if (p->state == PGS_UP)
        send_next(p);
}

static void read_results(struct pg *p)
{
    if (!PQconsumeInput(p->conn)) {
        char line[512];
        first_line(PQerrorMessage(p->conn), line, sizeof line);
        drop(p, line);
        return;
    }
    while (p->conn && p->busy && !PQisBusy(p->conn)) {
        PGresult *res = PQgetResult(p->conn);
        if (!res) {
            complete(p);
            return; /* complete() may have sent the next statement */
        }
        if (p->last)
            PQclear(p->last);
        p->last = res;
    }
    if (p->conn && !p->busy) {
        /* Idle: drain notifications/errors so a server close is seen. */
        if (PQstatus(p->conn) == CONNECTION_BAD)
            drop(p, "server closed the connection");
    }
}

static void send_next(struct pg *p)
{
    if (p->busy || !p->head || p->state != PGS_UP)
        return;
    struct pgq *q = p->head;
    int ok;
    bool ready = !q->name;
    for (size_t i = 0; !ready && i < p->nprepared; i++)
        ready = p->prepared[i] == q->name || strcmp(p->prepared[i], q->name) == 0;
    if (!ready) {
        ok = PQsendPrepare(p->conn, q->name, q->sql, q->nparams, NULL);
        p->preparing = true;
    } else if (q->name) {
        ok = PQsendQueryPrepared(p->conn, q->name, q->nparams, (const char *const *)q->values,
                                 q->lengths, q->formats, q->result_format);
    } else {
        ok = PQsendQueryParams(p->conn, q->sql, q->nparams, NULL, (const char *const *)q->values,
                               q->lengths, q->formats, q->result_format);
    }
    if (!ok) {
        char line[512];
        first_line(PQerrorMessage(p->conn), line, sizeof line);
        drop(p, line);
        return;
    }
    p->busy = true;
    reconn_watch_restart(&p->watch, clock_mono_ms());
    flush_output(p);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pg *p = arg;
    bool silent = reconn_watch_tick(&p->watch, clock_mono_ms(), PG_ANSWER_TIMEOUT_MS);
    if (silent && p->busy && p->conn && p->state != PGS_CONNECTING)
        drop(p, "no answer from the server for 30 s");
}

static void poll_connect(struct pg *p)
{
    PostgresPollingStatusType st = PQconnectPoll(p->conn);
    switch (st) {
    case PGRES_POLLING_READING:
        watch(p, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(p, EV_WRITE);
        return;
    case PGRES_POLLING_FAILED: {
        char line[512];
        first_line(PQerrorMessage(p->conn), line, sizeof line);
        drop(p, line);
        return;
    }
    case PGRES_POLLING_OK:
    default:
        break;
    }
    evtimer_del(p->timer_ev);
    PQsetnonblocking(p->conn, 1);
    PQsetNoticeProcessor(p->conn, notice, p);
    if (p->setup_sql) {
        if (!PQsendQuery(p->conn, p->setup_sql)) {
            drop(p, "cannot send set-up SQL");
            return;
        }
        p->state = PGS_SETUP;
        p->busy = true;
        reconn_watch_restart(&p->watch, clock_mono_ms());
        flush_output(p);
    } else {
        p->state = PGS_UP;
        reconn_reset(&p->backoff);
        log_info(p->name, "connected to PostgreSQL (server %d)", PQserverVersion(p->conn));
        watch(p, EV_READ);
        set_up(p, true);
        send_next(p);
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct pg *p = arg;
    if (p->state == PGS_CONNECTING) {
        poll_connect(p);
        return;
    }
    if (what & EV_WRITE) {
        flush_output(p);
        if (!p->conn)
            return;
    }
    if (what & EV_READ)
        read_results(p);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct pg *p = arg;
    if (p->state == PGS_CONNECTING)
        drop(p, "connect timed out");
    else if (p->state == PGS_DOWN)
        start_connect(p);
}

static void start_connect(struct pg *p)
{
    p->conn = PQconnectStart(p->conninfo);
    if (!p->conn || PQstatus(p->conn) == CONNECTION_BAD) {
        /* Copied now: drop() finishes the connection, which frees its error message. */
        char line[512];
        first_line(p->conn ? PQerrorMessage(p->conn) : "out of memory", line, sizeof line);
        p->state = PGS_CONNECTING;
        drop(p, line);
        return;
    }
    p->state = PGS_CONNECTING;
    reconn_arm_deadline(p->timer_ev);
    poll_connect(p);
}

struct pg *pg_new(struct event_base *base, const char *conninfo, const char *name,
                  const char *setup_sql, pg_state_fn *on_state, void *arg)
{
    struct pg *p = xcalloc(1, sizeof *p);
    p->base = base;
    p->conninfo = xstrdup(conninfo);
    p->name = xstrdup(name);
    p->setup_sql = setup_sql ? xstrdup(setup_sql) : NULL;
    p->on_state = on_state;
    p->arg = arg;
    reconn_init(&p->backoff);
    p->io_ev = xnonnull(event_new(base, -1, 0, on_io, p), "event_new");
    p->timer_ev = xnonnull(evtimer_new(base, on_timer, p), "evtimer_new");
    p->watch_ev = reconn_watch_event(base, on_watch, p);
    start_connect(p);
    return p;
}

void pg_free(struct pg *p)
{
    if (!p)
        return;
    p->freeing = true;
    fail_all(p, "shutting down");
    drop(p, "shutting down");
    event_free(p->io_ev);
    event_free(p->timer_ev);
    event_free(p->watch_ev);
    free(p->conninfo);
    free(p->name);
    free(p->setup_sql);
    free(p->prepared);
    free(p);
}

bool pg_up(const struct pg *p)
{
    return p->state == PGS_UP;
}

struct event_base *pg_base(const struct pg *p)
{
    return p->base;
}

int pg_query(struct pg *p, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *formats, int result_format, pg_result_fn *cb,
             void *priv)
{
    return pg_query_prepared(p, NULL, sql, nparams, values, lengths, formats, result_format, cb,
                             priv);
}

int pg_query_prepared(struct pg *p, const char *name, const char *sql, int nparams,
                      const char *const *values, const int *lengths, const int *formats,
                      int result_format, pg_result_fn *cb, void *priv)
{
    if (p->state != PGS_UP)
        return -1;
    struct pgq *q = xcalloc(1, sizeof *q);
    q->name = name;
    q->sql = xstrdup(sql);
    q->nparams = nparams;
    q->values = xcalloc((size_t)nparams, sizeof *q->values);
    q->lengths = xcalloc((size_t)nparams, sizeof *q->lengths);
    q->formats = xcalloc((size_t)nparams, sizeof *q->formats);
    for (int i = 0; i < nparams; i++) {
        if (!values[i])
            continue;
        size_t len = (formats && formats[i]) ? (size_t)lengths[i] : strlen(values[i]);
        q->values[i] = xstrndup(values[i], len);
        q->lengths[i] = (int)len;
        q->formats[i] = formats ? formats[i] : 0;
    }
    q->result_format = result_format;
    q->cb = cb;
    q->priv = priv;
    if (p->tail)
        p->tail->next = q;
    else
        p->head = q;
    p->tail = q;
    send_next(p);
    return 0;
}

void pgarr_begin(struct buf *b)
{
    buf_addc(b, '{');
}

static void sep(struct buf *b)
{
    if (b->len && b->data[b->len - 1] != '{')
        buf_addc(b, ',');
}

void pgarr_add(struct buf *b, const char *s, size_t n)
{
    sep(b);
    buf_addc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            buf_add(b, s + start, i - start);
            buf_addc(b, '\\');
            start = i;
        }
    }
    buf_add(b, s + start, n - start);
    buf_addc(b, '"');
}

void pgarr_addll(struct buf *b, long long v)
{
    sep(b);
    buf_printf(b, "%lld", v);
}

void pgarr_null(struct buf *b)
{
    sep(b);
    buf_adds(b, "NULL");
}

void pgarr_end(struct buf *b)
{
    buf_addc(b, '}');
}
