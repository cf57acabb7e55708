/* Group commit of triggered events and their jobs to PostgreSQL, then the enqueue of the
 * committed jobs on the Redis partition streams; completes the HTTP requests of each batch. */
#ifndef WH_COMMIT_H
#define WH_COMMIT_H

#include <stddef.h>

#include "gcommit.h"
#include "http.h"
#include "ids.h"

struct job_rec {
    char id[ID_LEN + 1];
    char sub[ID_LEN + 1];
    char *url; /* owned */
    unsigned part;
    int kept; /* inserted by the commit (its subscription was still active) */
};

struct event_rec {
    struct gcommit_node gc; /* the commit queue, then the batch */
    struct req *r; /* answered once the batch has committed (or failed) */
    char id[ID_LEN + 1];
    char name[130];
    char *payload; /* owned copy of the body */
    size_t payload_len;
    struct job_rec *jobs;
    size_t njobs;
};

/* Takes ownership of e. Answers 503 (Retry-After: 1) at once when MAX_PENDING_EVENTS,
 * MAX_PENDING_JOBS or MAX_PENDING_BYTES would be passed. */
void commit_submit(struct broker *b, struct event_rec *e);
void event_rec_free(struct event_rec *e);

#endif
