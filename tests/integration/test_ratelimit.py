"""The per-subscription rate limit (issue 9, decision 25): one limiter per subscription shared by
every worker (a Lua script on Redis TIME), slots reserved per batch so that a burst is spread
without being read over and over: every job delivered, no window at the receiver with more than
the limit (one request of slack for timing), and exactly one attempt per job (waiting for a slot
is not an attempt). The limit is set with PATCH."""

from collections import Counter

import json

from harness import densest_window, patch_subscription, sub_key, unique_name, wait_drained, wait_until


def run_limited(api, db, rc, receiver, start_worker, report, limit_json, events, workers=2):
    recv = receiver(name="limited")
    event = unique_name("rate")
    sub = api.register(event, recv.url())
    patch_subscription(api, sub, {"rateLimit": json.loads(limit_json)})
    for _ in range(workers):
        start_worker(WORKER_CONCURRENCY=16)
    ids = [api.trigger(event, {"n": i})["eventId"] for i in range(events)]
    got = recv.wait_for(events, timeout=120)
    wait_until(lambda: db.count("jobs", "status = 'delivered' AND event_id IN (SELECT id FROM "
                                f"events WHERE event_name = '{event}')") == events,
               30, f"all {events} jobs delivered")
    wait_drained(rc, timeout=30)
    seen = Counter(r.headers["webhook-id"] for r in got)
    assert set(seen) == set(ids) and max(seen.values()) == 1, \
        {k: n for k, n in seen.items() if n > 1}
    # exactly one attempt row per job, number 1: waiting for a slot is never an attempt
    rows = db.sql("SELECT count(*), min(attempt), max(attempt), count(DISTINCT job_id) FROM "
                  "attempts WHERE job_id IN (SELECT j.id FROM jobs j JOIN events e ON "
                  f"e.id = j.event_id WHERE e.event_name = '{event}')")[0]
    assert tuple(map(int, rows)) == (events, 1, 1, events), rows
    assert db.count("jobs", "attempts <> 1 AND event_id IN (SELECT id FROM events WHERE "
                    f"event_name = '{event}')") == 0
    times = sorted(r.mono for r in got)
    report(f"{limit_json}: {events} events over {times[-1] - times[0]:.1f} s, densest 1 s "
           f"window {densest_window(times, 1.0)}")
    return sub, times


def test_per_second_20_with_two_workers(api, db, rc, receiver, start_worker, report):
    sub, times = run_limited(api, db, rc, receiver, start_worker, report, '{"perSecond": 20}', 400)
    assert densest_window(times, 1.0) <= 21, densest_window(times, 1.0)
    # evenly spaced: never two requests in much less than the 50 ms interval, apart from timing
    assert densest_window(times, 0.2) <= 5, densest_window(times, 0.2)
    # the spread is the limiter's: 400 at 20/s cannot take less than 19.95 s
    assert times[-1] - times[0] >= 19.0
    # the limiter's state: at most max (1) slots kept, with an expiry
    key = sub_key("rate", sub["id"])
    assert rc.call("LLEN", key) <= 1 and rc.call("PTTL", key) != -1


def test_max_per_period(api, db, rc, receiver, start_worker, report):
    sub, times = run_limited(api, db, rc, receiver, start_worker, report,
                             '{"max": 10, "periodSeconds": 1}', 45)
    # 10 at once, then 10 a second later, ... A burst of 10 reaches the receiver spread over a
    # few tens of ms (new connections, threads), so the window checked is 0.9 s.
    assert densest_window(times, 0.9) <= 10, densest_window(times, 0.9)
    assert times[-1] - times[0] >= 3.5
