/* Group commit to PostgreSQL: a FIFO of items, one statement in flight, batches bounded by
 * items, jobs and bytes, array parameters in reused buffers, the set of returned ids, and the
 * linger of a small group under load. */
#include "gcommit.h"

#include "clock.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

enum gcommit_hit gcommit_limit_hit(const struct gcommit_limits *l, size_t items, size_t jobs,
                                   size_t bytes, const struct gcommit_node *n)
{
    if (items == 0)
        return GCOMMIT_FITS;
    if (l->items && items >= l->items)
        return GCOMMIT_ITEMS;
    if (l->jobs && jobs + n->jobs > l->jobs)
        return GCOMMIT_JOBS;
    if (l->bytes && bytes + n->bytes > l->bytes)
        return GCOMMIT_BYTES;
    return GCOMMIT_FITS;
}

/* ---- returned ids -------------------------------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_LEN);
}

void idset_clear(struct idset *s)
{
    s->n = 0;
    s->all = false;
}

void idset_add(struct idset *s, const char *id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->ids = xrealloc(s->ids, s->cap * ID_LEN);
    }
    memcpy(s->ids + s->n * ID_LEN, id, ID_LEN);
    s->n++;
}

void idset_sort(struct idset *s)
{
    if (s->n > 1)
        qsort(s->ids, s->n, ID_LEN, cmp_id);
}

bool idset_has(const struct idset *s, const char *id)
{
    return s->all || (s->n && bsearch(id, s->ids, s->n, ID_LEN, cmp_id));
}

void idset_free(struct idset *s)
{
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* ---- the group commit ---------------------------------------------------------------------- */

static void flush(struct gcommit *gc);

void gcommit_init(struct gcommit *gc, const struct gcommit_ops *ops, void *arg, struct pg *pg,
                  const struct gcommit_limits *batch, const struct gcommit_limits *pending)
{
    memset(gc, 0, sizeof *gc);
    gc->ops = ops;
    gc->arg = arg;
    gc->pg = pg;
    gc->batch = *batch;
    gc->pending = *pending;
    gc->tail = &gc->head;
}

size_t gcommit_waiting(const struct gcommit *gc)
{
    return gc->items;
}

bool gcommit_in_flight(const struct gcommit *gc)
{
    return gc->in_flight;
}

static void returned_ids(struct gcommit *gc, const struct gcommit_batch *bt, PGresult *res)
{
    struct idset *s = &gc->returned;
    idset_clear(s);
    int n = PQntuples(res);
    if ((size_t)n == bt->jobs) {
        s->all = true;
        return;
    }
    for (int i = 0; i < n; i++)
        idset_add(s, PQgetvalue(res, i, 0));
    idset_sort(s);
}

static void written(void *priv, PGresult *res, const char *err)
{
    struct gcommit *gc = priv;
    /* A copy: a batch sent from inside done() reuses gc->flight. */
    struct gcommit_batch bt = gc->flight;
    gc->in_flight = false;
    if (res) { /* PostgreSQL answered (a failed send has none) */
        gc->last_us = clock_mono_us() - gc->sent_us;
        metrics_observe(M_PG_COMMIT_DURATION, (double)gc->last_us / 1e6);
        metrics_observe(M_PG_COMMIT_BATCH,
                        (double)(bt.jobs + (gc->ops->items_are_rows ? bt.items : 0)));
    }
    if (!err)
        returned_ids(gc, &bt, res);
    gc->ops->done(&bt, res, err, err ? NULL : &gc->returned, gc->arg);
    flush(gc);
}

static void linger_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gcommit *gc = arg;
    gc->lingered = true;
    flush(gc);
}

/* Under load the items come in waves: a batch's answers bring its callers' next items back
 * within a fraction of a statement's duration, and the first of them found the connection
 * idle and went alone, while the rest of the wave waited for that statement (measured in
 * scenario a: 493 of 864 batches held one event). So a group smaller than the last batch
 * waits, a quarter of the last statement's duration at most, for the rest of its wave; a
 * wave that does not come (the load fell) makes the next batch, and so the next wait,
 * smaller. */
