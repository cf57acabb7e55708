"""Ordered delivery (issue 11 part 5, docs/decisions.md 33): `ordered: true` delivers a
subscription's jobs one at a time, in the order the broker committed them, a failing head
blocking the ones behind it until it is delivered or dead.

The proof: a receiver that fails about 20 % of requests at random (seeded) and records every
request's sequence number (from the payload), its answer and how many of the subscription's
requests were in flight at once; two workers; 1,000 events triggered one after another (each
202 means committed, so the commit order is the sequence order). The receiver must see the
sequence numbers in non-decreasing order (a number repeats only as the same job sent again),
each first reception strictly after the previous one, all of them, never two requests at once.
Repeated with a worker SIGKILLed mid-run (a replacement started) and with redis-server
SIGKILLed mid-run, its data deleted and restarted empty, the reconciler requeueing what Redis
lost. Beside it an unordered subscription of the same event is delivered concurrently. Pause /
resume and PATCH ordered on/off mid-stream; a non-boolean is refused, nothing written."""

import json
import random
import threading
import time

import pytest

from harness import (HELD_SUBS, JOBS, assert_error, patch_subscription, run_reconciler, sql_quote,
                     sub_key, unique_name, wait_until)

N_EVENTS = 1000
FAIL_RATE = 0.2
# Short delays so 200-odd failed heads cost seconds: every failure waits for the retry promoter.
FAST_RETRY = {"schedule": [0.02] * 20}
WORKER_ENV = dict(WORKER_CONCURRENCY=16, DELIVERY_TIMEOUT=2, DELIVERY_CONNECT_TIMEOUT=1,
                  CLAIM_IDLE=3, LOG_LEVEL="info")
RECON_ENV = dict(RECONCILE_GRACE="1", RECONCILE_CONFIRM="0.2")


class Recorder:
    """A responder for harness.Receiver: answers 500 with probability fail (seeded) after
    holding the request for hold seconds, and records (seq, status) in arrival order and the
    most requests it held at once. seq is the payload's "seq"."""

    def __init__(self, seed, fail=FAIL_RATE, hold=0.002):
        self.rng = random.Random(seed)
        self.fail = fail
        self.hold = hold
        self.lock = threading.Lock()
        self.log = []
        self.inflight = 0
        self.max_inflight = 0

    def __call__(self, index, req):
        seq = json.loads(req.body)["seq"]
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            status = 500 if self.rng.random() < self.fail else 200
            self.log.append((seq, status))
        time.sleep(self.hold)
        with self.lock:
            self.inflight -= 1
        return status, 0, None

    def delivered(self):
        with self.lock:
            return {s for s, st in self.log if st == 200}

    def entries(self):
        with self.lock:
            return list(self.log)


# The receivers answer with an empty body: Python's http.server writes a body apart from the
# headers, and with Nagle's algorithm on its side and delayed ACKs on the worker's that costs
# about 40 ms per request, which would measure the receiver, not the broker.


def register(api, event, url, **settings):
    body = {"eventName": event, "webhookUrl": url, **settings}
    st, _, data = api.post("/api/v0/webhooks", body)
    assert st == 201, (st, data)
    return data


def trigger_seq(api, event, first, n):
    for i in range(first, first + n):
        api.trigger(event, {"seq": i})


def job_statuses(db, sub_id):
    return dict(db.sql(f"SELECT status, count(*) FROM jobs WHERE subscription_id = "
                       f"{sql_quote(sub_id)} GROUP BY 1"))


def wait_delivered(db, rec, sub_id, n, timeout, kick=None):
    """Until the n jobs of the subscription are delivered in PostgreSQL and the receiver
    answered 200 to each; kick() is called while waiting (e.g. a reconciler pass)."""

    def done():
        if kick:
            kick()
        return job_statuses(db, sub_id) == {"delivered": str(n)} and len(rec.delivered()) == n

    try:
        wait_until(done, timeout, f"{n} jobs delivered", 0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; jobs by status: {job_statuses(db, sub_id)}; received "
                             f"{len(rec.delivered())} distinct with 200") from None


def check_order(rec, n, repeats_after_success=0):
    """The receptions' sequence numbers never go back, cover 0..n-1, and a number repeats only
    after a failed reception of it, except at most repeats_after_success times (a fault between
    a 200 and its record). Never two requests at once. Returns (receptions, repeats)."""
    log = rec.entries()
    seqs = [s for s, _ in log]
    back = [(i, seqs[i - 1], seqs[i]) for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1]]
    assert not back, (f"order broken: (index, before, after) {back[:10]}; around the first: "
                      f"{log[max(0, back[0][0] - 8):back[0][0] + 3] if back else ''}")
    firsts = list(dict.fromkeys(seqs))
    assert firsts == list(range(n)), f"first receptions: {firsts[:20]}... ({len(firsts)})"
    after_success = [(i, s) for i, (s, st) in enumerate(log)
                     if i > 0 and log[i - 1][0] == s and log[i - 1][1] == 200]
    assert len(after_success) <= repeats_after_success, (
        f"sent again after a 200: {after_success[:10]}")
    assert rec.max_inflight == 1, f"{rec.max_inflight} requests of the subscription at once"
    return len(log), len(log) - n


