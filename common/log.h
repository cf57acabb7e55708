/* Levelled, printf-checked logging to stderr with a context tag (request, job or subscription id),
 * as text or as one JSON object per line (LOG_FORMAT, docs/decisions.md 34). */
#ifndef WH_LOG_H
#define WH_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* The JSON member a context string goes into follows its shape: "req-N" is a request id
 * (requestId), "conn-N" a connection id (connectionId), a UUID an id of the kind the call site
 * gives (a job id unless it says otherwise: log_sub, log_at), anything else a module name
 * ("prep", "index", a Redis or PostgreSQL connection's name: module). */
enum log_ctx { LOG_CTX_JOB = 0, LOG_CTX_EVENT, LOG_CTX_SUB, LOG_CTX_RECOVERY };

extern enum log_level log_min_level;

int log_set_level(const char *name);  /* "debug", "info", "warn", "error"; 0 or -1 */
int log_set_format(const char *name); /* "text" or "json"; 0 or -1 */
void log_set_program(const char *name);
void log_write(enum log_level lvl, enum log_ctx kind, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The level is checked before any argument is evaluated. ctx may be NULL. */
#define log_at(lvl, kind, ctx, ...)                                                                \
    do {                                                                                           \
        if ((lvl) >= log_min_level)                                                                \
            log_write((lvl), (kind), (ctx), __VA_ARGS__);                                          \
    } while (0)
#define LOG_AT(lvl, ctx, ...) log_at(lvl, LOG_CTX_JOB, ctx, __VA_ARGS__)
#define log_debug(ctx, ...) LOG_AT(LOG_DEBUG, ctx, __VA_ARGS__)
#define log_info(ctx, ...) LOG_AT(LOG_INFO, ctx, __VA_ARGS__)
#define log_warn(ctx, ...) LOG_AT(LOG_WARN, ctx, __VA_ARGS__)
#define log_error(ctx, ...) LOG_AT(LOG_ERROR, ctx, __VA_ARGS__)
/* A line about one subscription, its id as the context: log_sub(LOG_WARN, sub, "..."). */
#define log_sub(lvl, sub, ...) log_at(lvl, LOG_CTX_SUB, sub, __VA_ARGS__)

#endif
