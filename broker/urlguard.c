/* Registration-time SSRF check of webhook URLs: https-only mode, then the host resolved off the
 * event loop and every address it resolves to checked by the guard (common/netguard.h). */
/* getaddrinfo() blocks, so lookups run on a few threads; each finished lookup is handed back
 * through a pipe whose read end is an event of the loop, where the callback runs. Resolving
 * with getaddrinfo() is what libcurl's threaded resolver does in the worker, so both see the
 * same addresses (modulo DNS changing in between, which the worker's connect-time check
 * covers). */
#include "urlguard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "libmem.h"
#include "log.h"
#include "mem.h"
#include "netguard.h"

#define RESOLVER_THREADS 4
#define REASON_MAX 512
#define STOP_JOIN_MS 200 /* at exit, how long lookups under way may still finish */

/* One lookup. Owned by the queue while queued, by a thread while it resolves, then by the loop
 * (handed back through the pipe) which calls back and frees it. At the deadline the loop
 * answers it early: a queued lookup is taken out of the queue and freed, one under way is
 * marked answered and freed when the thread hands it back, without a second callback. */
struct lookup {
    struct lookup *next; /* queue link (under mu) */
    char *host;          /* as getaddrinfo() takes it: no brackets */
    urlguard_cb *cb;
    void *arg;
    char refused[REASON_MAX]; /* set by the thread; empty when allowed */
    /* loop thread only */
    struct event *deadline;
    bool answered; /* the callback already ran (deadline, shutdown) */
    /* under mu */
    bool queued;
    bool orphaned; /* urlguard_stop() gave up waiting: the thread frees it */
};

static struct netguard guard;
static pthread_t threads[RESOLVER_THREADS];
static struct lookup *current[RESOLVER_THREADS]; /* under mu: what each thread resolves */
static int nthreads;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct lookup *queue_head, **queue_tail = &queue_head;
static bool stopping;
static int done_pipe[2] = {-1, -1};
static struct event *done_ev;
static struct event_base *base;
static long queue_max, timeout_ms;
static long outstanding; /* loop thread: lookups queued, under way, or not yet handed back */

/* Checks every address of res; the first refusal goes into out. */
static void check_addresses(const char *host, const struct addrinfo *res, char *out, size_t outlen)
{
    char why[256];
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (netguard_allows(&guard, ai->ai_addr, ai->ai_addrlen, why, sizeof why) < 0) {
            snprintf(out, outlen, "webhookUrl host %.200s resolves to a refused address: %s", host,
                     why);
            return;
        }
    }
}

static void resolve(struct lookup *l)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(l->host, NULL, &hints, &res);
    if (rc == 0) {
        check_addresses(l->host, res, l->refused, sizeof l->refused);
        freeaddrinfo(res);
    } else if (rc == EAI_NONAME
#ifdef EAI_NODATA
               || rc == EAI_NODATA
#endif
    ) {
        snprintf(l->refused, sizeof l->refused, "webhookUrl host %.200s does not resolve (%s)",
                 l->host, gai_strerror(rc));
    } else {
        /* Written from this thread: the logger writes whole lines with one call. */
        log_warn(NULL, "could not resolve %s to check it (%s); accepting it, the worker checks "
                       "the address at every delivery",
                 l->host, rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    }
}

