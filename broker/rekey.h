/* Encrypting signing secrets still stored in plain, and re-encrypting those sealed under a
 * previous key, in bounded batches when the broker (re)connects to PostgreSQL. */
#ifndef WH_REKEY_H
#define WH_REKEY_H

#include "broker.h"

/* Starts a pass over the subscriptions unless one is running. Every write is a
 * compare-and-set on the values read, so brokers may run it at the same time as each other
 * and as the API. */
void rekey_start(struct broker *b);

#endif
