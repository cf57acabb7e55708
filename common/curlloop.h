/* libcurl multi driven by a libevent event_base (curl's multi-event.c pattern). */
/* libcurl says which sockets to watch (CURLMOPT_SOCKETFUNCTION: one persistent event per
 * socket, changed only when what it waits for changes) and when to wake it
 * (CURLMOPT_TIMERFUNCTION: only re-arms one timer, never calls libcurl); each socket event and
 * the timer call curl_multi_socket_action and then drain curl_multi_info_read, handing every
 * finished transfer to the owner's callback. Used by the worker's deliveries (worker/deliver.c)
 * and the broker's endpoint verification (broker/verify.c). */
#ifndef WH_CURLLOOP_H
#define WH_CURLLOOP_H

#include <curl/curl.h>
#include <event2/event.h>

struct curlloop;

/* A transfer ended (CURLMSG_DONE): easy is already out of the multi handle and belongs to the
 * caller again (clean it up or reuse it); the transfer's context may be freed here. The
 * callback may add and remove other transfers; it must not call curlloop_free. */
typedef void curlloop_done_fn(CURL *easy, CURLcode result, void *arg);

/* A multi handle whose sockets and timeout are events on base (borrowed: it must outlive the
 * loop); done is called with arg for every finished transfer. NULL when curl_multi_init
 * fails. Free with curlloop_free. */
struct curlloop *curlloop_new(struct event_base *base, curlloop_done_fn *done, void *arg);

/* The multi handle, for curl_multi_setopt of its limits (CURLMOPT_MAX_TOTAL_CONNECTIONS,
 * CURLMOPT_MAXCONNECTS); the loop owns it and drives it. */
CURLM *curlloop_multi(struct curlloop *l);

/* Starts easy (curl_multi_add_handle): done is called for it once it ends, from the event
 * loop. CURLM_OK, or libcurl's code (the handle is then not in the loop). */
CURLMcode curlloop_add(struct curlloop *l, CURL *easy);

/* Takes easy out before it ended (at shutdown); done is not called for it. The caller still
 * owns easy. */
void curlloop_remove(struct curlloop *l, CURL *easy);

/* After the event loop stopped (never from done): remove the transfers first; frees the multi
 * handle, the socket events and the timer. NULL is ignored. */
void curlloop_free(struct curlloop *l);

#endif
