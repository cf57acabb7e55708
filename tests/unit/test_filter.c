/* Unit tests: common/filter.c (validation messages and the matching rules of docs/api.md). */
#include "filter.h"
#include "unit.h"

#include <stdlib.h>

#include "mem.h"

/* 1 match, 0 no match, -1 the filter did not compile. */
static int m(const char *filter, const char *payload)
{
    char err[256];
    struct filter *f = filter_parse(filter, strlen(filter), err, sizeof err);
    if (!f) {
        fprintf(stderr, "    filter %s: %s\n", filter, err);
        return -1;
    }
    cJSON *p = cJSON_Parse(payload);
    if (!p) {
        fprintf(stderr, "    bad test payload %s\n", payload);
        filter_free(f);
        return -2;
    }
    int r = filter_match(f, p);
    cJSON_Delete(p);
    filter_free(f);
    return r;
}

#define MATCH(f, p) CHECK_EQ_INT(m(f, p), 1)
#define NO_MATCH(f, p) CHECK_EQ_INT(m(f, p), 0)

/* The filter is refused with exactly this message. */
static void refused(const char *filter, const char *want, int line)
{
    char err[256] = "";
    struct filter *f = filter_parse(filter, strlen(filter), err, sizeof err);
    if (!unit_check(f == NULL, __FILE__, line, "refused"))
        fprintf(stderr, "    accepted %s\n", filter);
    else if (!unit_check(strcmp(err, want) == 0, __FILE__, line, "message"))
        fprintf(stderr, "    got \"%s\", want \"%s\"\n", err, want);
    filter_free(f);
}
#define REFUSED(f, msg) refused(f, msg, __LINE__)

static void test_eq(void)
{
    const char *p =
        "{\"type\":\"order.created\",\"data\":{\"amount\":150,\"currency\":\"EUR\","
        "\"paid\":true,\"note\":null,\"tags\":[\"a\",\"b\"],\"meta\":{\"x\":1,\"y\":[1,2]}}}";
    MATCH("{}", p);
    MATCH("{\"type\":\"order.created\"}", p);
    NO_MATCH("{\"type\":\"order.paid\"}", p);
    MATCH("{\"data.amount\":150}", p);
    MATCH("{\"data.amount\":150.0}", p);
    MATCH("{\"data.amount\":{\"$eq\":150}}", p);
    NO_MATCH("{\"data.amount\":\"150\"}", p); /* no conversion between types */
    MATCH("{\"data.paid\":true}", p);
    NO_MATCH("{\"data.paid\":false}", p);
    NO_MATCH("{\"data.paid\":1}", p);
    MATCH("{\"data.note\":null}", p);
    NO_MATCH("{\"data.missing\":null}", p); /* missing is not null */
    /* objects and arrays: deep equality, member order does not matter */
    MATCH("{\"data.meta\":{\"y\":[1,2],\"x\":1}}", p);
    NO_MATCH("{\"data.meta\":{\"x\":1}}", p);
    NO_MATCH("{\"data.meta\":{\"y\":[2,1],\"x\":1}}", p);
    MATCH("{\"data.tags\":[\"a\",\"b\"]}", p);
    /* a value on an array field: one element equal is enough */
    MATCH("{\"data.tags\":\"b\"}", p);
    NO_MATCH("{\"data.tags\":\"c\"}", p);
    /* keys are an AND */
    MATCH("{\"type\":\"order.created\",\"data.currency\":\"EUR\"}", p);
    NO_MATCH("{\"type\":\"order.created\",\"data.currency\":\"USD\"}", p);
    /* a nested object as the value is compared whole, not as paths */
    NO_MATCH("{\"data\":{\"amount\":150}}", p);
    MATCH("{\"data.meta.x\":1}", p);
    /* $neq: the negation of $eq (true for a missing field) */
    MATCH("{\"data.amount\":{\"$neq\":100}}", p);
    NO_MATCH("{\"data.amount\":{\"$neq\":150}}", p);
    MATCH("{\"data.missing\":{\"$neq\":1}}", p);
    MATCH("{\"data.amount\":{\"$neq\":\"150\"}}", p);
    NO_MATCH("{\"data.tags\":{\"$neq\":\"a\"}}", p);
    /* a scalar payload: only the empty filter and $exists false match */
    MATCH("{}", "42");
    NO_MATCH("{\"a\":1}", "42");
    MATCH("{\"a\":{\"$exists\":false}}", "[1]");
}

