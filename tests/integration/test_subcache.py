"""The worker's subscription cache is bounded: SUBSCRIPTION_CACHE_MAX entries at most (the one
read longest ago goes first), and stale entries are swept by the periodic tick even when their
subscription is never looked up again. (The cache's logic has its own unit test:
tests/unit/test_ttlcache.c.)"""

import re

from harness import unique_name, wait_until

CACHE_LINE = re.compile(r"subscription cache: (\d+) stale entries swept, (\d+) evicted over the "
                        r"limit, (\d+) cached")


def cache_lines(worker):
    return [tuple(int(x) for x in m.groups()) for m in CACHE_LINE.finditer(worker.log_text())]


def fan_out(api, db, receiver, n):
    event = unique_name("cache")
    recv = receiver(name="cache")
    for i in range(n):
        api.register(event, recv.url(f"/c{i}"))
    eid = api.trigger(event, {"n": n})["eventId"]
    db.wait_jobs(eid, "delivered", count=n)
    return recv


def test_cache_bounded_by_count(api, db, receiver, start_worker):
    w = start_worker(SUBSCRIPTION_CACHE_MAX=5, SUBSCRIPTION_CACHE_TTL=3600)
    fan_out(api, db, receiver, 12)
    # 12 subscriptions read, at most 5 kept: 7 evicted, reported by the next sweep tick.
    lines = wait_until(lambda: cache_lines(w), 10, "the cache report of the tick")
    assert sum(e for _, e, _ in lines) == 7, lines
    assert all(c <= 5 for _, _, c in lines) and lines[-1][2] == 5, lines


def test_stale_entries_swept_without_lookups(api, db, receiver, start_worker):
    w = start_worker(SUBSCRIPTION_CACHE_TTL=0.2)
    fan_out(api, db, receiver, 8)
    # Nothing looks those subscriptions up again: the tick alone must empty the cache.
    lines = wait_until(lambda: [l for l in cache_lines(w) if l[2] == 0], 10,
                       "a sweep that leaves the cache empty")
    assert sum(s for s, _, _ in cache_lines(w)) == 8, cache_lines(w)
    assert lines
