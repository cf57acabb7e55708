/* Group commit of triggered events and their jobs to PostgreSQL, then the enqueue of the
 * committed jobs on the Redis partition streams; completes the HTTP requests of each batch. */
#ifndef WH_COMMIT_H
#define WH_COMMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "gcommit.h"
#include "http.h"
#include "ids.h"
#include "valid.h"

struct job_rec {
    char id[ID_LEN + 1];
    char sub[ID_LEN + 1];
    char *url; /* owned */
    unsigned part;
    int kept; /* inserted by the commit (its subscription was still active) */
};

/* What an event triggered with an Idempotency-Key carries to the keyed commit, and the
 * outcome the commit found for it. */
struct idem {
    /* as stored: the header's value, or for a tenant's event <tenant> 0x1f <value> (decision
     * 44: a key is per tenant; a header cannot hold 0x1f, so no global key meets a tenant's) */
    char key[TENANT_ID_MAX + 1 + IDEMPOTENCY_KEY_MAX + 1];
    char sha256[64 + 1]; /* hex SHA-256 of the payload */
    /* set by the commit */
    bool found;            /* the statement reported on this event */
    char orig[ID_LEN + 1]; /* the key's event: this one when it was inserted */
    long orig_jobs;        /* jobs that event created */
    bool same_name, same_payload;
};

struct event_rec {
    struct gcommit_node gc; /* the commit queue, then the batch */
    struct req *r; /* answered once the batch has committed (or failed) */
    char id[ID_LEN + 1];
    char name[130];
    char tenant[TENANT_ID_MAX + 1]; /* "": a global event (decision 44) */
    char *payload; /* owned copy of the body */
    size_t payload_len;
    struct job_rec *jobs;
    size_t njobs;
    struct idem *idem; /* owned; NULL without an Idempotency-Key (the plain commit) */
};

/* Takes ownership of e. An event with an Idempotency-Key goes to the keyed commit (its own
 * queue and statement; docs/decisions.md 22), the others to the plain one. Answers 503
 * (Retry-After: 1) at once when MAX_PENDING_EVENTS, MAX_PENDING_JOBS or MAX_PENDING_BYTES
 * would be passed. */
void commit_submit(struct broker *b, struct event_rec *e);

/* One job to put on its partition's stream (borrowed strings, valid during the call). */
struct enq_job {
    const char *id, *event, *sub, *name, *url;
    unsigned part;
    int attempt; /* the attempt the message asks for: jobs.attempts + 1 */
    const char *payload; /* the event's original bytes, cached for PAYLOAD_TTL; NULL: not cached */
    size_t payload_len;
};

typedef void commit_enqueued_fn(void *priv, bool ok);

/* Puts committed jobs in Redis as a trigger does: per partition one MULTI (SET payload EX
 * PAYLOAD_TTL, XADD the job message, SADD live). done (may be NULL) is called once every reply
 * came, ok false when a step failed or Redis was down: the rows are queued in PostgreSQL and
 * the reconciler enqueues them. Failures are logged under ctx. Counts as outstanding work. */
void commit_enqueue(struct broker *b, const char *ctx, const struct enq_job *jobs, size_t njobs,
                    commit_enqueued_fn *done, void *priv);
void event_rec_free(struct event_rec *e);

#endif