static void *resolver_main(void *arg)
{
    int self = (int)(intptr_t)arg;
    pthread_mutex_lock(&mu);
    while (1) {
        while (!queue_head && !stopping)
            pthread_cond_wait(&cv, &mu);
        if (stopping)
            break;
        struct lookup *l = queue_head;
        queue_head = l->next;
        if (!queue_head)
            queue_tail = &queue_head;
        l->queued = false;
        current[self] = l;
        pthread_mutex_unlock(&mu);
        resolve(l);
        pthread_mutex_lock(&mu);
        current[self] = NULL;
        if (l->orphaned) {
            free(l->host);
            free(l);
            continue;
        }
        /* Under mu, so urlguard_stop() sees each lookup either in current[] or in the pipe.
         * A pointer is far below PIPE_BUF, so the write is atomic, and the pipe holds more
         * pointers than lookups can be outstanding (queue_max), so it never blocks. */
        ssize_t w;
        do
            w = write(done_pipe[1], &l, sizeof l);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof l) {
            log_error(NULL, "resolver: cannot hand a lookup back: %s", strerror(errno));
            abort();
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Loop thread, once the lookup belongs to no thread and no queue. */
static void lookup_free(struct lookup *l)
{
    if (l->deadline)
        event_free(l->deadline);
    free(l->host);
    free(l);
    outstanding--;
}

/* Calls back at most once. */
static void answer(struct lookup *l, enum urlguard_verdict v, const char *reason)
{
    if (l->answered)
        return;
    l->answered = true;
    if (l->deadline)
        event_del(l->deadline);
    l->cb(l->arg, v, reason);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    struct lookup *batch[64];
    ssize_t n = read(fd, batch, sizeof batch);
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof batch[0]; i++) {
        struct lookup *l = batch[i];
        if (l->answered)
            log_debug(NULL, "url check: the lookup of %s finished after its deadline; dropped",
                      l->host);
        answer(l, l->refused[0] ? URLGUARD_REFUSED : URLGUARD_ALLOWED,
               l->refused[0] ? l->refused : NULL);
        lookup_free(l);
    }
}

/* RESOLVE_TIMEOUT passed: the lookup is answered as allowed, like a lookup that failed for a
 * reason other than "no such name" (decision 15): the worker checks every address it dials. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct lookup *l = arg;
    pthread_mutex_lock(&mu);
    bool was_queued = l->queued;
    if (was_queued) {
        struct lookup **pp = &queue_head;
        while (*pp != l)
            pp = &(*pp)->next;
        *pp = l->next;
        if (queue_tail == &l->next)
            queue_tail = pp;
        l->queued = false;
    }
    pthread_mutex_unlock(&mu);
    log_warn(NULL,
             "could not resolve %s within RESOLVE_TIMEOUT (%s); accepting it, the worker "
             "checks the address at every delivery",
             l->host, was_queued ? "still queued behind other lookups" : "no answer yet");
    answer(l, URLGUARD_ALLOWED, NULL);
    if (was_queued)
        lookup_free(l);
}

/* Builds the IPv4 or IPv6 socket address of a literal host, or returns false. */
static bool literal_addr(const char *host, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        *len = sizeof *in4;
        return true;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        *len = sizeof *in6;
        return true;
    }
    return false;
}

void urlguard_check(const struct url_host *url, urlguard_cb *cb, void *arg)
{
    char reason[REASON_MAX] = "", why[256];
    const char *host = url->name;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (guard.https_only && !url->https) {
        snprintf(reason, sizeof reason, "webhookUrl must use https (WEBHOOK_HTTPS_ONLY is on)");
    } else if (guard.allow_private) {
        /* nothing to check */
    } else if (literal_addr(host, &ss, &sl)) {
        if (netguard_allows(&guard, (struct sockaddr *)&ss, sl, why, sizeof why) < 0)
            snprintf(reason, sizeof reason, "webhookUrl points to a refused address: %s", why);
    } else if (netguard_is_localhost_name(host)) {
        /* libcurl answers these itself with 127.0.0.1 and ::1, without asking DNS */
        static const char *const local[] = {"127.0.0.1", "::1"};
        for (size_t i = 0; i < 2 && !reason[0]; i++) {
            if (literal_addr(local[i], &ss, &sl) &&
                netguard_allows(&guard, (struct sockaddr *)&ss, sl, why, sizeof why) < 0)
                snprintf(reason, sizeof reason, "webhookUrl host %.200s is the local host: %s", host,
                         why);
        }
    } else if (outstanding >= queue_max) {
        log_warn(NULL,
                 "url check: %ld lookups waiting or under way (RESOLVE_QUEUE_MAX); "
                 "refusing to check %s now",
                 outstanding, host);
        cb(arg, URLGUARD_BUSY,
           "too many webhook URL checks are waiting for DNS (RESOLVE_QUEUE_MAX); retry later");
        return;
    } else {
        struct lookup *l = xcalloc(1, sizeof *l);
        l->host = xstrdup(host);
        l->cb = cb;
        l->arg = arg;
        l->deadline = xnonnull(evtimer_new(base, on_deadline, l), "evtimer_new");
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(l->deadline, &tv);
        outstanding++;
        log_debug(NULL, "url check: resolving %s (%ld lookups waiting or under way)", host,
                  outstanding);
        pthread_mutex_lock(&mu);
        l->queued = true;
        *queue_tail = l;
        queue_tail = &l->next;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
        return;
    }
    cb(arg, reason[0] ? URLGUARD_REFUSED : URLGUARD_ALLOWED, reason[0] ? reason : NULL);
}