static void test_order(void)
{
    const char *p = "{\"n\":10,\"s\":\"m\",\"f\":2.5,\"neg\":-3,\"b\":true}";
    MATCH("{\"n\":{\"$gt\":9}}", p);
    NO_MATCH("{\"n\":{\"$gt\":10}}", p);
    MATCH("{\"n\":{\"$gte\":10}}", p);
    NO_MATCH("{\"n\":{\"$gte\":10.5}}", p);
    MATCH("{\"n\":{\"$lt\":11}}", p);
    NO_MATCH("{\"n\":{\"$lt\":10}}", p);
    MATCH("{\"n\":{\"$lte\":10}}", p);
    NO_MATCH("{\"n\":{\"$lte\":9.99}}", p);
    MATCH("{\"f\":{\"$gt\":2,\"$lt\":3}}", p); /* a range: every operator holds */
    NO_MATCH("{\"f\":{\"$gt\":2,\"$lt\":2.5}}", p);
    MATCH("{\"neg\":{\"$lt\":-2.5e0}}", p);
    MATCH("{\"n\":{\"$gt\":1e0}}", p);
    /* strings: byte order */
    MATCH("{\"s\":{\"$gt\":\"a\"}}", p);
    MATCH("{\"s\":{\"$gte\":\"m\",\"$lte\":\"m\"}}", p);
    NO_MATCH("{\"s\":{\"$gt\":\"z\"}}", p);
    MATCH("{\"s\":{\"$lt\":\"n\"}}", p);
    /* a type mismatch is no match, never an error */
    NO_MATCH("{\"n\":{\"$gt\":\"1\"}}", p);
    NO_MATCH("{\"s\":{\"$gt\":1}}", p);
    NO_MATCH("{\"b\":{\"$gt\":0}}", p);
    NO_MATCH("{\"missing\":{\"$lt\":100}}", p);
    /* arrays: one element in range is enough */
    MATCH("{\"v\":{\"$gt\":5}}", "{\"v\":[1,7]}");
    NO_MATCH("{\"v\":{\"$gt\":7}}", "{\"v\":[1,7]}");
    MATCH("{\"v\":{\"$gt\":5,\"$lt\":2}}", "{\"v\":[1,7]}"); /* each by some element */
}

static void test_in(void)
{
    const char *p = "{\"c\":\"EUR\",\"n\":3,\"tags\":[\"x\",\"y\"],\"o\":{\"k\":1}}";
    MATCH("{\"c\":{\"$in\":[\"USD\",\"EUR\"]}}", p);
    NO_MATCH("{\"c\":{\"$in\":[\"USD\",\"GBP\"]}}", p);
    NO_MATCH("{\"c\":{\"$in\":[]}}", p);
    MATCH("{\"n\":{\"$in\":[1,2,3]}}", p);
    NO_MATCH("{\"n\":{\"$in\":[\"3\"]}}", p);
    MATCH("{\"tags\":{\"$in\":[\"y\",\"z\"]}}", p);
    NO_MATCH("{\"tags\":{\"$in\":[\"z\"]}}", p);
    MATCH("{\"o\":{\"$in\":[{\"k\":1}]}}", p);
    NO_MATCH("{\"missing\":{\"$in\":[null]}}", p);
    MATCH("{\"c\":{\"$nin\":[\"USD\"]}}", p);
    NO_MATCH("{\"c\":{\"$nin\":[\"EUR\",\"USD\"]}}", p);
    MATCH("{\"missing\":{\"$nin\":[1]}}", p);
    NO_MATCH("{\"tags\":{\"$nin\":[\"x\"]}}", p);
    MATCH("{\"tags\":{\"$nin\":[\"q\"]}}", p);
}

static void test_exists(void)
{
    const char *p = "{\"a\":{\"b\":null,\"c\":0},\"l\":[{\"id\":1},{\"name\":\"n\"}]}";
    MATCH("{\"a.b\":{\"$exists\":true}}", p); /* null exists */
    MATCH("{\"a.c\":{\"$exists\":true}}", p);
    NO_MATCH("{\"a.d\":{\"$exists\":true}}", p);
    MATCH("{\"a.d\":{\"$exists\":false}}", p);
    NO_MATCH("{\"a.b\":{\"$exists\":false}}", p);
    NO_MATCH("{\"a.b.c\":{\"$exists\":true}}", p); /* through a null */
    MATCH("{\"l.name\":{\"$exists\":true}}", p);
    MATCH("{\"l.1.name\":{\"$exists\":true}}", p);
    NO_MATCH("{\"l.0.name\":{\"$exists\":true}}", p);
    NO_MATCH("{\"l.2\":{\"$exists\":true}}", p);
    MATCH("{\"l.2\":{\"$exists\":false}}", p);
}

