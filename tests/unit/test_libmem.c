/* Unit tests for common/libmem.c: after libmem_init, libevent, libcurl and cJSON allocate
 * through xmalloc (counted here by wrapping it at link time: -Wl,--wrap=xmalloc), and
 * xslist_append aborts rather than dropping the header list when curl_slist_append fails
 * (simulated with -Wl,--wrap=curl_slist_append). */
#include <cJSON.h>
#include <event2/buffer.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libmem.h"
#include "mem.h"
#include "unit.h"

void *__real_xmalloc(size_t n);
void *__wrap_xmalloc(size_t n);
struct curl_slist *__real_curl_slist_append(struct curl_slist *l, const char *s);
struct curl_slist *__wrap_curl_slist_append(struct curl_slist *l, const char *s);

static long xmalloc_calls;
static int slist_fails;

void *__wrap_xmalloc(size_t n)
{
    xmalloc_calls++;
    return __real_xmalloc(n);
}

struct curl_slist *__wrap_curl_slist_append(struct curl_slist *l, const char *s)
{
    if (slist_fails)
        return NULL;
    return __real_curl_slist_append(l, s);
}

static void test_hooks(void)
{
    CHECK_EQ_INT(libmem_init(), 0);

    long before = xmalloc_calls;
    cJSON *o = cJSON_Parse("{\"a\":[1,2,3],\"b\":\"text\"}");
    CHECK(o != NULL);
    CHECK(xmalloc_calls > before);
    cJSON_Delete(o);

    before = xmalloc_calls;
    struct evbuffer *eb = evbuffer_new();
    CHECK(eb != NULL);
    evbuffer_add(eb, "hello", 5);
    CHECK(xmalloc_calls > before);
    evbuffer_free(eb);

    before = xmalloc_calls;
    struct curl_slist *l = xslist_append(NULL, "X-One: 1");
    l = xslist_append(l, "X-Two: 2");
    CHECK(xmalloc_calls > before);
    CHECK_STR(l->data, "X-One: 1");
    CHECK_STR(l->next->data, "X-Two: 2");
    curl_slist_free_all(l);
    curl_global_cleanup();
}

/* Runs fn in a child; true when the child was killed by SIGABRT. */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(5);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void append_failing(void)
{
    struct curl_slist *l = xslist_append(NULL, "X-One: 1");
    slist_fails = 1;
    l = xslist_append(l, "X-Two: 2"); /* must abort, never return the NULL */
    _exit(l ? 3 : 4);
}

static void nonnull_null(void)
{
    xnonnull(NULL, "test_call");
}

static void test_failures(void)
{
    CHECK(aborts(append_failing));
    CHECK(aborts(nonnull_null));
    int x;
    CHECK(xnonnull(&x, "test_call") == &x);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_hooks();
    test_failures();
    return unit_done(argv[0]);
}
