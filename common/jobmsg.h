/* The job message: one compact JSON document per delivery attempt to run, the same bytes in the
 * job stream (field "d"), the retry set (member) and the dead-letter stream. */
#ifndef WH_JOBMSG_H
#define WH_JOBMSG_H

#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "mem.h"

struct job_msg {
    char job[ID_LEN + 1];
    char event[ID_LEN + 1];
    char sub[ID_LEN + 1];
    char name[129];
    char *url; /* owned: jobmsg_clear frees */
    int attempt; /* 1-based number of the attempt this message asks for */
    /* The rate limiter's slot reserved for this attempt (Redis TIME, ms since the epoch), carried
     * by a job parked until shortly before it ("r", optional; worker/gate.c); 0: none. */
    int64_t rslot;
};

/* Appends {"j","e","s","n","u","a"} to b, and "r" when rslot is set. */
void jobmsg_encode(const struct job_msg *m, struct buf *b);
/* Parses p[0..n); 0 or -1 (malformed: the caller drops and logs the entry). */
int jobmsg_decode(const char *p, size_t n, struct job_msg *m) __attribute__((warn_unused_result));
void jobmsg_clear(struct job_msg *m);

#endif
