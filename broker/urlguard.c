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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "netguard.h"

#define RESOLVER_THREADS 4
#define REASON_MAX 512

struct lookup {
    struct lookup *next;
    char *host; /* as getaddrinfo() takes it: no brackets */
    urlguard_cb *cb;
    void *arg;
    char refused[REASON_MAX]; /* set by the thread; empty when allowed */
};

static struct netguard guard;
static pthread_t threads[RESOLVER_THREADS];
static int nthreads;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct lookup *queue_head, **queue_tail = &queue_head;
static bool stopping;
static int done_pipe[2] = {-1, -1};
static struct event *done_ev;

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
    (void)arg;
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
        pthread_mutex_unlock(&mu);
        resolve(l);
        /* A pointer is far below PIPE_BUF, so the write is atomic; the pipe is blocking on
         * this side, so a full pipe only makes the thread wait for the loop. */
        ssize_t w;
        do
            w = write(done_pipe[1], &l, sizeof l);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof l) {
            log_error(NULL, "resolver: cannot hand a lookup back: %s", strerror(errno));
            abort();
        }
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void lookup_free(struct lookup *l)
{
    free(l->host);
    free(l);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    struct lookup *batch[64];
    ssize_t n = read(fd, batch, sizeof batch);
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof batch[0]; i++) {
        struct lookup *l = batch[i];
        l->cb(l->arg, l->refused[0] ? l->refused : NULL);
        lookup_free(l);
    }
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
    } else {
        struct lookup *l = xcalloc(1, sizeof *l);
        l->host = xstrdup(host);
        l->cb = cb;
        l->arg = arg;
        pthread_mutex_lock(&mu);
        *queue_tail = l;
        queue_tail = &l->next;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
        return;
    }
    cb(arg, reason[0] ? reason : NULL);
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
    done_ev = event_new(b->base, done_pipe[0], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(done_ev, NULL);
    for (; nthreads < RESOLVER_THREADS; nthreads++) {
        int rc = pthread_create(&threads[nthreads], NULL, resolver_main, NULL);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start the resolver threads: %s", strerror(rc));
            return -1;
        }
    }
    return 0;
}

void urlguard_stop(void)
{
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    nthreads = 0;
    while (queue_head) {
        struct lookup *l = queue_head;
        queue_head = l->next;
        lookup_free(l);
    }
    queue_tail = &queue_head;
    if (done_ev) {
        /* lookups finished but not yet called back */
        struct lookup *l;
        while (read(done_pipe[0], &l, sizeof l) == (ssize_t)sizeof l)
            lookup_free(l);
        event_free(done_ev);
        done_ev = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (done_pipe[i] >= 0)
            close(done_pipe[i]);
        done_pipe[i] = -1;
    }
}
