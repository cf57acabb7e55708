"""Retry-After on a 429 or 503 slows the whole subscription down (docs/decisions.md 26): the
outcome commit records slow_until = the attempt's start + Retry-After (at most an hour), and
every worker's gate (decision 25) holds that subscription's jobs until then, while other
subscriptions keep flowing. test_no_attempt_while_slowed_on_any_worker needs the gate."""

from harness import unique_name, wait_until


def slow_then_ok(status):
    """A responder: the first request gets status with Retry-After: 2, the rest 200."""
    def respond(index, req):
        if index == 0:
            return status, 0, {"Retry-After": "2"}
        return 200, 0, None
    return respond


def slow_until_after_start(db, sub_id):
    """slow_until minus the start of the subscription's first attempt, in seconds (or None)."""
    v = db.scalar("SELECT extract(epoch FROM s.slow_until - min(a.started_at)) FROM subscriptions s "
                  "JOIN jobs j ON j.subscription_id = s.id JOIN attempts a ON a.job_id = j.id "
                  f"WHERE s.id = '{sub_id}' GROUP BY s.slow_until")
    return float(v) if v is not None else None


def test_slow_until_recorded(api, db, receiver, start_worker):
    for status in (429, 503):
        r = receiver(responder=slow_then_ok(status), name=f"slow{status}")
        sub = api.register(unique_name("slow"), r.url())
        start_worker()
        eid = api.trigger(sub["eventName"], {"n": 1})["eventId"]
        db.wait_jobs(eid, "delivered", count=1)
        delta = slow_until_after_start(db, sub["id"])
        assert delta is not None and abs(delta - 2.0) < 0.01, delta


def test_huge_retry_after_is_capped(api, db, receiver, start_worker):
    r = receiver(statuses=[429, 200], headers=[{"Retry-After": "999999"}, None], name="huge")
    sub = api.register(unique_name("huge"), r.url())
    start_worker()
    api.trigger(sub["eventName"], {"n": 1})
    wait_until(lambda: slow_until_after_start(db, sub["id"]), 15, "slow_until set")
    assert abs(slow_until_after_start(db, sub["id"]) - 3600) < 0.01


def test_other_statuses_do_not_slow_down(api, db, receiver, start_worker):
    r = receiver(statuses=[500, 200], headers=[{"Retry-After": "2"}, None], name="err")
    sub = api.register(unique_name("err"), r.url())
    start_worker(RETRY_SCHEDULE="0.2")
    eid = api.trigger(sub["eventName"], {"n": 1})["eventId"]
    db.wait_jobs(eid, "delivered", count=1, timeout=20)
    assert db.scalar(f"SELECT slow_until FROM subscriptions WHERE id = '{sub['id']}'") is None


def test_no_attempt_while_slowed_on_any_worker(api, db, receiver, start_worker):
    """429 with Retry-After: 2: no attempt to that subscription for ~2 s from either of two
    workers, while another subscription's events are delivered meanwhile."""
    slow = receiver(responder=slow_then_ok(429), name="slow")
    fast = receiver(name="fast")
    slow_sub = api.register(unique_name("slow"), slow.url())
    fast_sub = api.register(unique_name("fast"), fast.url())
    start_worker()
    start_worker()
    api.trigger(slow_sub["eventName"], {"n": 0})
    t0 = slow.wait_for(1)[0].mono
    wait_until(lambda: slow_until_after_start(db, slow_sub["id"]), 10, "slow_until recorded")
    slow_ids = [api.trigger(slow_sub["eventName"], {"n": i})["eventId"] for i in range(1, 9)]
    fast_ids = [api.trigger(fast_sub["eventName"], {"n": i})["eventId"] for i in range(8)]
    for eid in fast_ids:
        db.wait_jobs(eid, "delivered", count=1)
    assert slow.count() == 1, "the slowed subscription got attempts while another flowed"
    for eid in slow_ids:
        db.wait_jobs(eid, "delivered", count=1, timeout=20)
    later = slow.requests[1:]
    assert len(later) >= 8
    early = [round(q.mono - t0, 3) for q in later if q.mono - t0 < 1.8]
    assert early == [], f"attempts {early} s after the 429 with Retry-After: 2"
