/* Unit tests for broker/trigger.c: the fan-out state shared by the pipelined Redis commands of
 * a trigger (MGET of the ready and patterns marks with the HGETALL of "order.created", then,
 * when the patterns mark is set, one HGETALL per pattern entry that can match the name:
 * "order.*", "*"; decision 39) is freed exactly once on every path (all sent and answered, the
 * connection lost, any send refused, in either pipeline), the request is answered exactly
 * once, and a subscription found in two hashes gets one job; the commands sent, with and
 * without a tenant (decision 44: a global trigger sends exactly the commands it sent before
 * tenants, a tenant's reads its own hashes), and the tenant rules of the query parameter and
 * the key. Linked with broker/trigger.o and stubs of what it
 * calls (Redis, PostgreSQL, the commit, the HTTP replies); run under ASan + LSan by `make test
 * SAN=1`, where a use after free or a leak of the fan-out state fails the binary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../broker/api.h"
#include "../../broker/commit.h"
#include "unit.h"

/* ---- stubs ------------------------------------------------------------------------------- */

struct sent {
    rds_reply_fn *cb;
    void *priv;
    char cmd[256]; /* the arguments joined by spaces */
};

static struct sent sent[16];
static int nsent;
static int refuse_send_no; /* rds_cmd number (1-based) that fails; 0: none */
static int nsend_calls;
static int answered, last_status, submitted, index_ensured;
static const char *query_tenant; /* the ?tenant= the request carries; NULL: none */
static char submitted_tenant[80];

int rds_cmd(struct rds *r, rds_reply_fn *cb, void *priv, int argc, const char **argv,
            const size_t *lens)
{
    (void)r;
    if (++nsend_calls == refuse_send_no)
        return -1;
    sent[nsent].cb = cb;
    sent[nsent].priv = priv;
    size_t n = 0;
    sent[nsent].cmd[0] = '\0';
    for (int i = 0; i < argc; i++)
        n += (size_t)snprintf(sent[nsent].cmd + n, sizeof sent[nsent].cmd - n, "%s%.*s",
                              i ? " " : "", (int)lens[i], argv[i]);
    nsent++;
    return 0;
}

char *http_query_param(struct req *r, const char *name)
{
    (void)r;
    return query_tenant && strcmp(name, "tenant") == 0 ? strdup(query_tenant) : NULL;
}

bool pg_up(const struct pg *p)
{
    (void)p;
    return true;
}

int pg_query(struct pg *p, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *formats, int result_format, pg_result_fn *cb,
             void *priv)
{
    (void)p, (void)sql, (void)nparams, (void)values, (void)lengths, (void)formats;
    (void)result_format, (void)cb, (void)priv;
    return -1; /* the database is down: the fan-out falls back to a 503 */
}

void subs_index_ensure(struct broker *b)
{
    (void)b;
    index_ensured++;
}

bool http_require_json_body(struct req *r)
{
    (void)r;
    return true;
}

void http_error(struct req *r, int status, const char *code, const char *fmt, ...)
{
    (void)code, (void)fmt;
    answered++;
    last_status = status;
    free(r);
}

void http_db_error(struct req *r, PGresult *res, const char *err)
{
    (void)err;
    answered++;
    last_status = res ? 500 : 503;
    free(r);
}

void event_rec_free(struct event_rec *e)
{
    for (size_t i = 0; i < e->njobs; i++)
        free(e->jobs[i].url);
    free(e->jobs);
    free(e->payload);
    free(e->idem);
    free(e);
}

void commit_submit(struct broker *b, struct event_rec *e)
{
    (void)b;
    submitted += (int)e->njobs;
    snprintf(submitted_tenant, sizeof submitted_tenant, "%s", e->tenant);
    answered++;
    last_status = 202;
    free(e->r);
    event_rec_free(e);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static struct broker broker;

static void reset(int refuse)
{
    nsent = nsend_calls = answered = last_status = submitted = index_ensured = 0;
    refuse_send_no = refuse;
    query_tenant = NULL;
    submitted_tenant[0] = '\0';
}

/* A trigger by a key limited to key_tenant ("" for none). */
static void trigger_as(const char *key_tenant)
{
    struct req *r = calloc(1, sizeof *r);
    snprintf(r->who.tenant, sizeof r->who.tenant, "%s", key_tenant);
    r->b = &broker;
    snprintf(r->seg[0], sizeof r->seg[0], "order.created");
    r->nseg = 1;
    r->body = "{\"a\":1}";
    r->body_len = strlen(r->body);
    trigger_post(r);
}

static void trigger(void)
{
    trigger_as("");
}

/* Runs the callback of the i-th sent command with reply (NULL: connection lost). */
static void deliver(int i, redisReply *reply)
{
    sent[i].cb(NULL, reply, sent[i].priv);
}

/* ---- tests ------------------------------------------------------------------------------- */

static char one[] = "1";
static redisReply r_one = {.type = REDIS_REPLY_STRING, .str = one, .len = 1};
static redisReply r_nil = {.type = REDIS_REPLY_NIL};

/* The MGET reply: the ready mark, the patterns mark (each set or not). */
static redisReply *marks(bool ready, bool patterns)
{
    static redisReply *el[2];
    static redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2};
    el[0] = ready ? &r_one : &r_nil;
    el[1] = patterns ? &r_one : &r_nil;
    arr.element = el;
    return &arr;
}

