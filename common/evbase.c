/* The daemons' libevent loop (evbase.h). */
#include "evbase.h"

struct event_base *evbase_new(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    /* Ignored by backends other than epoll. Its one known trap is a descriptor dup()'d and
     * registered twice, which none of the daemons' libraries does. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}
