/* The daemons' libevent loop: one constructor, so the broker and the workers run the same
 * backend with the same flags. */
#ifndef WH_EVBASE_H
#define WH_EVBASE_H

#include <event2/event.h>

/* An epoll loop whose event changes are applied once per loop iteration (libevent's
 * changelist): a socket whose read event is disabled and enabled again before the loop polls,
 * as evhttp and libcurl do around every request, costs no epoll_ctl (decision 52). NULL on
 * failure. */
struct event_base *evbase_new(void);

#endif
