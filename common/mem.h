/* Allocation that aborts on out-of-memory, and a growable byte buffer. */
#ifndef WH_MEM_H
#define WH_MEM_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t n);              /* never NULL; caller frees */
void *xcalloc(size_t n, size_t size); /* never NULL; caller frees */
void *xrealloc(void *p, size_t n);    /* never NULL */
char *xstrdup(const char *s);         /* caller frees */
char *xstrndup(const char *s, size_t n); /* NUL-terminated copy of n bytes; caller frees */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* caller frees */

/* Growable buffer, always NUL-terminated (len excludes the NUL). Zero-init is valid. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_reserve(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);            /* len = 0, keeps memory */
void buf_free(struct buf *b);             /* frees memory, buffer is zeroed */
char *buf_steal(struct buf *b, size_t *len); /* returns data (caller frees), buffer is zeroed */

#endif
