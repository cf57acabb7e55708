/* Operational events (broker.endpoint.*, broker.attempt.exhausted): the outcome commit creates
 * them and their jobs in PostgreSQL; this puts those jobs in Redis as the broker does. */
#ifndef WH_OPEVENTS_H
#define WH_OPEVENTS_H

#include <stddef.h>

/* json[0..n): the outcome statement's array of new jobs, [{"j": job id, "e": event id, "s":
 * subscription id, "u": url, "p": partition, "n": event name, "d": payload text}, ...]. Per
 * partition, one MULTI { SET payload EX PAYLOAD_TTL, XADD jobs, SADD live }. Nothing is lost
 * when Redis refuses: the jobs are committed, and the reconciler enqueues unfinished jobs it
 * cannot find in Redis. Borrows json for the call only. */
void opevents_enqueue(const char *json, size_t n);

#endif
