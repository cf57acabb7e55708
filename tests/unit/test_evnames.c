/* Unit tests for common/evnames.c: what an entry is, the matching rule, the entries a trigger
 * reads for a name, and the validation of eventNames / eventName. */
#include "evnames.h"
#include "unit.h"

#include <stdlib.h>

#define KIND(lit) evname_kind(lit, sizeof(lit) - 1)

static void test_kinds(void)
{
    CHECK_EQ_INT(KIND("order.paid"), EVNAME_EXACT);
    CHECK_EQ_INT(KIND("order"), EVNAME_EXACT);
    CHECK_EQ_INT(KIND("order.*"), EVNAME_PREFIX);
    CHECK_EQ_INT(KIND("a.b.c.d.e.f.g.h.*"), EVNAME_PREFIX);    /* 7 dots before ".*" */
    CHECK_EQ_INT(KIND("a.b.c.d.e.f.g.h.i.*"), EVNAME_INVALID); /* 8: deeper than a trigger reads */
    CHECK_EQ_INT(KIND("*"), EVNAME_ALL);
    CHECK_EQ_INT(KIND(""), EVNAME_INVALID);
    CHECK_EQ_INT(KIND(".*"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("order*"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("order.*.paid"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("*.paid"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("**"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("order.**"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("order.?"), EVNAME_INVALID);
    CHECK_EQ_INT(KIND("or der.*"), EVNAME_INVALID);
    char big[EVENT_NAME_MAX + 4];
    memset(big, 'x', sizeof big);
    CHECK_EQ_INT(evname_kind(big, EVENT_NAME_MAX), EVNAME_EXACT);
    big[EVENT_NAME_MAX] = '.';
    big[EVENT_NAME_MAX + 1] = '*';
    CHECK_EQ_INT(evname_kind(big, EVENT_NAME_MAX + 2), EVNAME_INVALID);
}

static void test_matches(void)
{
    CHECK(evname_matches("order.*", "order.paid"));
    CHECK(evname_matches("order.*", "order.item.added"));
    CHECK(!evname_matches("order.*", "order"));
    CHECK(!evname_matches("order.*", "orders.x"));
    CHECK(!evname_matches("order.*", "xorder.paid"));
    CHECK(evname_matches("order.item.*", "order.item.added"));
    CHECK(!evname_matches("order.item.*", "order.paid"));
    CHECK(evname_matches("order.paid", "order.paid"));
    CHECK(!evname_matches("order.paid", "order.paid2"));
    CHECK(evname_matches("*", "anything"));
    CHECK(!evname_matches("*", "broker.endpoint.disabled")); /* operational events: their own */
    CHECK(evname_matches("broker.*", "broker.endpoint.disabled"));
}

static void test_keys(void)
{
    char k[EVNAMES_KEYS_MAX][EVNAME_SIZE];
    int n = evname_keys("a.b.c", 5, k);
    CHECK_EQ_INT(n, 4);
    CHECK_STR(k[0], "a.b.c");
    CHECK_STR(k[1], "a.*");
    CHECK_STR(k[2], "a.b.*");
    CHECK_STR(k[3], "*");
    CHECK_EQ_INT(evname_keys("plain", 5, k), 2);
    CHECK_STR(k[1], "*");
    CHECK_EQ_INT(evname_keys("broker.attempt.exhausted", 24, k), 3);
    CHECK_STR(k[1], "broker.*");
    CHECK_STR(k[2], "broker.attempt.*");
    CHECK_EQ_INT(evname_keys(".x", 2, k), 2); /* no empty prefix */
    /* the depth cap: 20 dots, 8 prefix keys */
    const char *deep = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u";
    n = evname_keys(deep, strlen(deep), k);
    CHECK_EQ_INT(n, EVNAMES_KEYS_MAX);
    CHECK_STR(k[8], "a.b.c.d.e.f.g.h.*");
    CHECK_EQ_INT(KIND("a.b.c.d.e.f.g.h.*"), EVNAME_PREFIX);
    /* every key of a name matches it, and a pattern matches a name only through a key */
    const char *names[] = {"order.paid", "order.item.added", "a..b", "x", "q.r.s.t"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        n = evname_keys(names[i], strlen(names[i]), k);
        for (int j = 0; j < n; j++)
            CHECK(evname_matches(k[j], names[i]));
    }
}

static int parse(const char *json, struct evnames *e, char *err)
{
    cJSON *doc = cJSON_Parse(json);
    int rc = evnames_parse(cJSON_GetObjectItemCaseSensitive(doc, "eventNames"),
                           cJSON_GetObjectItemCaseSensitive(doc, "eventName"), e, err, 256);
    cJSON_Delete(doc);
    return rc;
}

static void test_parse(void)
{
    char err[256];
    struct evnames e;
    CHECK_EQ_INT(parse("{\"eventNames\":[\"b\",\"order.*\",\"a\"]}", &e, err), 0);
    CHECK_EQ_INT(e.n, 3);
    CHECK_STR(e.v[0], "a");
    CHECK_STR(e.v[1], "b");
    CHECK_STR(e.v[2], "order.*");
    struct buf b = {0};
    evnames_pg_array(&b, e.v, e.n);
    CHECK_STR(b.data, "{a,b,order.*}");
    buf_free(&b);
    evnames_free(&e);
    CHECK_EQ_INT(parse("{\"eventName\":\"x\"}", &e, err), 0);
    CHECK_EQ_INT(e.n, 1);
    evnames_free(&e);
    CHECK_EQ_INT(parse("{\"eventName\":\"x\",\"eventNames\":[\"x\"]}", &e, err), 0);
    evnames_free(&e);
    CHECK_EQ_INT(parse("{\"eventNames\":[\"*\"]}", &e, err), 0);
    evnames_free(&e);
    CHECK_EQ_INT(parse("{}", &e, err), -1);
    CHECK(strstr(err, "eventNames"));
    CHECK_EQ_INT(parse("{\"eventNames\":[]}", &e, err), -1);
    CHECK_EQ_INT(parse("{\"eventNames\":\"x\"}", &e, err), -1);
    CHECK_EQ_INT(parse("{\"eventNames\":[\"x\",\"x\"]}", &e, err), -1);
    CHECK(strstr(err, "twice"));
    CHECK_EQ_INT(parse("{\"eventNames\":[\"x\",1]}", &e, err), -1);
    CHECK(strstr(err, "eventNames[1]"));
    CHECK_EQ_INT(parse("{\"eventNames\":[\"x\",\"a*\"]}", &e, err), -1);
    CHECK_EQ_INT(parse("{\"eventNames\":[\"*\",\"x\"]}", &e, err), -1);
    CHECK(strstr(err, "only entry"));
    CHECK_EQ_INT(parse("{\"eventName\":\"x\",\"eventNames\":[\"y\"]}", &e, err), -1);
    CHECK(strstr(err, "disagree"));
    CHECK_EQ_INT(parse("{\"eventName\":\"x\",\"eventNames\":[\"x\",\"y\"]}", &e, err), -1);
    CHECK_EQ_INT(parse("{\"eventName\":5}", &e, err), -1);
    CHECK(strstr(err, "eventName must"));
    struct buf big = {0};
    buf_adds(&big, "{\"eventNames\":[");
    for (int i = 0; i <= EVNAMES_MAX; i++)
        buf_printf(&big, "%s\"n%d\"", i ? "," : "", i);
    buf_adds(&big, "]}");
    CHECK_EQ_INT(parse(big.data, &e, err), -1);
    buf_free(&big);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_kinds();
    test_matches();
    test_keys();
    test_parse();
    return unit_done(argv[0]);
}
