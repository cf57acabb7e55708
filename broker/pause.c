/* A subscription's delivery state in Redis after PostgreSQL took it (decision 24): ctl st for
 * a pause, the release script of common/held.c for a resume, called until nothing is held. */
#include "pause.h"

#include <stdio.h>
#include <stdlib.h>

#include "held.h"
#include "ids.h"
#include "log.h"
#include "mem.h"

struct pause {
    struct broker *b;
    char ctx[24];
    char sub[ID_LEN + 1];
    bool paused;
    long long version;
    long rounds; /* release calls answered */
    pause_done_fn *done;
    void *priv;
};

static void pause_end(struct pause *p, const char *failure)
{
    if (failure)
        log_warn(p->ctx,
                 "subscription %s is %s in PostgreSQL but Redis was not told (%s); the "
                 "reconciler %s",
                 p->sub,
                 p->paused        ? "paused"
                 : p->version < 0 ? "deleted or no longer ordered"
                                  : "active",
                 failure,
                 p->paused ? "holds its lost jobs, and workers hold the others by PostgreSQL"
                           : "releases its held jobs");
    pause_done_fn *done = p->done;
    void *priv = p->priv;
    free(p);
    done(priv);
}

static void send_step(struct pause *p);

static void on_reply(struct rds *rd, redisReply *reply, void *priv)
{
    (void)rd;
    struct pause *p = priv;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        pause_end(p, reply && reply->str ? reply->str : "Redis connection lost");
        return;
    }
    if (p->paused) {
        if (reply->integer == 0)
            log_info(p->ctx, "subscription %s: a newer state is already in Redis", p->sub);
        pause_end(p, NULL);
        return;
    }
    p->rounds++;
    if (reply->integer > 0) {
        send_step(p);
        return;
    }
    log_debug(p->ctx, "subscription %s resumed: held jobs released in %ld script calls", p->sub,
              p->rounds);
    pause_end(p, NULL);
}

static void send_step(struct pause *p)
{
    struct held_cmd c;
    unsigned part = id_partition(p->sub, (uint32_t)p->b->cfg.partitions);
    if (p->paused)
        held_pause_cmd(&c, part, p->sub, p->version);
    else
        held_release_cmd(&c, part, p->sub, HELD_RELEASE_CHUNK, p->version);
    if (rds_cmd(p->b->redis, on_reply, p, c.argc, c.argv, c.lens) < 0)
        pause_end(p, "Redis is not connected");
}

void pause_apply(struct broker *b, const char *ctx, const char *sub, bool paused, long long version,
                 pause_done_fn *done, void *priv)
{
    struct pause *p = xcalloc(1, sizeof *p);
    p->b = b;
    snprintf(p->ctx, sizeof p->ctx, "%s", ctx ? ctx : "pause");
    snprintf(p->sub, sizeof p->sub, "%s", sub);
    p->paused = paused;
    p->version = version;
    p->done = done;
    p->priv = priv;
    send_step(p);
}
