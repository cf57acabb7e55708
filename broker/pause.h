/* A subscription's delivery state in Redis after PostgreSQL took it (decision 24): pausing
 * writes ctl st = paused; resuming writes st = active and releases the held jobs to the job
 * stream, oldest first, in chunks (common/held.h). */
#ifndef WH_PAUSE_H
#define WH_PAUSE_H

#include <stdbool.h>

#include "broker.h"

/* Called exactly once when the Redis step is over, whatever its outcome. */
typedef void pause_done_fn(void *priv);

/* Applies paused (true) or active (false) for subscription sub (a valid id, copied) at
 * version (the row's updated_at in microseconds since the epoch). Active with a version below
 * 0 only releases the held jobs, ctl untouched (a deleted subscription: the workers cancel
 * them; one no longer ordered: they are delivered, decision 33). A Redis failure is logged as a warning under ctx (copied) and otherwise ignored:
 * PostgreSQL is the truth and the reconciler releases what stays held. done(priv) may run
 * before this returns. */
void pause_apply(struct broker *b, const char *ctx, const char *sub, bool paused, long long version,
                 pause_done_fn *done, void *priv);

#endif
