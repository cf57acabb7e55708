/* Unit tests for common/cluster.c: the CRC16 reference vector and hash tag rules of the Redis
 * Cluster specification, slot maps from CLUSTER SLOTS replies (valid and malformed), and
 * MOVED/ASK parsing (valid and malformed). */
#include <stdarg.h>
#include <stdlib.h>

#include "cluster.h"
#include "unit.h"

static unsigned slot_s(const char *key)
{
    return cluster_slot(key, strlen(key));
}

static void test_crc16(void)
{
    CHECK_EQ_INT(cluster_crc16("123456789", 9), 0x31C3); /* the specification's vector */
    CHECK_EQ_INT(cluster_crc16("", 0), 0);
    /* Values redis-cli's CLUSTER KEYSLOT gives (Redis 7.0). */
    CHECK_EQ_INT(slot_s("foo"), 12182);
    CHECK_EQ_INT(slot_s("bar"), 5061);
    CHECK_EQ_INT(slot_s("123456789"), 0x31C3 & 16383);
    CHECK_EQ_INT(slot_s(""), 0);
}

static void test_hash_tags(void)
{
    /* The specification's examples. */
    CHECK_EQ_INT(slot_s("{user1000}.following"), slot_s("user1000"));
    CHECK_EQ_INT(slot_s("{user1000}.followers"), slot_s("{user1000}.following"));
    CHECK_EQ_INT(slot_s("foo{}{bar}"), cluster_crc16("foo{}{bar}", 10) & 16383); /* whole key */
    CHECK_EQ_INT(slot_s("foo{{bar}}zap"), slot_s("{bar")); /* the tag is "{bar" */
    CHECK_EQ_INT(slot_s("foo{{bar}}zap"), cluster_crc16("{bar", 4) & 16383);
    CHECK_EQ_INT(slot_s("foo{bar}{zap}"), slot_s("bar")); /* the first tag only */
    /* Edge cases. */
    CHECK_EQ_INT(slot_s("{}"), cluster_crc16("{}", 2) & 16383);
    CHECK_EQ_INT(slot_s("{{bar}}"), cluster_crc16("{bar", 4) & 16383);
    CHECK_EQ_INT(slot_s("{bar"), cluster_crc16("{bar", 4) & 16383); /* no '}': whole key */
    CHECK_EQ_INT(slot_s("bar}"), cluster_crc16("bar}", 4) & 16383);
    CHECK_EQ_INT(slot_s("}{bar}"), slot_s("bar")); /* a '}' before the '{' does not count */
    CHECK_EQ_INT(slot_s("a{b}c"), slot_s("b"));
    CHECK_EQ_INT(slot_s("wh:{0}:jobs"), slot_s("0"));
    CHECK_EQ_INT(slot_s("wh:{0}:payload:x{y}"), slot_s("0"));
    CHECK_EQ_INT(slot_s("{wh:index-ready}:rebuild"), slot_s("wh:index-ready"));
    /* Binary-safe: bytes after a NUL count, the length decides. */
    CHECK_EQ_INT(cluster_slot("a\0{b}", 5), slot_s("b"));
    CHECK(cluster_slot("ab", 1) == slot_s("a"));
    for (unsigned i = 0; i < 1000; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "key:%u", i);
        CHECK(cluster_slot(k, (size_t)n) < CLUSTER_SLOTS);
    }
}

/* ---- redisReply trees built by hand (freed with freeReplyObject) ---- */

static redisReply *r_new(int type)
{
    redisReply *r = calloc(1, sizeof *r);
    r->type = type;
    return r;
}

