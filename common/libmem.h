/* The libraries' allocations go through ours: libevent, libcurl and cJSON allocate with
 * xmalloc and friends, so out of memory aborts inside them too, and a NULL they return always
 * means a real error (malformed input), never a failed allocation read as one. */
#ifndef WH_LIBMEM_H
#define WH_LIBMEM_H

#include <curl/curl.h>

/* Call first in main(), before any other call into libevent, libcurl or cJSON; it also does
 * curl_global_init. 0, or -1 when libcurl cannot be initialised. */
int libmem_init(void) __attribute__((warn_unused_result));

/* curl_slist_append that never loses the list: returns the (possibly new) head, or aborts. */
struct curl_slist *xslist_append(struct curl_slist *list, const char *line);

/* p, or aborts naming what returned NULL: for library calls that return NULL only when out of
 * memory (event_new, evbuffer_pullup of a whole buffer, ...). */
void *xnonnull(void *p, const char *what);

#endif