@pytest.fixture
def ordered_run(api, db, receiver, start_worker):
    """Two workers, an event with an ordered subscription (recorder seeded with seed) and an
    unordered one (concurrency recorder, no failures): returns (event, sub, rec, side_sub,
    side_rec, workers)."""

    def make(seed):
        event = unique_name("ordered")
        rec = Recorder(seed)
        r = receiver(responder=rec, body=b"")
        sub = register(api, event, r.url(), ordered=True, retryPolicy=FAST_RETRY)
        assert sub["ordered"] is True
        side_rec = Recorder(seed + 1, fail=0.0, hold=0.02)
        side = register(api, event, receiver(responder=side_rec, body=b"").url())
        assert side["ordered"] is False
        workers = [start_worker(name="worker-a", **WORKER_ENV),
                   start_worker(name="worker-b", **WORKER_ENV)]
        return event, sub, rec, side, side_rec, workers

    return make


def finish_side(db, side, side_rec, n):
    """The unordered subscription beside: everything delivered, requests concurrent."""
    wait_delivered(db, side_rec, side["id"], n, 60)
    assert side_rec.max_inflight > 1, "the unordered subscription was delivered one at a time"


def test_ordered_two_workers_random_failures(ordered_run, api, db, rc, report):
    event, sub, rec, side, side_rec, _ = ordered_run(11)
    t0 = time.monotonic()
    trigger_seq(api, event, 0, N_EVENTS)
    wait_delivered(db, rec, sub["id"], N_EVENTS, 120)
    took = time.monotonic() - t0
    receptions, repeats = check_order(rec, N_EVENTS)
    failures = sum(1 for _, st in rec.entries() if st != 200)
    assert repeats == failures, (repeats, failures)
    finish_side(db, side, side_rec, N_EVENTS)
    # Nothing left waiting: the held zset is gone, the subscription out of held-subs.
    wait_until(lambda: rc.call("EXISTS", sub_key("held", sub["id"])) == 0, 5, "no waiting jobs")
    assert sub["id"] not in rc.smembers(HELD_SUBS)
    report(f"ordered: {N_EVENTS} events, {receptions} requests ({failures} failed), "
           f"{took:.1f} s from the first trigger to the last delivery "
           f"({N_EVENTS / took:.0f} deliveries/s with 20 % failures); unordered beside: "
           f"{side_rec.max_inflight} at once")


