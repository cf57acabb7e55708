/* The page_size / offset query parameters shared by the broker's list endpoints. */
#ifndef WH_PAGING_H
#define WH_PAGING_H

#include "http.h"

#define PAGING_DEFAULT 50
#define PAGING_MAX 500
#define PAGING_OFFSET_MAX 1000000000L

struct page {
    long size, offset;
    char size_text[24], offset_text[24]; /* the same as SQL parameters */
};

/* Reads ?page_size= (1..PAGING_MAX, default PAGING_DEFAULT) and ?offset= (0..10^9, default 0):
 * digits only. 0, or -1 after answering 400 invalid_field. */
int paging_parse(struct req *r, struct page *p) __attribute__((warn_unused_result));

/* Appends ,"total":T,"offset":M,"page_size":N (T as PostgreSQL returned it) to b. */
void paging_json(struct buf *b, const char *total, const struct page *p);

#endif