static void test_strings(void)
{
    const char *p = "{\"e\":\"alice@example.com\",\"n\":12,\"l\":[\"foo.bar\",\"baz\"],\"u\":"
                    "\"\xc3\xa9t\xc3\xa9\"}";
    MATCH("{\"e\":{\"$prefix\":\"alice@\"}}", p);
    NO_MATCH("{\"e\":{\"$prefix\":\"bob@\"}}", p);
    MATCH("{\"e\":{\"$suffix\":\"@example.com\"}}", p);
    NO_MATCH("{\"e\":{\"$suffix\":\"@example.org\"}}", p);
    MATCH("{\"e\":{\"$contains\":\"@exa\"}}", p);
    NO_MATCH("{\"e\":{\"$contains\":\"@exb\"}}", p);
    MATCH("{\"e\":{\"$prefix\":\"\"}}", p);
    MATCH("{\"e\":{\"$contains\":\"\"}}", p);
    NO_MATCH("{\"e\":{\"$prefix\":\"alice@example.com.\"}}", p);
    MATCH("{\"e\":{\"$suffix\":\"alice@example.com\"}}", p);
    NO_MATCH("{\"e\":{\"$suffix\":\"xalice@example.com\"}}", p);
    NO_MATCH("{\"n\":{\"$prefix\":\"1\"}}", p); /* not a string */
    NO_MATCH("{\"missing\":{\"$contains\":\"\"}}", p);
    MATCH("{\"l\":{\"$prefix\":\"ba\"}}", p);
    MATCH("{\"l\":{\"$suffix\":\".bar\"}}", p);
    NO_MATCH("{\"l\":{\"$contains\":\"qux\"}}", p);
    MATCH("{\"u\":{\"$prefix\":\"\xc3\xa9\"}}", p);
    MATCH("{\"u\":{\"$suffix\":\"t\\u00e9\"}}", p); /* escapes in the filter */
}

static void test_logic(void)
{
    const char *p = "{\"type\":\"a\",\"n\":5,\"tags\":[\"x\"]}";
    MATCH("{\"$or\":[{\"type\":\"b\"},{\"n\":5}]}", p);
    NO_MATCH("{\"$or\":[{\"type\":\"b\"},{\"n\":6}]}", p);
    MATCH("{\"$and\":[{\"type\":\"a\"},{\"n\":{\"$gte\":5}}]}", p);
    NO_MATCH("{\"$and\":[{\"type\":\"a\"},{\"n\":{\"$gt\":5}}]}", p);
    MATCH("{\"$not\":{\"type\":\"b\"}}", p);
    NO_MATCH("{\"$not\":{\"type\":\"a\"}}", p);
    NO_MATCH("{\"$not\":{\"type\":\"a\",\"n\":5}}", p);
    MATCH("{\"$not\":{\"type\":\"a\",\"n\":6}}", p);
    MATCH("{\"type\":\"a\",\"$or\":[{\"n\":1},{\"tags\":\"x\"}]}", p);
    NO_MATCH("{\"type\":\"b\",\"$or\":[{\"n\":1},{\"tags\":\"x\"}]}", p);
    MATCH("{\"$or\":[{\"$and\":[{\"type\":\"a\"},{\"$not\":{\"n\":1}}]},{\"n\":0}]}", p);
    /* $not on a field: an operator object or a value */
    MATCH("{\"n\":{\"$not\":{\"$gt\":5}}}", p);
    NO_MATCH("{\"n\":{\"$not\":{\"$gte\":5}}}", p);
    MATCH("{\"n\":{\"$not\":{\"$gt\":1,\"$lt\":4}}}", p);
    NO_MATCH("{\"n\":{\"$not\":{\"$gt\":1,\"$lt\":6}}}", p);
    MATCH("{\"type\":{\"$not\":\"b\"}}", p);
    NO_MATCH("{\"type\":{\"$not\":\"a\"}}", p);
    MATCH("{\"missing\":{\"$not\":{\"$gt\":1}}}", p);
    MATCH("{\"type\":{\"$not\":{\"$prefix\":\"b\"}}}", p);
    MATCH("{\"n\":{\"$not\":{\"$gt\":\"a\"}}}", p); /* mismatch is false, so $not is true */
}