static redisReply *r_int(long long v)
{
    redisReply *r = r_new(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *r_str(const char *s)
{
    redisReply *r = r_new(REDIS_REPLY_STRING);
    r->len = strlen(s);
    r->str = malloc(r->len + 1);
    memcpy(r->str, s, r->len + 1);
    return r;
}

/* An array of n elements given as arguments. */
static redisReply *r_arr(int n, ...)
{
    redisReply *r = r_new(REDIS_REPLY_ARRAY);
    r->elements = (size_t)n;
    r->element = n ? calloc((size_t)n, sizeof *r->element) : NULL;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static redisReply *node(const char *host, long long port, const char *id)
{
    return r_arr(3, r_str(host), r_int(port), r_str(id));
}

/* The shape `redis-cli --cluster create` gives three masters with one replica each. */
static redisReply *three_masters(void)
{
    return r_arr(3,
                 r_arr(4, r_int(0), r_int(5460), node("127.0.0.1", 30001, "a"),
                       node("127.0.0.1", 30005, "e")),
                 r_arr(4, r_int(5461), r_int(10922), node("127.0.0.1", 30002, "b"),
                       node("127.0.0.1", 30006, "f")),
                 r_arr(4, r_int(10923), r_int(16383), node("127.0.0.1", 30003, "c"),
                       node("127.0.0.1", 30004, "d")));
}

static void test_map_valid(void)
{
    char err[256] = "";
    struct cluster_map m;
    redisReply *r = three_masters();
    CHECK_EQ_INT(cluster_map_parse(&m, r, err, sizeof err), 0);
    freeReplyObject(r); /* the map copies what it keeps */
    CHECK_STR(err, "");
    CHECK_EQ_INT(m.nranges, 3);
    CHECK_EQ_INT(m.nnodes, 6);
    CHECK(cluster_map_complete(&m));
    CHECK_EQ_INT(cluster_map_master(&m, 0)->port, 30001);
    CHECK_EQ_INT(cluster_map_master(&m, 5460)->port, 30001);
    CHECK_EQ_INT(cluster_map_master(&m, 5461)->port, 30002);
    CHECK_EQ_INT(cluster_map_master(&m, 16383)->port, 30003);
    CHECK_STR(cluster_map_master(&m, 12182)->host, "127.0.0.1");
    CHECK(cluster_map_master(&m, 16384) == NULL);
    CHECK_EQ_INT(m.ranges[1].nreplicas, 1);
    CHECK_EQ_INT(m.nodes[m.ranges[1].replicas[0]].port, 30006);
    cluster_map_free(&m);
    CHECK(m.nodes == NULL && m.owner == NULL && m.nranges == 0);

    /* A master of two ranges is one node; a partial map is valid but not complete; a NIL or
     * empty host means "the same host"; extra node fields (7.0 metadata) are ignored. */
    redisReply *nil = r_new(REDIS_REPLY_NIL);
    r = r_arr(3, r_arr(3, r_int(0), r_int(99), node("10.0.0.1", 7000, "a")),
              r_arr(3, r_int(200), r_int(299), node("10.0.0.1", 7000, "a")),
              r_arr(3, r_int(100), r_int(100), r_arr(4, nil, r_int(7001), r_str("b"), r_arr(0))));
    CHECK_EQ_INT(cluster_map_parse(&m, r, err, sizeof err), 0);
    freeReplyObject(r);
    CHECK_EQ_INT(m.nnodes, 2);
    CHECK_EQ_INT(m.nranges, 3);
    CHECK(!cluster_map_complete(&m));
    CHECK(cluster_map_master(&m, 150) == NULL);
    CHECK(cluster_map_master(&m, 0) == cluster_map_master(&m, 250));
    CHECK_STR(cluster_map_master(&m, 100)->host, "");
    CHECK_EQ_INT(cluster_map_master(&m, 100)->port, 7001);
    cluster_map_free(&m);
    cluster_map_free(&m); /* twice is harmless */
}

static void check_map_rejected(redisReply *r, const char *want)
{
    char err[256] = "";
    struct cluster_map m;
    CHECK_EQ_INT(cluster_map_parse(&m, r, err, sizeof err), -1);
    if (!CHECK(strstr(err, want) != NULL))
        fprintf(stderr, "    err \"%s\", want \"%s\"\n", err, want);
    CHECK(m.nodes == NULL && m.ranges == NULL && m.owner == NULL);
    freeReplyObject(r);
}

static void test_map_malformed(void)
{
    char err[256];
    struct cluster_map m;
    CHECK_EQ_INT(cluster_map_parse(&m, NULL, err, sizeof err), -1);
    check_map_rejected(r_arr(0), "no slot ranges");
    redisReply *e = r_new(REDIS_REPLY_ERROR);
    e->str = malloc(64);
    e->len = (size_t)snprintf(e->str, 64, "ERR This instance has cluster support disabled");
    check_map_rejected(e, "cluster support disabled");
    check_map_rejected(r_str("nope"), "no slot ranges");
    check_map_rejected(r_arr(1, r_int(3)), "not an array");
    check_map_rejected(r_arr(1, r_arr(2, r_int(0), r_int(10))), "not an array");
    check_map_rejected(r_arr(1, r_arr(3, r_int(10), r_int(5), node("h", 1, "a"))), "lo <= hi");
    check_map_rejected(r_arr(1, r_arr(3, r_int(-1), r_int(5), node("h", 1, "a"))), "lo <= hi");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(16384), node("h", 1, "a"))), "lo <= hi");
    check_map_rejected(r_arr(1, r_arr(3, r_str("0"), r_int(5), node("h", 1, "a"))), "lo <= hi");
    check_map_rejected(r_arr(2, r_arr(3, r_int(0), r_int(10), node("h", 1, "a")),
                             r_arr(3, r_int(10), r_int(20), node("h", 2, "b"))),
                       "slot 10 is in two ranges");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), node("h", 0, "a"))), "port");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), node("h", 65536, "a"))), "port");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(2, r_str("h"), r_str("1")))),
                       "port");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(1, r_str("h")))),
                       "not an array [host");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(2, r_int(1), r_int(1)))),
                       "not a string");
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), node("?", 7000, "a"))), "unknown");
    char longhost[300];
    memset(longhost, 'h', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    check_map_rejected(r_arr(1, r_arr(3, r_int(0), r_int(5), node(longhost, 7000, "a"))),
                       "too long");
    /* A malformed replica after a good master: everything is released. */
    check_map_rejected(r_arr(2, r_arr(3, r_int(0), r_int(5), node("h", 1, "a")),
                             r_arr(4, r_int(6), r_int(9), node("h", 2, "b"), r_int(7))),
                       "not an array [host");
}

