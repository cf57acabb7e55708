/* Retention: deleting finished events (their jobs and attempts cascade) and deleted
 * subscriptions older than RETENTION_DAYS, in bounded batches. */
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "recon.h"

static int purge_loop(struct recon *r, const char *sql, const char *what)
{
    char days[24], batch[24];
    snprintf(days, sizeof days, "%ld", r->cfg.retention_days);
    snprintf(batch, sizeof batch, "%ld", r->cfg.batch);
    const char *params[] = {days, batch};
    long total = 0;
    for (;;) {
        PGresult *res = recon_sql(r, sql, 2, params);
        if (!res)
            return -1;
        long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        total += n;
        if (n < r->cfg.batch || r->cfg.dry_run)
            break;
    }
    if (total)
        log_info("purge", "%s %ld %s older than %ld days", r->cfg.dry_run ? "would delete" : "deleted",
                 total, what, r->cfg.retention_days);
    r->n.purged += total;
    return 0;
}

#define OLD_EVENTS                                                                                 \
    "SELECT e.id FROM events e WHERE e.created_at < now() - make_interval(days => $1::int) "      \
    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id "                              \
    "AND j.status IN ('queued', 'retrying')) ORDER BY e.created_at LIMIT $2::int"
#define OLD_SUBS                                                                                   \
    "SELECT s.id FROM subscriptions s WHERE s.status = 'deleted' "                               \
    "AND s.deleted_at < now() - make_interval(days => $1::int) "                                 \
    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.subscription_id = s.id) LIMIT $2::int"

int recon_purge(struct recon *r)
{
    if (r->cfg.dry_run)
        return purge_loop(r, "SELECT count(*) FROM (" OLD_EVENTS ") t", "events") < 0 ||
                       purge_loop(r, "SELECT count(*) FROM (" OLD_SUBS ") t", "subscriptions") < 0
                   ? -1
                   : 0;
    if (purge_loop(r,
                   "WITH d AS (DELETE FROM events WHERE id IN (" OLD_EVENTS ") RETURNING 1) "
                   "SELECT count(*) FROM d",
                   "events (with their jobs and attempts)") < 0)
        return -1;
    return purge_loop(r,
                      "WITH d AS (DELETE FROM subscriptions WHERE id IN (" OLD_SUBS
                      ") RETURNING 1) SELECT count(*) FROM d",
                      "deleted subscriptions");
}