static void test_paths(void)
{
    const char *p = "{\"a\":{\"b\":{\"c\":[10,{\"d\":\"x\"},[{\"d\":\"y\"}]]}},"
                    "\"items\":[{\"sku\":\"s1\",\"q\":1},{\"sku\":\"s2\",\"q\":5}],"
                    "\"0\":\"zero\",\"m\":{\"1\":\"one\"}}";
    MATCH("{\"a.b.c.0\":10}", p);
    MATCH("{\"a.b.c.1.d\":\"x\"}", p);
    MATCH("{\"a.b.c.d\":\"x\"}", p);
    MATCH("{\"a.b.c.d\":\"y\"}", p); /* arrays within arrays */
    MATCH("{\"a.b.c.2.0.d\":\"y\"}", p);
    NO_MATCH("{\"a.b.c.3\":10}", p);
    MATCH("{\"items.sku\":\"s2\"}", p);
    MATCH("{\"items.1.sku\":\"s2\"}", p);
    NO_MATCH("{\"items.0.sku\":\"s2\"}", p);
    MATCH("{\"items.q\":{\"$gte\":5}}", p);
    NO_MATCH("{\"items.q\":{\"$gt\":5}}", p);
    MATCH("{\"0\":\"zero\"}", p); /* a digit segment is an object key on objects */
    MATCH("{\"m.1\":\"one\"}", p);
    NO_MATCH("{\"items.01.sku\":\"s2\"}", p); /* not an index: a key, arrays have none */
    NO_MATCH("{\"a.b.c.d.e\":\"x\"}", p);
    NO_MATCH("{\"a.x.c\":1}", p);
    /* a payload array at the top */
    MATCH("{\"0.k\":1}", "[{\"k\":1}]");
    MATCH("{\"k\":2}", "[{\"k\":1},{\"k\":2}]");
    /* a key with a dot cannot be reached: dots always split */
    NO_MATCH("{\"a.b\":1}", "{\"a.b\":1}");
}

