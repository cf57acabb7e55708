/* Minimal unit-test helpers: counted checks that report file:line and keep going. */
#ifndef WH_UNIT_H
#define WH_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_checks, unit_failed;

static inline int unit_check(int ok, const char *file, int line, const char *expr)
{
    unit_checks++;
    if (!ok) {
        unit_failed++;
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
    }
    return ok;
}

#define CHECK(cond) unit_check(!!(cond), __FILE__, __LINE__, #cond)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long ua_ = (long long)(a), ub_ = (long long)(b);                                      \
        if (!unit_check(ua_ == ub_, __FILE__, __LINE__, #a " == " #b))                             \
            fprintf(stderr, "    got %lld, want %lld\n", ua_, ub_);                                \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *ua_ = (a), *ub_ = (b);                                                         \
        if (!unit_check(ua_ && ub_ && strcmp(ua_, ub_) == 0, __FILE__, __LINE__, #a " eq " #b))    \
            fprintf(stderr, "    got \"%s\", want \"%s\"\n", ua_ ? ua_ : "(null)",                 \
                    ub_ ? ub_ : "(null)");                                                         \
    } while (0)

/* Prints "<binary>: N checks, M failed" and gives main()'s exit status. */
static inline int unit_done(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    printf("%s: %d checks, %d failed\n", slash ? slash + 1 : argv0, unit_checks, unit_failed);
    return unit_failed != 0 || unit_checks == 0;
}

#endif