int64_t gcommit_linger_us(size_t last_items, int64_t last_us, size_t items, bool full)
{
    if (full || last_items < GCOMMIT_LINGER_MIN || items >= last_items || last_us <= 0)
        return 0;
    return last_us / 4 < GCOMMIT_LINGER_MAX_US ? last_us / 4 : GCOMMIT_LINGER_MAX_US;
}

static bool linger(struct gcommit *gc)
{
    if (!gc->ops->linger || gc->lingered)
        return false;
    bool full = gcommit_limit_hit(&gc->batch, gc->items, gc->jobs, gc->bytes, gc->head) !=
                GCOMMIT_FITS;
    int64_t us = gcommit_linger_us(gc->last_items, gc->last_us, gc->items, full);
    if (us == 0)
        return false;
    if (gc->linger && evtimer_pending(gc->linger, NULL))
        return true; /* already waiting, from the group's first item */
    if (!gc->linger)
        gc->linger = event_new(pg_base(gc->pg), -1, 0, linger_over, gc);
    struct timeval tv = {0, (suseconds_t)us};
    return gc->linger && evtimer_add(gc->linger, &tv) == 0;
}

static void flush(struct gcommit *gc)
{
    if (gc->in_flight || !gc->head)
        return;
    if (linger(gc))
        return;
    gc->lingered = false;
    if (gc->linger)
        evtimer_del(gc->linger);
    const struct gcommit_ops *ops = gc->ops;
    struct gcommit_batch *bt = &gc->flight;
    memset(bt, 0, sizeof *bt);
    struct gcommit_node **tail = &bt->head, *skipped = NULL, **stail = &skipped;
    for (int i = 0; i < ops->nparams; i++) {
        buf_reset(&gc->arrays[i]);
        pgarr_begin(&gc->arrays[i]);
    }
    while (gc->head && gcommit_limit_hit(&gc->batch, bt->items, bt->jobs, bt->bytes, gc->head) ==
                           GCOMMIT_FITS) {
        struct gcommit_node *n = gc->head;
        gc->head = n->next;
        gc->items--;
        gc->jobs -= n->jobs;
        gc->bytes -= n->bytes;
        n->next = NULL;
        if (!ops->add(n, gc->arrays, gc->arg)) {
            *stail = n;
            stail = &n->next;
            continue;
        }
        *tail = n;
        tail = &n->next;
        bt->items++;
        bt->jobs += n->jobs;
        bt->bytes += n->bytes;
    }
    if (!gc->head)
        gc->tail = &gc->head;
    if (skipped)
        ops->skipped(skipped, gc->arg);
    if (!bt->head)
        return;
    const char *params[GCOMMIT_MAX_PARAMS];
    for (int i = 0; i < ops->nparams; i++) {
        pgarr_end(&gc->arrays[i]);
        params[i] = gc->arrays[i].data;
    }
    gc->in_flight = true;
    gc->last_items = bt->items;
    gc->sent_us = clock_mono_us();
    if (pg_query_prepared(gc->pg, ops->stmt_name, ops->sql, ops->nparams, params, NULL, NULL, 0,
                          written, gc) < 0)
        written(gc, NULL, "database connection is down");
}

enum gcommit_hit gcommit_room(const struct gcommit *gc, const struct gcommit_node *n)
{
    return gcommit_limit_hit(&gc->pending, gc->items, gc->jobs, gc->bytes, n);
}

enum gcommit_hit gcommit_submit(struct gcommit *gc, struct gcommit_node *n)
{
    enum gcommit_hit hit = gcommit_room(gc, n);
    if (hit != GCOMMIT_FITS)
        return hit;
    n->next = NULL;
    *gc->tail = n;
    gc->tail = &n->next;
    gc->items++;
    gc->jobs += n->jobs;
    gc->bytes += n->bytes;
    flush(gc);
    return GCOMMIT_FITS;
}