static void test_refused(void)
{
    REFUSED("[]", "filter: must be an object (or null for none)");
    REFUSED("1", "filter: must be an object (or null for none)");
    REFUSED("{", "filter: not valid JSON");
    REFUSED("{\"$foo\":1}", "filter: unknown operator $foo");
    REFUSED("{\"a\":{\"$foo\":1}}", "filter.a: unknown operator $foo");
    REFUSED("{\"data.amount\":{\"$gt\":true}}", "filter.data.amount: $gt needs a number or string");
    REFUSED("{\"a\":{\"$gte\":null}}", "filter.a: $gte needs a number or string");
    REFUSED("{\"a\":{\"$lt\":[1]}}", "filter.a: $lt needs a number or string");
    REFUSED("{\"a\":{\"$lte\":{}}}", "filter.a: $lte needs a number or string");
    REFUSED("{\"a\":{\"$in\":1}}", "filter.a: $in needs an array of at most 100 values");
    REFUSED("{\"a\":{\"$nin\":\"x\"}}", "filter.a: $nin needs an array of at most 100 values");
    REFUSED("{\"a\":{\"$exists\":1}}", "filter.a: $exists needs true or false");
    REFUSED("{\"a\":{\"$prefix\":1}}", "filter.a: $prefix needs a string");
    REFUSED("{\"a\":{\"$suffix\":null}}", "filter.a: $suffix needs a string");
    REFUSED("{\"a\":{\"$contains\":[\"x\"]}}", "filter.a: $contains needs a string");
    REFUSED("{\"a\":{\"$not\":{\"$foo\":1}}}", "filter.a.$not: unknown operator $foo");
    REFUSED("{\"a\":{\"$gt\":1,\"b\":2}}",
            "filter.a: \"b\" is not an operator: an object of operators cannot have fields "
            "(write the field path as a key of its own)");
    REFUSED("{\"a\":{\"b\":2,\"$gt\":1}}",
            "filter.a: an object mixes operators ($gt) and fields: use an object of operators, "
            "or a value to compare with");
    REFUSED("{\"a\":{\"$or\":[{\"b\":1}]}}",
            "filter.a: $or takes filters and is allowed only at the top level or inside $and, "
            "$or and $not (use {\"$or\": [{\"field\": ...}, ...]})");
    REFUSED("{\"$gt\":1}", "filter: $gt needs a field: write {\"<field path>\": {\"$gt\": ...}}");
    REFUSED("{\"$and\":[]}", "filter.$and: $and needs an array of 1 to 100 filters (objects)");
    REFUSED("{\"$or\":{}}", "filter.$or: $or needs an array of 1 to 100 filters (objects)");
    REFUSED("{\"$or\":[{\"a\":1},2]}", "filter.$or[1]: $or takes filters (objects)");
    REFUSED("{\"$or\":[{\"a\":1},{\"b\":{\"$gt\":[]}}]}",
            "filter.$or[1].b: $gt needs a number or string");
    REFUSED("{\"$not\":[1]}", "filter.$not: $not at this level takes a filter (an object)");
    REFUSED("{\"$not\":{\"a\":{\"$in\":{}}}}",
            "filter.$not.a: $in needs an array of at most 100 values");
    REFUSED("{\"a..b\":1}", "filter.a..b: empty segment in the field path (write \"a.b\", not "
                            "\"a..b\", \".a\" or \"a.\")");
    REFUSED("{\".a\":1}", "filter..a: empty segment in the field path (write \"a.b\", not "
                          "\"a..b\", \".a\" or \"a.\")");
    REFUSED("{\"\":1}", "filter.: empty segment in the field path (write \"a.b\", not "
                        "\"a..b\", \".a\" or \"a.\")");
    REFUSED("{\"a\":1,\"a\":2}", "filter: the key \"a\" appears twice in one object");
    REFUSED("{\"a\":{\"x\":1,\"x\":1}}", "filter: the key \"x\" appears twice in one object");
    REFUSED("{\"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g\":1}",
            "filter.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g: a field "
            "path has at most 32 segments");
    /* depth: 8 levels are fine, 9 are not */
    CHECK_EQ_INT(m("{\"a\":[[[[[[[1]]]]]]]}", "{\"a\":[[[[[[[1]]]]]]]}"), 1);
    REFUSED("{\"a\":[[[[[[[[1]]]]]]]]}", "filter: nesting deeper than 8");
    CHECK_EQ_INT(m("{\"$and\":[{\"$or\":[{\"a\":{\"$not\":{\"$in\":[1]}}}]}]}", "{\"a\":2}"), 1);
    REFUSED("{\"$and\":[{\"$or\":[{\"a\":{\"$not\":{\"$in\":[[1]]}}}]}]}",
            "filter: nesting deeper than 8");
    /* $in bounded */
    struct buf b = {0};
    buf_adds(&b, "{\"a\":{\"$in\":[0");
    for (int i = 1; i < FILTER_MAX_LIST; i++)
        buf_printf(&b, ",%d", i);
    buf_adds(&b, "]}}");
    CHECK_EQ_INT(m(b.data, "{\"a\":99}"), 1);
    b.len -= 3;
    buf_adds(&b, ",100]}}");
    REFUSED(b.data, "filter.a: $in needs an array of at most 100 values");
    buf_free(&b);
    /* size: 4096 bytes of compact JSON are fine, 4097 are not (whitespace does not count) */
    buf_adds(&b, "{\"a\": \"");
    while (b.len < FILTER_MAX_BYTES - 1) /* compact: {"a":"xx...x"} is 8 + n */
        buf_addc(&b, 'x');
    buf_adds(&b, "\"}");
    CHECK_EQ_INT(b.len, FILTER_MAX_BYTES + 1); /* one space more than compact */
    CHECK_EQ_INT(m(b.data, "{}"), 0);
    b.len -= 2;
    buf_adds(&b, "x\"}");
    REFUSED(b.data, "filter: over 4096 bytes (as compact JSON)");
    buf_free(&b);
    /* a long key is cut in the message, and a tiny buffer is fine */
    char tiny[8];
    CHECK(filter_parse("{\"$x\":1}", 8, tiny, sizeof tiny) == NULL && strlen(tiny) == 7);
    CHECK(filter_parse("{\"$x\":1}", 8, NULL, 0) == NULL);
}

static void test_literals(void)
{
    /* $eq and $in take any value literally, operators inside included */
    MATCH("{\"a\":{\"$eq\":{\"$gt\":1}}}", "{\"a\":{\"$gt\":1}}");
    NO_MATCH("{\"a\":{\"$eq\":{\"$gt\":1}}}", "{\"a\":2}");
    MATCH("{\"a\":{}}", "{\"a\":{}}");
    NO_MATCH("{\"a\":{}}", "{\"a\":{\"b\":1}}");
    MATCH("{\"a\":[]}", "{\"a\":[]}");
    NO_MATCH("{\"a\":[]}", "{\"a\":[1]}");
    MATCH("{\"a\":{\"$not\":{}}}", "{\"a\":{\"b\":1}}");
}

int main(int argc, char **argv)
{
    (void)argc;
    test_eq();
    test_order();
    test_in();
    test_exists();
    test_strings();
    test_logic();
    test_paths();
    test_refused();
    test_literals();
    return unit_done(argv[0]);
}
