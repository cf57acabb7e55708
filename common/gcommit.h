/* Group commit to PostgreSQL: items wait in a FIFO while one statement is in flight; when it
 * finishes, everything waiting (within the batch limits) goes into the next single statement,
 * its parameters built as text-array literals in buffers reused across batches. Also the set
 * of ids the statement's RETURNING gave back, to tell which items it wrote, and the linger
 * (docs/decisions.md 57): under load, a small group waits a moment for the rest of its wave. */
#ifndef WH_GCOMMIT_H
#define WH_GCOMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "mem.h"
#include "pg.h"

struct event;

/* Embedded in each item; the item is found back with GCOMMIT_ITEM. */
struct gcommit_node {
    struct gcommit_node *next;
    size_t jobs;  /* rows the item adds to the statement (set before gcommit_submit) */
    size_t bytes; /* bytes it adds to the statement, roughly (set before gcommit_submit) */
};
#define GCOMMIT_ITEM(node, type, member) ((type *)(void *)((char *)(node)-offsetof(type, member)))

/* Bounds of a group (a batch, or the items waiting); 0 means no bound. */
struct gcommit_limits {
    size_t items, jobs, bytes;
};

enum gcommit_hit { GCOMMIT_FITS, GCOMMIT_ITEMS, GCOMMIT_JOBS, GCOMMIT_BYTES };

/* Whether n may join a group already holding items/jobs/bytes under l: an empty group takes
 * any item (one item larger than a bound still goes, alone); otherwise the bound it would pass
 * (items: the group is full at l->items). Pure. */
enum gcommit_hit gcommit_limit_hit(const struct gcommit_limits *l, size_t items, size_t jobs,
                                   size_t bytes, const struct gcommit_node *n);

/* Ids (ID_LEN bytes each) a statement returned. Buffers are reused: idset_free at the end. */
struct idset {
    char *ids;
    size_t n, cap;
    bool all; /* every id asked about is in the set (no array kept) */
};
void idset_clear(struct idset *s);
void idset_add(struct idset *s, const char *id);
void idset_sort(struct idset *s); /* after the adds, before idset_has */
bool idset_has(const struct idset *s, const char *id);
void idset_free(struct idset *s);

/* One batch, as the callbacks see it: the items in FIFO order (linked by their nodes). */
struct gcommit_batch {
    struct gcommit_node *head;
    size_t items, jobs, bytes;
};

struct gcommit_ops {
    const char *stmt_name; /* prepared statement name (a literal) */
    const char *sql;       /* RETURNING the written ids in column 0 */
    /* wh_pg_commit_batch_size counts the batch's jobs, and also its items when set (the
     * broker's events; a worker's item is its one outcome) */
    bool items_are_rows;
    int nparams;           /* array parameters, at most GCOMMIT_MAX_PARAMS */
    /* Appends the item's elements to the nparams array literals (begun and ended by the
     * caller of this callback). false: the item has nothing to record and goes to skipped
     * (then it must not have touched the arrays). */
    bool (*add)(struct gcommit_node *n, struct buf *arrays, void *arg);
    /* Items taken without a statement, in FIFO order, before the batch is sent; may be NULL
     * when add never returns false. The callee owns them. */
    void (*skipped)(struct gcommit_node *head, void *arg);
    /* The batch's statement finished. err NULL: returned holds the ids of column 0 (all set
     * when as many rows came back as the batch has jobs). err set: res is NULL when the
     * database was unreachable, else the server's failed result. The callee owns the items. */
    void (*done)(const struct gcommit_batch *bt, PGresult *res, const char *err,
                 const struct idset *returned, void *arg);
    /* The linger (decision 57): after a batch of at least GCOMMIT_LINGER_MIN items, a smaller
     * group, found with no statement in flight, waits until it holds as many or for a quarter
     * of the last statement's duration (at most GCOMMIT_LINGER_MAX_US), whichever comes
     * first. At a low rate batches are small and nothing waits. */
    bool linger;
};

#define GCOMMIT_LINGER_MIN 8
#define GCOMMIT_LINGER_MAX_US 1000

#define GCOMMIT_MAX_PARAMS 16

/* Fields are private to gcommit.c. */
struct gcommit {
    const struct gcommit_ops *ops;
    void *arg;
    struct pg *pg;
    struct gcommit_limits batch, pending;
    struct gcommit_node *head, **tail;
    size_t items, jobs, bytes; /* waiting (not in flight) */
    bool in_flight;
    int64_t sent_us; /* when the batch in flight was sent (monotonic) */
    struct gcommit_batch flight;
    struct buf arrays[GCOMMIT_MAX_PARAMS];
    struct idset returned;
    size_t last_items;      /* items of the last batch sent */
    int64_t last_us;        /* how long its statement took (0 until one answered) */
    struct event *linger;   /* armed while a small group waits for the rest of its wave */
    bool lingered;          /* the wait is over: the next flush sends what waits */
};

void gcommit_init(struct gcommit *gc, const struct gcommit_ops *ops, void *arg, struct pg *pg,
                  const struct gcommit_limits *batch, const struct gcommit_limits *pending);
/* Queues n and sends a batch unless one is in flight. Returns GCOMMIT_FITS, or the pending
 * bound n would pass (n is not taken: the caller refuses it). */
enum gcommit_hit gcommit_submit(struct gcommit *gc, struct gcommit_node *n)
    __attribute__((warn_unused_result));
/* Whether gcommit_submit would take n now (GCOMMIT_FITS), or the pending bound it would pass. */
enum gcommit_hit gcommit_room(const struct gcommit *gc, const struct gcommit_node *n);
/* The linger's wait in microseconds (0: send now) for a group of items waiting with no
 * statement in flight, after a batch of last_items whose statement took last_us; full: the
 * group already fills a batch. Pure. */
int64_t gcommit_linger_us(size_t last_items, int64_t last_us, size_t items, bool full);
/* Items waiting (not counting the batch in flight). */
size_t gcommit_waiting(const struct gcommit *gc);
bool gcommit_in_flight(const struct gcommit *gc);

#endif
