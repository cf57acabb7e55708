/* Unit tests for common/curlloop.c, libcurl multi on a libevent event_base: each transfer
 * reaches the done callback exactly once, out of the multi handle and with its result; done
 * may start the next transfer (re-entrancy); a transfer removed before it ends never reaches
 * done; a socket transfer (a 127.0.0.1 listener that never answers) is driven by the socket
 * events and ended by the timer; once nothing runs, the loop has no events left. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "curlloop.h"
#include "libmem.h"
#include "unit.h"

struct seen {
    struct curlloop *loop;
    int done;
    CURLcode last;
    int restarts; /* transfers done still starts */
    char url[64];
};

static void on_done(CURL *e, CURLcode res, void *arg)
{
    struct seen *s = arg;
    CURLM *m = NULL;
    s->done++;
    s->last = res;
    /* already out of the multi handle: the caller owns it again */
    CHECK(curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&m) == CURLE_OK && m == NULL);
    if (s->restarts > 0) {
        s->restarts--;
        CHECK(curlloop_add(s->loop, e) == CURLM_OK); /* the same handle again, from done */
        return;
    }
    curl_easy_cleanup(e);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static void on_expired(evutil_socket_t fd, short kind, void *arg)
{
    (void)fd, (void)kind;
    *(int *)arg = 1;
}

/* Runs the loop until done has been called want times in all (10 s at most), then checks
 * that the loop is left without events (timer disarmed, no socket watched). */
static void run_until(struct event_base *base, const struct seen *s, int want)
{
    int expired = 0;
    struct event *guard = evtimer_new(base, on_expired, &expired);
    struct timeval tv = {10, 0};
    evtimer_add(guard, &tv);
    while (s->done < want && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    CHECK(!expired);
    event_free(guard);
    CHECK(event_base_loop(base, EVLOOP_NONBLOCK) == 1); /* 1: no events left */
}

static CURL *easy(const char *url)
{
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    return e;
}

int main(int argc, char **argv)
{
    (void)argc;
    if (libmem_init() < 0)
        return 1;
    struct event_base *base = event_base_new();
    struct seen s = {0};
    s.loop = curlloop_new(base, on_done, &s);
    CHECK(s.loop != NULL);

    /* a local file three times in a row, restarted from done */
    char path[] = "/tmp/test_curlloop_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, "hello", 5) == 5);
    close(fd);
    snprintf(s.url, sizeof s.url, "file://%s", path);
    s.restarts = 2;
    CHECK(curlloop_add(s.loop, easy(s.url)) == CURLM_OK);
    run_until(base, &s, 3);
    CHECK_EQ_INT(s.done, 3);
    CHECK_EQ_INT(s.last, CURLE_OK);
    unlink(path);

    /* a failure reaches done with its code */
    s.done = 0;
    CHECK(curlloop_add(s.loop, easy("file:///nonexistent/test_curlloop")) == CURLM_OK);
    run_until(base, &s, 1);
    CHECK_EQ_INT(s.done, 1);
    CHECK_EQ_INT(s.last, CURLE_FILE_COULDNT_READ_FILE);

    /* removed before it ends: done is not called */
    s.done = 0;
    CURL *e = easy("file:///dev/null");
    CHECK(curlloop_add(s.loop, e) == CURLM_OK);
    curlloop_remove(s.loop, e);
    curl_easy_cleanup(e);
    CHECK(event_base_loop(base, EVLOOP_NONBLOCK) == 1); /* nothing left to drive */
    CHECK_EQ_INT(s.done, 0);

    /* sockets: connected (the backlog accepts), the request written, no answer: the timer
     * ends it */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    CHECK(bind(l, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(l, 4) == 0 &&
          getsockname(l, (struct sockaddr *)&sin, &len) == 0);
    snprintf(s.url, sizeof s.url, "http://127.0.0.1:%d/", ntohs(sin.sin_port));
    e = easy(s.url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 300L);
    s.done = 0;
    CHECK(curlloop_add(s.loop, e) == CURLM_OK);
    run_until(base, &s, 1);
    CHECK_EQ_INT(s.done, 1);
    CHECK_EQ_INT(s.last, CURLE_OPERATION_TIMEDOUT);
    close(l);

    curlloop_free(s.loop);
    curlloop_free(NULL);
    event_base_free(base);
    return unit_done(argv[0]);
}
