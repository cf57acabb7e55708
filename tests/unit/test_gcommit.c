/* Unit tests for the pure parts of common/gcommit.c: the batch/pending bounds, the linger's
 * wait and the set of returned ids. */
#include <stdio.h>

#include "gcommit.h"
#include "unit.h"

static void test_limits(void)
{
    struct gcommit_limits l = {3, 10, 100};
    struct gcommit_node small = {.jobs = 2, .bytes = 20};
    struct gcommit_node huge = {.jobs = 50, .bytes = 5000};
    /* An empty group takes anything, even an item past every bound. */
    CHECK_EQ_INT(gcommit_limit_hit(&l, 0, 0, 0, &huge), GCOMMIT_FITS);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 0, 0, 0, &small), GCOMMIT_FITS);
    /* After that, each bound in turn. */
    CHECK_EQ_INT(gcommit_limit_hit(&l, 1, 2, 20, &small), GCOMMIT_FITS);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 2, 8, 80, &small), GCOMMIT_FITS); /* exactly at 10, 100 */
    CHECK_EQ_INT(gcommit_limit_hit(&l, 3, 2, 20, &small), GCOMMIT_ITEMS);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 2, 9, 20, &small), GCOMMIT_JOBS);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 2, 2, 81, &small), GCOMMIT_BYTES);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 1, 0, 0, &huge), GCOMMIT_JOBS);
    /* Items are checked first, then jobs, then bytes. */
    CHECK_EQ_INT(gcommit_limit_hit(&l, 3, 100, 1000, &huge), GCOMMIT_ITEMS);
    CHECK_EQ_INT(gcommit_limit_hit(&l, 1, 100, 1000, &huge), GCOMMIT_JOBS);
    /* 0 means no bound. */
    struct gcommit_limits none = {0, 0, 0};
    CHECK_EQ_INT(gcommit_limit_hit(&none, 1000000, 1000000, 1000000, &huge), GCOMMIT_FITS);
    struct gcommit_limits items_only = {2000, 0, 0};
    CHECK_EQ_INT(gcommit_limit_hit(&items_only, 1999, 1999, 0, &small), GCOMMIT_FITS);
    CHECK_EQ_INT(gcommit_limit_hit(&items_only, 2000, 2000, 0, &small), GCOMMIT_ITEMS);
}

static void test_linger(void)
{
    /* After a batch of 30 whose statement took 4 ms, a group of 1 waits 1 ms (a quarter of
     * 4 ms), one of 29 too, one of 30 or more goes at once. */
    CHECK_EQ_INT(gcommit_linger_us(30, 4000, 1, false), 1000);
    CHECK_EQ_INT(gcommit_linger_us(30, 4000, 29, false), 1000);
    CHECK_EQ_INT(gcommit_linger_us(30, 4000, 30, false), 0);
    CHECK_EQ_INT(gcommit_linger_us(30, 4000, 31, false), 0);
    /* A quarter of the last statement, at most GCOMMIT_LINGER_MAX_US. */
    CHECK_EQ_INT(gcommit_linger_us(30, 2000, 1, false), 500);
    CHECK_EQ_INT(gcommit_linger_us(30, 60000, 1, false), GCOMMIT_LINGER_MAX_US);
    /* Small batches (a low rate) never wait; GCOMMIT_LINGER_MIN is the first that does. */
    CHECK_EQ_INT(gcommit_linger_us(1, 4000, 0, false), 0);
    CHECK_EQ_INT(gcommit_linger_us(GCOMMIT_LINGER_MIN - 1, 4000, 1, false), 0);
    CHECK_EQ_INT(gcommit_linger_us(GCOMMIT_LINGER_MIN, 4000, 1, false), 1000);
    /* No statement answered yet, or one answered at once: no wait. */
    CHECK_EQ_INT(gcommit_linger_us(30, 0, 1, false), 0);
    CHECK_EQ_INT(gcommit_linger_us(30, 3, 1, false), 0);
    /* A group that fills a batch goes, whatever the last one was. */
    CHECK_EQ_INT(gcommit_linger_us(3000, 4000, 2000, true), 0);
}

static void make_id(char *out, unsigned v)
{
    char tmp[ID_LEN + 1];
    snprintf(tmp, sizeof tmp, "%08x-0000-4000-8000-%012x", v * 2654435761u, v);
    memcpy(out, tmp, ID_LEN);
}

static void test_idset(void)
{
    struct idset s = {0};
    char id[ID_LEN];
    CHECK(!idset_has(&s, "00000000-0000-4000-8000-000000000000"));
    /* More than the first allocation, added out of order. */
    for (unsigned i = 0; i < 1000; i += 2) {
        make_id(id, i);
        idset_add(&s, id);
    }
    idset_sort(&s);
    CHECK_EQ_INT(s.n, 500);
    int found = 0, wrong = 0;
    for (unsigned i = 0; i < 1000; i++) {
        make_id(id, i);
        bool has = idset_has(&s, id);
        found += has;
        wrong += has != (i % 2 == 0);
    }
    CHECK_EQ_INT(found, 500);
    CHECK_EQ_INT(wrong, 0);
    /* Cleared: nothing, and the buffer is kept for the next batch. */
    char *kept = s.ids;
    idset_clear(&s);
    make_id(id, 0);
    CHECK(!idset_has(&s, id));
    idset_add(&s, id);
    idset_sort(&s);
    CHECK(s.ids == kept);
    CHECK(idset_has(&s, id));
    make_id(id, 2);
    CHECK(!idset_has(&s, id));
    /* all: every id is in. */
    idset_clear(&s);
    s.all = true;
    CHECK(idset_has(&s, id));
    idset_clear(&s);
    CHECK(!idset_has(&s, id));
    idset_free(&s);
    CHECK(s.ids == NULL && s.n == 0 && s.cap == 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_limits();
    test_linger();
    test_idset();
    return unit_done(argv[0]);
}
