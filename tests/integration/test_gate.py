"""Subscription controls as the worker applies them before an attempt (issue 9, decision 25):
settings and delivery state are read from PostgreSQL with every batch (a change applies to every
job read after it, whatever the subscription cache holds): timeoutSeconds, the current webhook
URL, disabled (cancelled with the reason), paused (held in the held zset, in order, nothing
sent), slowed down or circuit open (parked, no attempt), half-open (one probe at a time across
workers). timeoutSeconds and the URL are changed with PATCH; the delivery state and health
columns in SQL and Redis directly, to test the worker alone (test_pause.py covers PATCH's
pause and resume end to end)."""

import json
import time

from harness import (HELD_SUBS, JOBS, LIVE, RETRY, patch_subscription, set_subscription, sub_key,
                     unique_name, wait_drained, wait_until)


def jobs_of(db, event_name):
    """(job id, status, attempts, last_error) of the event name's jobs, in creation order."""
    rows = db.sql("SELECT j.id, j.status, j.attempts, j.last_error FROM jobs j JOIN events e ON "
                  f"e.id = j.event_id WHERE e.event_name = '{event_name}' ORDER BY j.id")
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


def attempts_of(db, event_name):
    return db.count("attempts", "job_id IN (SELECT j.id FROM jobs j JOIN events e ON "
                    f"e.id = j.event_id WHERE e.event_name = '{event_name}')")


def wait_statuses(db, event_name, status, n, timeout=20):
    return wait_until(lambda: (lambda rows: rows if len(rows) == n and
                               all(r[1] == status for r in rows) else False)(
                                   jobs_of(db, event_name)),
                      timeout, f"{n} jobs of {event_name} {status}")


def test_timeout_seconds_per_subscription(api, db, receiver, start_worker):
    recv = receiver(delay=3, name="slow")
    event = unique_name("gate.timeout")
    sub = api.register(event, recv.url())
    patch_subscription(api, sub, {"timeoutSeconds": 1, "retryPolicy": {
        "strategy": "fixed", "intervalSeconds": 0.2, "maxAttempts": 1}})
    start_worker(DELIVERY_TIMEOUT=5)
    api.trigger(event, {"slow": True})
    (job_id, status, attempts, err), = wait_statuses(db, event, "dead", 1, timeout=15)
    assert attempts == 1 and err.startswith("timeout"), (status, attempts, err)
    duration = int(db.scalar(f"SELECT duration_ms FROM attempts WHERE job_id = '{job_id}'"))
    # the subscription's 1 s, not DELIVERY_TIMEOUT's 5 s (nor the receiver's 3 s)
    assert 900 <= duration < 2500, duration
    recv.wait_for(1)


def test_url_changed_in_postgresql_applies_to_queued_jobs(api, db, rc, receiver, start_worker):
    old, new = receiver(name="old-url"), receiver(name="new-url")
    event = unique_name("gate.url")
    sub = api.register(event, old.url("/before"))
    ids = [api.trigger(event, {"n": i})["eventId"] for i in range(5)]
    queued = rc.stream_jobs(JOBS)
    assert any(m["s"] == sub["id"] and m["u"] == old.url("/before") for m in queued), queued
    patch_subscription(api, sub, {"webhookUrl": new.url("/after")})
    start_worker()
    wait_statuses(db, event, "delivered", 5)
    got = new.wait_for(5)
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(ids)
    assert all(r.path == "/after" for r in got)
    assert old.count() == 0, old.requests


def test_disabled_subscription_jobs_cancelled_with_reason(api, db, rc, receiver, start_worker):
    recv = receiver(name="disabled")
    event = unique_name("gate.disabled")
    sub = api.register(event, recv.url())
    # Jobs created before the disable (once disabled, the broker creates none).
    for i in range(4):
        api.trigger(event, {"n": i})
    set_subscription(db, sub["id"], disabled_at="now()",
                     disabled_reason="'failing for 5 days'")
    start_worker()
    rows = wait_statuses(db, event, "cancelled", 4)
    assert all(r[2] == 0 and r[3] == "subscription disabled: failing for 5 days" for r in rows)
    assert attempts_of(db, event) == 0
    wait_drained(rc, [r[0] for r in rows])
    assert recv.count() == 0


