/* Levelled, printf-checked logging to stderr with a context tag (request, job or subscription id). */
#ifndef WH_LOG_H
#define WH_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

int log_set_level(const char *name); /* "debug", "info", "warn", "error"; 0 or -1 */
void log_set_program(const char *name);
void log_write(enum log_level lvl, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The level is checked before any argument is evaluated. ctx may be NULL. */
#define LOG_AT(lvl, ctx, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= log_min_level)                                                                \
            log_write((lvl), (ctx), __VA_ARGS__);                                                  \
    } while (0)
#define log_debug(ctx, ...) LOG_AT(LOG_DEBUG, ctx, __VA_ARGS__)
#define log_info(ctx, ...) LOG_AT(LOG_INFO, ctx, __VA_ARGS__)
#define log_warn(ctx, ...) LOG_AT(LOG_WARN, ctx, __VA_ARGS__)
#define log_error(ctx, ...) LOG_AT(LOG_ERROR, ctx, __VA_ARGS__)

#endif