static void test_both_answered(void)
{
    reset(0);
    trigger();
    CHECK_EQ_INT(nsent, 2);
    CHECK_EQ_INT(answered, 0);
    char url[] = "https://example.com/hook";
    char val[] = "{\"id\":\"0190a8a5-0000-7000-8000-000000000001\",\"status\":\"active\"}";
    redisReply f = {.type = REDIS_REPLY_STRING, .str = url, .len = strlen(url)};
    redisReply v = {.type = REDIS_REPLY_STRING, .str = val, .len = strlen(val)};
    redisReply *elems[] = {&f, &v};
    redisReply hash = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = elems};
    char val2[] = "{\"id\":\"0190a8a5-0000-7000-8000-000000000002\",\"status\":\"active\"}";
    redisReply v2 = {.type = REDIS_REPLY_STRING, .str = val2, .len = strlen(val2)};
    redisReply *elems2[] = {&f, &v, &f, &v2}; /* the first again (a pattern), and another */
    redisReply hash2 = {.type = REDIS_REPLY_ARRAY, .elements = 4, .element = elems2};
    redisReply empty = {.type = REDIS_REPLY_ARRAY};
    deliver(0, marks(true, true));
    deliver(1, &hash);
    CHECK_EQ_INT(answered, 0);
    CHECK_EQ_INT(nsent, 4); /* "order.*" and "*" */
    deliver(2, &hash2);
    CHECK_EQ_INT(answered, 0);
    deliver(3, &empty);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 202);
    CHECK_EQ_INT(submitted, 2); /* one job per subscription */
}

/* No pattern was ever indexed: one round trip, the name's own hash only. */
static void test_no_patterns(void)
{
    reset(0);
    trigger();
    char url[] = "https://example.com/hook";
    char val[] = "{\"id\":\"0190a8a5-0000-7000-8000-000000000001\",\"status\":\"active\"}";
    redisReply f = {.type = REDIS_REPLY_STRING, .str = url, .len = strlen(url)};
    redisReply v = {.type = REDIS_REPLY_STRING, .str = val, .len = strlen(val)};
    redisReply *elems[] = {&f, &v};
    redisReply hash = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = elems};
    deliver(0, marks(true, false));
    deliver(1, &hash);
    CHECK_EQ_INT(nsent, 2);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 202);
    CHECK_EQ_INT(submitted, 1);
}

static void test_connection_lost(void)
{
    reset(0);
    trigger();
    CHECK_EQ_INT(nsent, 2);
    for (int i = 0; i < 2; i++)
        deliver(i, NULL);
    CHECK_EQ_INT(nsent, 2);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 503);
    /* lost in the second pipeline */
    reset(0);
    trigger();
    redisReply empty = {.type = REDIS_REPLY_ARRAY};
    deliver(0, marks(true, true));
    deliver(1, &empty);
    CHECK_EQ_INT(nsent, 4);
    deliver(2, NULL);
    deliver(3, NULL);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 503);
}

static void test_index_not_ready_db_down(void)
{
    reset(0);
    trigger();
    redisReply empty = {.type = REDIS_REPLY_ARRAY};
    deliver(0, marks(false, true));
    deliver(1, &empty);
    CHECK_EQ_INT(nsent, 2); /* no pattern reads: PostgreSQL answers for the whole index */
    CHECK_EQ_INT(index_ensured, 1);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 503);
}

static void test_first_send_refused(void)
{
    reset(1);
    trigger();
    CHECK_EQ_INT(nsent, 0);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 503);
}

