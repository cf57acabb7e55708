/* The global delivery switch as this worker sees it (PUT /api/v0/admin/delivery; docs/decisions.md
 * 23): read from PostgreSQL every OFFLINE_POLL_MS on the lookup connection, and also with every
 * batch's job states (prep.c), so a batch read before the worker's next poll is not sent either.
 * While it is offline the reader neither reads, claims nor promotes, and prep parks what it was
 * about to send; transfers already started finish. */
#include <string.h>

#include "log.h"
#include "worker.h"

#define OFFLINE_POLL_MS 1000

static bool polling;
static int64_t next_poll_ms;

void offline_seen(bool offline)
{
    bool was_known = W.switch_known;
    if (was_known && offline == W.offline)
        return;
    W.switch_known = true;
    W.offline = offline;
    if (offline)
        log_warn(NULL,
                 "delivery is offline (PUT /api/v0/admin/delivery): reading, claiming and "
                 "promoting jobs stop; %ld taken already are sent if under way, else parked",
                 W.inflight);
    else if (was_known)
        log_info(NULL, "delivery is online again: resuming");
    else
        log_info(NULL, "delivery is online");
    if (!offline)
        reader_kick();
}

static void polled(void *priv, PGresult *res, const char *err)
{
    (void)priv;
    polling = false;
    if (err) {
        log_warn("offline", "cannot read the delivery switch: %s", err);
        return;
    }
    if (PQntuples(res) != 1) {
        /* Only a hand-made DELETE gets here; the broker's PUT restores the row. Erring
         * toward not sending keeps a lost "offline" from becoming "online". */
        log_warn("offline", "the delivery_switch row is missing; not sending until it is back");
        offline_seen(true);
        return;
    }
    offline_seen(strcmp(PQgetvalue(res, 0, 0), "t") == 0);
}

void offline_tick(int64_t now_mono_ms)
{
    if (polling || now_mono_ms < next_poll_ms || !pg_up(W.pg_read))
        return;
    next_poll_ms = now_mono_ms + OFFLINE_POLL_MS;
    static const char sql[] = "SELECT status = 'offline' FROM delivery_switch WHERE id";
    if (pg_query_prepared(W.pg_read, "wh_switch", sql, 0, NULL, NULL, NULL, 0, polled, NULL) == 0)
        polling = true;
}
