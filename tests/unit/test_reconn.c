/* Unit tests for common/reconn.c: the reconnect backoff sequence and the watchdog's late-tick
 * rule. */
#include "reconn.h"
#include "unit.h"

static void test_backoff(void)
{
    struct reconn rc;
    reconn_init(&rc);
    static const long want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(reconn_delay(&rc), want[i]);
        CHECK_EQ_INT(reconn_next(&rc), want[i]);
    }
    reconn_reset(&rc);
    CHECK_EQ_INT(reconn_delay(&rc), RECONN_BACKOFF_MIN_MS);
    CHECK_EQ_INT(reconn_next(&rc), 100);
    CHECK_EQ_INT(reconn_next(&rc), 200);
}

static void test_watch(void)
{
    struct reconn_watch w = {0};
    /* Ticks every second, request sent at 10 000: silent past 5 s only after 15 000. */
    reconn_watch_restart(&w, 10000);
    for (int64_t t = 10000; t <= 15000; t += 1000)
        CHECK(!reconn_watch_tick(&w, t, 5000));
    CHECK(reconn_watch_tick(&w, 16000, 5000));
    /* A reply restarts the window. */
    reconn_watch_restart(&w, 16500);
    CHECK(!reconn_watch_tick(&w, 17000, 5000));
    CHECK(!reconn_watch_tick(&w, 20000, 5000));
    CHECK(reconn_watch_tick(&w, 21600, 5000));
    /* A tick 3 s late or less is an ordinary tick; later than that (the process was stopped)
     * restarts the window instead of blaming the server. */
    struct reconn_watch v = {0};
    reconn_watch_restart(&v, 0);
    CHECK(!reconn_watch_tick(&v, 1000, 5000));
    CHECK(!reconn_watch_tick(&v, 4000, 5000));     /* 3 000 after: not late */
    CHECK(reconn_watch_tick(&v, 7000, 5000));      /* 3 000 after: silent for 7 s */
    CHECK(!reconn_watch_tick(&v, 60000, 5000));    /* 53 s late: stopped, fresh window */
    for (int64_t t = 61000; t <= 65000; t += 1000) /* 5 s after the late tick: not yet */
        CHECK(!reconn_watch_tick(&v, t, 5000));
    CHECK(reconn_watch_tick(&v, 66000, 5000));
    /* The first tick has no previous one: never late, so a long silence already counts. */
    struct reconn_watch f = {0};
    reconn_watch_restart(&f, 100000);
    CHECK(reconn_watch_tick(&f, 200000, 5000));
}

int main(int argc, char **argv)
{
    (void)argc;
    test_backoff();
    test_watch();
    return unit_done(argv[0]);
}