/* The case issue 8 names: the first command went out, the second could not be sent. The
 * request is answered at once; the first command's callback runs later (here with a reply,
 * then as if the connection were lost) and must find the shared state still allocated. */
static void test_second_send_refused(void)
{
    for (int lost = 0; lost < 2; lost++) {
        reset(2);
        trigger();
        CHECK_EQ_INT(nsent, 1);
        CHECK_EQ_INT(answered, 1);
        CHECK_EQ_INT(last_status, 503);
        deliver(0, lost ? NULL : marks(true, true));
        CHECK_EQ_INT(answered, 1);
    }
}

/* A send of the second pipeline refused (the third or fourth command): answered 503 at once,
 * the pattern read already sent finds the state allocated and answers nothing more. */
static void test_pattern_send_refused(void)
{
    for (int refuse = 3; refuse <= 4; refuse++) {
        for (int lost = 0; lost < 2; lost++) {
            reset(refuse);
            trigger();
            redisReply empty = {.type = REDIS_REPLY_ARRAY};
            deliver(0, marks(true, true));
            deliver(1, &empty);
            CHECK_EQ_INT(nsent, refuse - 1);
            CHECK_EQ_INT(answered, 1);
            CHECK_EQ_INT(last_status, 503);
            CHECK_EQ_INT(submitted, 0);
            for (int i = 2; i < refuse - 1; i++)
                deliver(i, lost ? NULL : &empty);
            CHECK_EQ_INT(answered, 1);
        }
    }
}

/* Both pipelines of a trigger of "order.created" with the patterns mark set, answered with
 * empty hashes; the commands sent in cmds (4). */
static void run_both_pipelines(void)
{
    redisReply empty = {.type = REDIS_REPLY_ARRAY};
    deliver(0, marks(true, true));
    deliver(1, &empty);
    CHECK_EQ_INT(nsent, 4);
    deliver(2, &empty);
    deliver(3, &empty);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 202);
}

/* Without a tenant: exactly the commands of before decision 44. */
static void test_commands_global(void)
{
    reset(0);
    trigger();
    run_both_pipelines();
    CHECK_STR(sent[0].cmd, "MGET wh:index-ready {wh:index-ready}:patterns");
    CHECK_STR(sent[1].cmd, "HGETALL wh:event:order.created");
    CHECK_STR(sent[2].cmd, "HGETALL wh:event:order.*");
    CHECK_STR(sent[3].cmd, "HGETALL wh:event:*");
    CHECK_STR(submitted_tenant, "");
}

/* ?tenant=acme, or a key limited to acme without the parameter: acme's hashes only, and the
 * event carries the tenant to the commit. */
static void test_commands_tenant(void)
{
    for (int by_key = 0; by_key < 2; by_key++) {
        reset(0);
        query_tenant = by_key ? NULL : "acme";
        trigger_as(by_key ? "acme" : "");
        run_both_pipelines();
        CHECK_STR(sent[0].cmd, "MGET wh:index-ready {wh:index-ready}:patterns");
        CHECK_STR(sent[1].cmd, "HGETALL wh:event:@acme:order.created");
        CHECK_STR(sent[2].cmd, "HGETALL wh:event:@acme:order.*");
        CHECK_STR(sent[3].cmd, "HGETALL wh:event:@acme:*");
        CHECK_STR(submitted_tenant, "acme");
    }
    /* the key's own tenant named again: allowed */
    reset(0);
    query_tenant = "acme";
    trigger_as("acme");
    run_both_pipelines();
    CHECK_STR(submitted_tenant, "acme");
}

/* Another tenant than the key's is a 403, a malformed one a 400: nothing sent. */
static void test_tenant_refused(void)
{
    reset(0);
    query_tenant = "beta";
    trigger_as("acme");
    CHECK_EQ_INT(nsent, 0);
    CHECK_EQ_INT(answered, 1);
    CHECK_EQ_INT(last_status, 403);
    char long_id[66];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    const char *const bad[] = {"", "a:b", "a b", "@x", "a.b", long_id};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reset(0);
        query_tenant = bad[i];
        trigger();
        CHECK_EQ_INT(nsent, 0);
        CHECK_EQ_INT(answered, 1);
        CHECK_EQ_INT(last_status, 400);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    test_commands_global();
    test_commands_tenant();
    test_tenant_refused();
    test_both_answered();
    test_no_patterns();
    test_connection_lost();
    test_index_not_ready_db_down();
    test_first_send_refused();
    test_second_send_refused();
    test_pattern_send_refused();
    return unit_done(argv[0]);
}
