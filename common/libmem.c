/* The libraries' allocations go through ours (libevent, libcurl, cJSON), and the checks on
 * library calls that return NULL only when out of memory. */
#include "libmem.h"

#include <cJSON.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include "mem.h"

int libmem_init(void)
{
    event_set_mem_functions(xmalloc, xrealloc, free);
    cJSON_Hooks hooks = {.malloc_fn = xmalloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, xmalloc, free, xrealloc, xstrdup, xcalloc) !=
        CURLE_OK)
        return -1;
    return 0;
}

void *xnonnull(void *p, const char *what)
{
    if (!p) {
        fprintf(stderr, "fatal: %s failed (out of memory)\n", what);
        abort();
    }
    return p;
}

struct curl_slist *xslist_append(struct curl_slist *list, const char *line)
{
    /* On failure curl_slist_append returns NULL and leaves list as it was: assigning that
     * NULL would drop (and leak) every header added so far, signatures included. */
    return xnonnull(curl_slist_append(list, line), "curl_slist_append");
}