def test_paused_jobs_held_in_order_then_released(api, db, rc, receiver, start_worker):
    recv = receiver(name="paused")
    event = unique_name("gate.paused")
    sub = api.register(event, recv.url())
    sid = sub["id"]
    ctl, held = sub_key("ctl", sid), sub_key("held", sid)
    set_subscription(db, sid, paused_at="now()")
    rc.call("HSET", ctl, "st", "paused")
    w = start_worker(WORKER_CONCURRENCY=1)  # one at a time: the receiver sees the stream order
    ids = [api.trigger(event, {"n": i})["eventId"] for i in range(6)]
    wait_until(lambda: rc.call("ZCARD", held) == 6, 15, "6 jobs in the held zset")
    # nothing sent, nothing attempted, every job still live and still queued
    time.sleep(1.0)
    assert recv.count() == 0
    assert attempts_of(db, event) == 0
    rows = jobs_of(db, event)
    assert [r[1] for r in rows] == ["queued"] * 6 and all(r[2] == 0 for r in rows)
    job_ids = [r[0] for r in rows]
    assert set(job_ids) <= rc.smembers(LIVE)
    assert sid in rc.smembers(HELD_SUBS)
    assert rc.pending() == 0
    members = [json.loads(m) for m in rc.call("ZRANGE", held, 0, -1, "WITHSCORES")[::2]]
    scores = rc.call("ZRANGE", held, 0, -1, "WITHSCORES")[1::2]
    assert all(float(s) == 0 for s in scores), scores
    # sorted by message = by job id, the message of the same (first) attempt
    assert [m["j"] for m in members] == job_ids
    assert all(m["a"] == 1 and "r" not in m and m["s"] == sid for m in members), members

    # Resume as the broker does: PostgreSQL first, then st active and the held messages to
    # the stream (the release script of common/held.c, by hand here).
    set_subscription(db, sid, paused_at="NULL")
    rc.call("HSET", ctl, "st", "active")
    for m in rc.call("ZRANGE", held, 0, -1):
        rc.call("XADD", JOBS, "*", "d", m)
    rc.call("DEL", held)
    rc.call("SREM", HELD_SUBS, sid)
    wait_statuses(db, event, "delivered", 6)
    got = recv.wait_for(6)
    # released in the held zset's order: by job id (UUIDv7: creation order, to the millisecond)
    by_job = [r[0] for r in db.sql("SELECT event_id FROM jobs WHERE id IN (" +
                                   ",".join(f"'{j}'" for j in job_ids) + ") ORDER BY id")]
    assert sorted(by_job) == sorted(ids)
    assert [r.headers["webhook-id"] for r in got] == by_job
    assert attempts_of(db, event) == 6
    wait_drained(rc, job_ids)
    assert "held" in w.log_text()


def test_paused_but_resumed_in_redis_goes_to_retry_set(api, db, rc, receiver, start_worker):
    """The held script sees st = active (a resume raced the worker's read): due now in the retry
    set instead of the held zset, so it is not stranded."""
    recv = receiver(name="raced")
    event = unique_name("gate.raced")
    sub = api.register(event, recv.url())
    sid = sub["id"]
    set_subscription(db, sid, paused_at="now()")
    rc.call("HSET", sub_key("ctl", sid), "st", "active")
    start_worker()
    api.trigger(event, {"n": 1})
    # PostgreSQL still says paused: it keeps cycling through the retry set, never held or sent
    wait_until(lambda: rc.call("ZCARD", RETRY) >= 1 or rc.xlen(JOBS) >= 1, 10,
               "the job parked in the retry set")
    time.sleep(1.0)
    assert rc.call("ZCARD", sub_key("held", sid)) == 0
    assert recv.count() == 0 and attempts_of(db, event) == 0
    set_subscription(db, sid, paused_at="NULL")
    wait_statuses(db, event, "delivered", 1)
    assert recv.count() == 1


def test_slow_until_delays_without_attempts(api, db, rc, receiver, start_worker):
    recv = receiver(name="slowed")
    event = unique_name("gate.slow")
    sub = api.register(event, recv.url())
    set_subscription(db, sub["id"], slow_until="now() + interval '2.5 seconds'")
    until = float(db.scalar("SELECT extract(epoch FROM slow_until) FROM subscriptions WHERE "
                            f"id = '{sub['id']}'"))
    start_worker()
    for i in range(3):
        api.trigger(event, {"n": i})
    wait_until(lambda: rc.call("ZCARD", RETRY) == 3, 10, "3 jobs parked until slow_until")
    assert recv.count() == 0 and attempts_of(db, event) == 0
    assert all(r[1] == "queued" and r[2] == 0 for r in jobs_of(db, event))
    wait_statuses(db, event, "delivered", 3)
    got = recv.wait_for(3)
    assert min(r.time for r in got) >= until - 0.05, (until, [r.time for r in got])
    assert attempts_of(db, event) == 3


def test_circuit_open_parks_then_half_open_one_probe_at_a_time(api, db, rc, receiver,
                                                                start_worker):
    spans = []  # (arrival, end) of every request, monotonic seconds

    def responder(index, req):
        time.sleep(1.5)  # a second probe would overlap this one
        spans.append((req.mono, time.monotonic()))
        return 200, 0, None

    recv = receiver(responder=responder, name="probe")
    event = unique_name("gate.circuit")
    sub = api.register(event, recv.url())
    sid = sub["id"]
    # open for 2 more seconds: parked, no attempt
    set_subscription(db, sid, circuit_open_until="now() + interval '2 seconds'")
    workers = [start_worker(), start_worker()]
    for i in range(4):
        api.trigger(event, {"n": i})
    wait_until(lambda: rc.call("ZCARD", RETRY) == 4, 10, "4 jobs parked while the circuit is open")
    assert recv.count() == 0 and attempts_of(db, event) == 0
    # Half-open once the time has passed: one probe, holding the lock in ctl, and no other
    # request (either worker) until it has finished. (Here the circuit stays half-open, as
    # nothing closes it, so every job goes as a probe, one at a time.)
    recv.wait_for(1, timeout=10)
    probe = rc.call("HGET", sub_key("ctl", sid), "probe")
    assert probe is not None and probe.decode().split(":")[1] in [r[0] for r in jobs_of(db, event)]
    wait_statuses(db, event, "delivered", 4, timeout=40)
    assert recv.count() == 4 and attempts_of(db, event) == 4
    assert all(r[2] == 1 for r in jobs_of(db, event))
    spans.sort()
    first_end = spans[0][1]
    assert all(arrival >= first_end - 0.05 for arrival, _ in spans[1:]), spans
    assert any("is the probe" in w.log_text() for w in workers)