def test_ordered_worker_killed(ordered_run, api, db, start_worker, report):
    event, sub, rec, side, side_rec, workers = ordered_run(12)
    trigger_seq(api, event, 0, N_EVENTS)
    wait_until(lambda: len(rec.delivered()) >= N_EVENTS // 3, 60, "a third delivered", 0.05)
    workers[0].kill()
    at_kill = len(rec.delivered())
    assert at_kill < N_EVENTS, "everything was delivered before the kill: nothing tested"
    start_worker(name="worker-c", **WORKER_ENV)
    wait_delivered(db, rec, sub["id"], N_EVENTS, 120)
    receptions, repeats = check_order(rec, N_EVENTS, repeats_after_success=1)
    finish_side(db, side, side_rec, N_EVENTS)
    report(f"ordered, worker SIGKILLed after {at_kill} deliveries: {receptions} requests, "
           f"{repeats} repeats, order kept")


def test_ordered_redis_killed_and_wiped(ordered_run, api, db, redis, report):
    event, sub, rec, side, side_rec, _ = ordered_run(13)
    trigger_seq(api, event, 0, N_EVENTS)
    wait_until(lambda: len(rec.delivered()) >= N_EVENTS // 3, 60, "a third delivered", 0.05)
    redis.kill()
    at_kill = len(rec.delivered())
    assert at_kill < N_EVENTS, "everything was delivered before the kill: nothing tested"
    redis.wipe_files()
    redis.start()
    passes, requeued = [], []

    def reconcile():
        if not passes or time.monotonic() - passes[-1] > 1.5:
            passes.append(time.monotonic())
            counts, _ = run_reconciler(redis, db, **RECON_ENV)
            requeued.append(counts["requeued"] + counts["rescheduled"] if counts else 0)

    wait_delivered(db, rec, sub["id"], N_EVENTS, 150, kick=reconcile)
    receptions, repeats = check_order(rec, N_EVENTS, repeats_after_success=1)
    wait_delivered(db, side_rec, side["id"], N_EVENTS, 60, kick=reconcile)
    assert sum(requeued) > 0, "the reconciler requeued nothing: Redis lost no job?"
    report(f"ordered, redis-server SIGKILLed and wiped after {at_kill} deliveries: "
           f"{len(passes)} reconciler passes requeued {sum(requeued)} jobs, {receptions} "
           f"requests, {repeats} repeats, order kept")


def test_pause_resume_and_ordered_on_off(api, db, rc, receiver, start_worker):
    n = 300
    event = unique_name("ordered")
    rec = Recorder(14)
    sub = register(api, event, receiver(responder=rec, body=b"").url(), ordered=True,
                   retryPolicy=FAST_RETRY)
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    trigger_seq(api, event, 0, n)
    wait_until(lambda: len(rec.delivered()) >= n // 4, 60, "a quarter delivered", 0.05)
    assert patch_subscription(api, sub, {"status": "paused"})["status"] == "paused"
    at_pause = len(rec.entries())
    time.sleep(1.0)
    # at most the head in flight at the pause (and its retries once) went out after it
    assert len(rec.entries()) - at_pause <= 3, "deliveries went on while paused"
    resumed = patch_subscription(api, sub, {"status": "active"})
    assert resumed["status"] == "active" and resumed["ordered"] is True
    wait_delivered(db, rec, sub["id"], n, 90)
    check_order(rec, n)

    # ordered off mid-stream: the jobs waiting for their turn are released and go concurrently
    slow = Recorder(15, fail=0.0, hold=0.05)
    sub2 = register(api, unique_name("ordered"), receiver(responder=slow, body=b"").url(), ordered=True)
    trigger_seq(api, sub2["eventName"], 0, 100)
    wait_until(lambda: len(slow.entries()) >= 5, 30, "the first deliveries", 0.05)
    assert slow.max_inflight == 1
    off = patch_subscription(api, sub2, {"ordered": False})
    assert off["ordered"] is False
    wait_delivered(db, slow, sub2["id"], 100, 30)
    assert slow.max_inflight > 1, "still one at a time after ordered was turned off"
    wait_until(lambda: rc.call("EXISTS", sub_key("held", sub2["id"])) == 0, 5, "nothing waits")

    # and on again: the next events are ordered
    on = patch_subscription(api, sub2, {"ordered": True})
    assert on["ordered"] is True
    slow.max_inflight = 0
    slow.log.clear()
    trigger_seq(api, sub2["eventName"], 0, 40)
    wait_until(lambda: len(slow.delivered()) == 40, 30, "40 delivered again", 0.1)
    check_order(slow, 40)
    st, _, got = api.get(f"/api/v0/webhooks/{sub2['eventName']}/{sub2['id']}")
    assert st == 200 and got["ordered"] is True, got


def test_second_copy_of_the_head_waits_for_the_lock(api, db, rc, receiver, start_worker):
    """Two copies of the head on the stream (as after a requeue of a job whose Redis state was
    lost while it was in flight): the second finds the lock taken by the first copy's attempt
    (the token names the worker and the stream entry, not only the job), waits, and is then
    found delivered: one request, never two at once."""
    rec = Recorder(17, fail=0.0, hold=1.5)
    sub = register(api, unique_name("ordered"), receiver(responder=rec, body=b"").url(),
                   ordered=True)
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    trigger_seq(api, sub["eventName"], 0, 1)
    wait_until(lambda: rec.entries(), 10, "the first copy's request", 0.02)
    msg = db.scalar(f"SELECT id FROM jobs WHERE subscription_id = {sql_quote(sub['id'])}")
    job = json.dumps({"j": msg, "e": db.scalar(f"SELECT event_id FROM jobs WHERE id = "
                                                f"{sql_quote(msg)}"), "s": sub["id"],
                      "n": sub["eventName"], "u": sub["webhookUrl"], "a": 1},
                     separators=(",", ":"))
    rc.call("XADD", JOBS, "*", "d", job)
    wait_delivered(db, rec, sub["id"], 1, 20)
    time.sleep(1.5)  # the second copy comes back from its 1 s park and is found delivered
    assert rec.max_inflight == 1, "the two copies were sent at once"
    assert len(rec.entries()) == 1, rec.entries()


def test_head_older_than_a_finished_job_does_not_loop(api, db, rc, receiver, start_worker):
    """A head whose id is below a job that already finished (a dead job sent again by recover
    or replay is unfinished again; simulated by setting ctl's ofin above every id): the jobs read
    behind it are re-checked a second later from the retry set, not sent round the stream in a
    loop, and everything is delivered in order."""
    rec = Recorder(18, fail=0.0, hold=0.5)
    sub = register(api, unique_name("ordered"), receiver(responder=rec, body=b"").url(),
                   ordered=True)
    rc.call("HSET", sub_key("ctl", sub["id"]), "ofin", "ffffffff-ffff-7fff-bfff-ffffffffffff")
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    rc.call("CONFIG", "RESETSTAT")
    trigger_seq(api, sub["eventName"], 0, 4)
    wait_delivered(db, rec, sub["id"], 4, 30)
    check_order(rec, 4)
    stats = rc.call("INFO", "commandstats").decode()
    xadds = next((int(line.split("calls=")[1].split(",")[0]) for line in stats.splitlines()
                  if line.startswith("cmdstat_xadd:")), 0)
    # 4 enqueues by the broker, a few re-checks a second apart: not thousands
    assert xadds < 40, f"{xadds} XADDs: the waiting jobs looped through the stream"


def test_ordered_with_a_rate_limit(api, db, receiver, start_worker):
    """The head waits for its rate-limit slot (parked with its reservation when the slot is
    more than 250 ms away, the lock released meanwhile) and still goes first: in order, spaced
    by the limit."""
    rec = Recorder(19, fail=0.0)
    sub = register(api, unique_name("ordered"), receiver(responder=rec, body=b"").url(),
                   ordered=True, rateLimit={"perSecond": 2})
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    t0 = time.monotonic()
    trigger_seq(api, sub["eventName"], 0, 5)
    wait_delivered(db, rec, sub["id"], 5, 30)
    check_order(rec, 5)
    assert time.monotonic() - t0 >= 1.9, "5 deliveries at 2 a second took under 2 s"


def test_reconciler_releases_a_stranded_head(api, db, rc, redis, receiver, start_worker):
    """A lost release (the head's outcome recorded, its Redis clean-up not): the head and the
    jobs behind it all wait in the held zset. The reconciler releases the head only (the
    smallest waiting id at or below the head PostgreSQL gives), not the jobs behind it; the
    worker then delivers all three in order."""
    rec = Recorder(16, fail=0.0)
    sub = register(api, unique_name("ordered"), receiver(responder=rec, body=b"").url(),
                   ordered=True)
    trigger_seq(api, sub["eventName"], 0, 3)
    entries = [(eid, f["d"]) for eid, f in rc.xrange(JOBS)
               if json.loads(f["d"])["s"] == sub["id"]]
    assert len(entries) == 3, entries
    held = sub_key("held", sub["id"])
    for eid, msg in entries:
        rc.call("XDEL", JOBS, eid)
        rc.call("ZADD", held, 0, msg)
    rc.call("SADD", HELD_SUBS, sub["id"])
    head = min(json.loads(msg)["j"] for _, msg in entries)
    for _ in range(2):  # the second pass releases nothing more: the others wait behind the head
        run_reconciler(redis, db, **RECON_ENV)
        assert rc.call("ZCARD", held) == 2
        assert [m["j"] for m in rc.stream_jobs() if m["s"] == sub["id"]] == [head]
    start_worker(name="worker-a", **WORKER_ENV)
    wait_delivered(db, rec, sub["id"], 3, 30)
    check_order(rec, 3)
    wait_until(lambda: rc.call("EXISTS", held) == 0, 5, "nothing waits")


EVENT = "ordered.validation"


@pytest.fixture(scope="module")
def subscribed(broker):
    return broker.api.register(EVENT, "http://127.0.0.1:9/hook")


@pytest.mark.parametrize("value", ["true", 1, 0, {}, [], "yes"])
def test_non_boolean_ordered_refused(api, unchanged, value):
    err = assert_error(api.post("/api/v0/webhooks", {
        "eventName": EVENT, "webhookUrl": "http://127.0.0.1:9/other", "ordered": value}),
        400, "invalid_field")
    assert "ordered" in err["message"]


def test_non_boolean_ordered_refused_by_patch(api, db, subscribed):
    sub = subscribed
    before = db.sql(f"SELECT ordered, updated_at FROM subscriptions WHERE id = "
                    f"{sql_quote(sub['id'])}")
    err = assert_error(api.request("PATCH", f"/api/v0/webhooks/{EVENT}/{sub['id']}",
                                   {"ordered": "false", "description": "x"}), 400, "invalid_field")
    assert "ordered" in err["message"]
    assert db.sql(f"SELECT ordered, updated_at FROM subscriptions WHERE id = "
                  f"{sql_quote(sub['id'])}") == before
    # null is the default
    st, _, data = api.request("PATCH", f"/api/v0/webhooks/{EVENT}/{sub['id']}",
                              {"ordered": None})
    assert st == 200 and data["ordered"] is False, data