int urlguard_start(struct broker *b, char *err, size_t errlen)
{
    char e[256];
    if (netguard_init(&guard, b->cfg.allow_private, b->cfg.https_only, b->cfg.allowed_cidrs, e,
                      sizeof e) < 0) {
        snprintf(err, errlen, "WEBHOOK_ALLOWED_CIDRS: %s", e);
        return -1;
    }
    char desc[1024];
    netguard_describe(&guard, desc, sizeof desc);
    if (guard.allow_private)
        log_warn(NULL, "SSRF guard %s", desc);
    else
        log_info(NULL, "SSRF guard %s", desc);
    if (pipe(done_pipe) < 0 || fcntl(done_pipe[0], F_SETFL, O_NONBLOCK) < 0 ||
        fcntl(done_pipe[0], F_SETFD, FD_CLOEXEC) < 0 ||
        fcntl(done_pipe[1], F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, errlen, "cannot create the resolver pipe: %s", strerror(errno));
        return -1;
    }
    base = b->base;
    queue_max = b->cfg.resolve_queue_max;
    timeout_ms = b->cfg.resolve_timeout_ms;
    done_ev = xnonnull(event_new(b->base, done_pipe[0], EV_READ | EV_PERSIST, on_done, NULL),
                       "event_new");
    event_add(done_ev, NULL);
    for (; nthreads < RESOLVER_THREADS; nthreads++) {
        int rc =
            pthread_create(&threads[nthreads], NULL, resolver_main, (void *)(intptr_t)nthreads);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start the resolver threads: %s", strerror(rc));
            return -1;
        }
    }
    return 0;
}

void urlguard_stop(void)
{
    static const char gone[] = "the broker is shutting down; retry on another instance";
    /* Queued lookups: answered and freed; the threads stop taking new ones. */
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_broadcast(&cv);
    struct lookup *q = queue_head;
    queue_head = NULL;
    queue_tail = &queue_head;
    pthread_mutex_unlock(&mu);
    while (q) {
        struct lookup *l = q;
        q = l->next;
        answer(l, URLGUARD_BUSY, gone);
        lookup_free(l);
    }
    /* Lookups under way get a moment to finish; getaddrinfo() cannot be interrupted, so a
     * thread still blocked after it is left to finish on its own (detached) and frees its
     * lookup itself. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += STOP_JOIN_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    bool joined[RESOLVER_THREADS] = {false};
    for (int i = 0; i < nthreads; i++)
        joined[i] = pthread_timedjoin_np(threads[i], NULL, &until) == 0;
    /* Under mu, so a thread cannot finish its lookup meanwhile: the loop's parts (the
     * callback, the deadline) are dealt with here and the thread frees the rest. */
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nthreads; i++) {
        struct lookup *l = joined[i] ? NULL : current[i];
        if (!l)
            continue;
        log_warn(NULL, "url check: still resolving %s at exit; abandoned", l->host);
        answer(l, URLGUARD_BUSY, gone);
        event_free(l->deadline);
        l->deadline = NULL;
        l->orphaned = true;
        outstanding--;
    }
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nthreads; i++)
        if (!joined[i])
            pthread_detach(threads[i]);
    nthreads = 0;
    if (done_ev) {
        /* lookups handed back but not yet called back */
        struct lookup *l;
        while (read(done_pipe[0], &l, sizeof l) == (ssize_t)sizeof l) {
            answer(l, URLGUARD_BUSY, gone);
            lookup_free(l);
        }
        event_free(done_ev);
        done_ev = NULL;
    }
    /* a thread left running never writes: its lookup is orphaned, or it is exiting */
    for (int i = 0; i < 2; i++) {
        if (done_pipe[i] >= 0)
            close(done_pipe[i]);
        done_pipe[i] = -1;
    }
}