static void check_redirect(const char *s, enum cluster_redirect_kind kind, unsigned slot,
                           const char *host, int port)
{
    struct cluster_redirect r;
    CHECK(cluster_redirect_parse(s, strlen(s), &r));
    CHECK_EQ_INT(r.kind, kind);
    CHECK_EQ_INT(r.slot, slot);
    CHECK_STR(r.node.host, host);
    CHECK_EQ_INT(r.node.port, port);
}

static void check_not_redirect(const char *s, size_t len)
{
    struct cluster_redirect r = {.kind = CLUSTER_ASK};
    if (!CHECK(!cluster_redirect_parse(s, len, &r)))
        fprintf(stderr, "    accepted \"%.*s\"\n", (int)len, s);
    CHECK_EQ_INT(r.kind, CLUSTER_REDIRECT_NONE);
}

#define NOT_REDIRECT(s) check_not_redirect(s, strlen(s))

static void test_redirect(void)
{
    check_redirect("MOVED 3999 127.0.0.1:6381", CLUSTER_MOVED, 3999, "127.0.0.1", 6381);
    check_redirect("ASK 3999 127.0.0.1:6381", CLUSTER_ASK, 3999, "127.0.0.1", 6381);
    check_redirect("MOVED 0 h:1", CLUSTER_MOVED, 0, "h", 1);
    check_redirect("MOVED 16383 redis-2.example:65535", CLUSTER_MOVED, 16383, "redis-2.example",
                   65535);
    check_redirect("MOVED 12 ::1:7000", CLUSTER_MOVED, 12, "::1", 7000); /* IPv6, unbracketed */
    check_redirect("ASK 12 :7000", CLUSTER_ASK, 12, "", 7000);           /* the same host */
    /* The length decides, not a NUL. */
    struct cluster_redirect r;
    CHECK(cluster_redirect_parse("MOVED 1 h:2 trailing", 11, &r) && r.node.port == 2);

    NOT_REDIRECT("");
    NOT_REDIRECT("MOVED");
    NOT_REDIRECT("MOVED ");
    NOT_REDIRECT("MOVED 3999");
    NOT_REDIRECT("MOVED 3999 ");
    NOT_REDIRECT("MOVED 3999 127.0.0.1");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:0");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:65536");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:6381 ");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:6381\r\n");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:63a1");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:+6381");
    NOT_REDIRECT("MOVED 3999 127.0.0.1:06381");
    NOT_REDIRECT("MOVED 3999 127.0 .0.1:6381");
    NOT_REDIRECT("MOVED 16384 127.0.0.1:6381");
    NOT_REDIRECT("MOVED -1 127.0.0.1:6381");
    NOT_REDIRECT("MOVED 03999 127.0.0.1:6381");
    NOT_REDIRECT("MOVED 39a9 127.0.0.1:6381");
    NOT_REDIRECT("MOVED  3999 127.0.0.1:6381");
    NOT_REDIRECT("MOVED 3999  127.0.0.1:6381");
    NOT_REDIRECT("moved 3999 127.0.0.1:6381");
    NOT_REDIRECT("-MOVED 3999 127.0.0.1:6381");
    NOT_REDIRECT(" MOVED 3999 127.0.0.1:6381");
    NOT_REDIRECT("MOVEDX 3999 127.0.0.1:6381");
    NOT_REDIRECT("ASKING 3999 127.0.0.1:6381");
    NOT_REDIRECT("TRYAGAIN Multiple keys request during rehashing of slot");
    NOT_REDIRECT("CLUSTERDOWN The cluster is down");
    NOT_REDIRECT("CROSSSLOT Keys in request don't hash to the same slot");
    NOT_REDIRECT("ERR unknown command");
    check_not_redirect("MOVED 1 h\0x:2", 13);
    char longhost[400] = "MOVED 1 ";
    memset(longhost + 8, 'h', 300);
    memcpy(longhost + 308, ":7000", 6);
    NOT_REDIRECT(longhost);
    CHECK(!cluster_redirect_parse(NULL, 0, &r));
}

int main(int argc, char **argv)
{
    (void)argc;
    test_crc16();
    test_hash_tags();
    test_map_valid();
    test_map_malformed();
    test_redirect();
    return unit_done(argv[0]);
}
