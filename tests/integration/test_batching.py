"""Batching (issue 11 part 4, docs/decisions.md 40): `batching: {"maxSize", "maxIntervalSeconds"}`
sends a subscription's jobs together, one POST whose body is a JSON array of envelopes, signed
once with webhook-id = the batch id, when maxSize are waiting or the oldest has waited
maxIntervalSeconds. A failed batch is retried as a unit and each job's attempt log shows the
batch's attempts; dead as a unit. Two workers never put a job in two batches; a worker SIGKILLed
mid-batch and a Redis SIGKILLed and wiped mid-run lose nothing. Invalid settings: 400, nothing
written."""

import json
import os
import threading
import time

import pytest

from harness import (JOBS, assert_error, patch_subscription, run_reconciler, sql_quote,
                     unique_name, verify_signature, wait_until)

WORKER_ENV = dict(WORKER_CONCURRENCY=16, DELIVERY_TIMEOUT=2, DELIVERY_CONNECT_TIMEOUT=1,
                  CLAIM_IDLE=3, LOG_LEVEL=os.environ.get("WH_TEST_LOG", "info"))
RECON_ENV = dict(RECONCILE_GRACE="1", RECONCILE_CONFIRM="0.2")
FAST_RETRY = {"schedule": [0.2, 0.2, 0.2]}


class Batches:
    """A responder for harness.Receiver: records each request's body (a list of envelopes) and
    headers; answers statuses[i] (the last repeating) after hold seconds."""

    def __init__(self, statuses=(200,), hold=0.0):
        self.statuses = list(statuses)
        self.hold = hold
        self.lock = threading.Lock()
        self.reqs = []

    def __call__(self, index, req):
        with self.lock:
            self.reqs.append(req)
            status = self.statuses[min(index, len(self.statuses) - 1)]
        time.sleep(self.hold)
        return status, 0, None

    def bodies(self):
        with self.lock:
            return [json.loads(r.body) for r in self.reqs]

    def seqs(self):
        return [e["data"]["seq"] for b in self.bodies() for e in b]


def register(api, event, url, **settings):
    st, _, data = api.post("/api/v0/webhooks", {"eventName": event, "webhookUrl": url,
                                                 **settings})
    assert st == 201, (st, data)
    return data


def trigger_seq(api, event, first, n):
    return [api.trigger(event, {"seq": i})["eventId"] for i in range(first, first + n)]


def statuses(db, sub_id):
    return {st: int(n) for st, n in db.sql(f"SELECT status, count(*) FROM jobs WHERE "
                                           f"subscription_id = {sql_quote(sub_id)} GROUP BY 1")}


def wait_status(db, sub_id, status, n, timeout, kick=None):
    def done():
        if kick:
            kick()
        return statuses(db, sub_id) == {status: n}
    try:
        wait_until(done, timeout, f"{n} jobs {status}", 0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; jobs: {statuses(db, sub_id)}") from None


def test_max_size_sends_one_signed_array(api, db, receiver, start_worker):
    rec = Batches()
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 5, "maxIntervalSeconds": 300},
                   payloadFields={"env": "test"})
    assert sub["batching"] == {"maxSize": 5, "maxIntervalSeconds": 300}
    start_worker(name="worker-a", **WORKER_ENV)
    events = trigger_seq(api, event, 0, 10)
    wait_status(db, sub["id"], "delivered", 10, 20)
    bodies = rec.bodies()
    assert [len(b) for b in bodies] == [5, 5], [len(b) for b in bodies]
    assert sorted(rec.seqs()) == list(range(10))
    for req, body in zip(rec.reqs, bodies):
        bid = req.headers.get("webhook-id")
        assert bid not in events, "webhook-id is an event id, not the batch id"
        assert verify_signature(sub["secret"], bid, req.headers.get("webhook-timestamp"),
                                req.body, req.headers.get("webhook-signature")), req.headers
        for env in body:  # each an envelope, payloadFields merged
            assert set(env) == {"id", "type", "timestamp", "data", "env"}, env
            assert env["type"] == event and env["id"] in events and env["env"] == "test"
        # the batch recorded in PostgreSQL, each job's attempt carrying its id
        assert db.scalar(f"SELECT status FROM batches WHERE id = {sql_quote(bid)}") == "delivered"
        ids = {e["id"] for e in body}
        rows = db.sql(f"SELECT j.event_id, a.attempt FROM attempts a JOIN jobs j ON j.id = "
                      f"a.job_id WHERE a.batch_id = {sql_quote(bid)}")
        assert {row[0] for row in rows} == ids and all(row[1] == "1" for row in rows), rows


def test_interval_flushes_a_partial_batch(api, db, receiver, start_worker):
    rec = Batches()
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 100, "maxIntervalSeconds": 1})
    start_worker(name="worker-a", **WORKER_ENV)
    t0 = time.monotonic()
    trigger_seq(api, event, 0, 3)
    wait_status(db, sub["id"], "delivered", 3, 15)
    took = time.monotonic() - t0
    assert [len(b) for b in rec.bodies()] == [3]
    assert took >= 0.9, f"a partial batch went after {took:.2f} s, before its interval"


def job_log(api, job_id):
    st, _, job = api.get(f"/api/v0/jobs/{job_id}")
    assert st == 200, (st, job)
    return job


def test_failed_batch_retried_as_a_unit(api, db, receiver, start_worker):
    rec = Batches(statuses=(500, 503, 200))
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 4, "maxIntervalSeconds": 300},
                   retryPolicy=FAST_RETRY)
    start_worker(name="worker-a", **WORKER_ENV)
    trigger_seq(api, event, 0, 4)
    wait_status(db, sub["id"], "delivered", 4, 20)
    bodies = rec.bodies()
    assert len(bodies) == 3, [len(b) for b in bodies]
    # the same four envelopes each time, under the same batch id: one unit
    assert all(sorted(e["id"] for e in b) == sorted(e["id"] for e in bodies[0]) for b in bodies)
    bids = {req.headers.get("webhook-id") for req in rec.reqs}
    assert len(bids) == 1, bids
    bid = bids.pop()
    for req in rec.reqs:
        assert verify_signature(sub["secret"], bid, req.headers.get("webhook-timestamp"),
                                req.body, req.headers.get("webhook-signature"))
    row = db.sql(f"SELECT status, attempts FROM batches WHERE id = {sql_quote(bid)}")
    assert [list(r_) for r_ in row] == [["delivered", "3"]], row
    for (job_id,) in db.sql(f"SELECT id FROM jobs WHERE subscription_id = "
                            f"{sql_quote(sub['id'])}"):
        job = job_log(api, job_id)
        log = job["attemptLog"]
        assert [a["attempt"] for a in log] == [1, 2, 3], log
        assert [a["statusCode"] for a in log] == [500, 503, 200], log
        assert all(a["batchId"] == bid for a in log), log
        assert job["status"] == "delivered" and job["attempts"] == 3, job


def test_batch_dead_as_a_unit(api, db, receiver, start_worker):
    rec = Batches(statuses=(500,))
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 3, "maxIntervalSeconds": 300},
                   retryPolicy={"schedule": [0.1]})
    start_worker(name="worker-a", **WORKER_ENV)
    trigger_seq(api, event, 0, 3)
    wait_status(db, sub["id"], "dead", 3, 20)
    assert [len(b) for b in rec.bodies()] == [3, 3]  # two attempts, then dead together
    bid = rec.reqs[0].headers.get("webhook-id")
    assert db.scalar(f"SELECT status FROM batches WHERE id = {sql_quote(bid)}") == "dead"
    for (job_id,) in db.sql(f"SELECT id FROM jobs WHERE subscription_id = "
                            f"{sql_quote(sub['id'])}"):
        log = job_log(api, job_id)["attemptLog"]
        assert [(a["attempt"], a["statusCode"], a["batchId"]) for a in log] == [
            (1, 500, bid), (2, 500, bid)], log


def test_two_workers_never_put_a_job_in_two_batches(api, db, receiver, start_worker, report):
    n = 300
    rec = Batches(hold=0.01)
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 7, "maxIntervalSeconds": 1})
    plain_rec = Batches()
    plain = register(api, event, receiver(responder=plain_rec, body=b"").url())
    assert plain["batching"] is None
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    trigger_seq(api, event, 0, n)
    wait_status(db, sub["id"], "delivered", n, 40)
    sizes = [len(b) for b in rec.bodies()]
    assert sorted(rec.seqs()) == list(range(n)), "a job was received twice or never"
    assert max(sizes) == 7 and sum(sizes) == n, sizes
    assert len({req.headers.get("webhook-id") for req in rec.reqs}) == len(rec.reqs)
    assert db.scalar(f"SELECT count(DISTINCT batch_id) FROM jobs WHERE subscription_id = "
                     f"{sql_quote(sub['id'])}") == str(len(sizes))
    # the subscription without batching beside it: one job per request, the payload as is
    wait_status(db, plain["id"], "delivered", n, 40)
    assert sorted(b["seq"] for b in plain_rec.bodies()) == list(range(n))
    report(f"batching: {n} events, maxSize 7, 2 workers: {len(sizes)} requests "
           f"({sizes.count(7)} full)")


def test_two_batches_with_the_same_job_claim_it_once(api, db, rc, receiver, start_worker):
    """Two batch messages on the stream holding the same job (as two copies of a job message
    could make): PostgreSQL's conditional claim gives it to one batch; the receiver gets it
    once, the other batch sends only what is its own."""
    import uuid

    rec = Batches()
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 50, "maxIntervalSeconds": 300})
    trigger_seq(api, event, 0, 3)
    entries = [(eid, f["d"]) for eid, f in rc.xrange(JOBS)
               if json.loads(f["d"])["s"] == sub["id"]]
    assert len(entries) == 3, entries
    for eid, _ in entries:
        rc.call("XDEL", JOBS, eid)
    msgs = [m for _, m in entries]
    b1, b2 = str(uuid.uuid4()), str(uuid.uuid4())
    for bid, jobs in ((b1, msgs[:2]), (b2, msgs[1:])):
        rc.call("XADD", JOBS, "*", "d", '{"b":"%s","s":"%s","a":1,"j":[%s]}' % (
            bid, sub["id"], ",".join(jobs)))
    start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)
    wait_status(db, sub["id"], "delivered", 3, 15)
    assert sorted(rec.seqs()) == [0, 1, 2], rec.bodies()
    assert {req.headers.get("webhook-id") for req in rec.reqs} == {b1, b2}


def test_worker_killed_mid_batch(api, db, receiver, start_worker):
    """The worker holding a batch at the receiver is SIGKILLed: the batch entry stays pending,
    another worker claims it (CLAIM_IDLE 3 s) and sends it again under the same batch id."""
    rec = Batches(hold=1.0)
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 5, "maxIntervalSeconds": 300})
    a = start_worker(name="worker-a", **WORKER_ENV)
    trigger_seq(api, event, 0, 5)
    wait_until(lambda: rec.reqs, 10, "the batch at the receiver", 0.02)
    a.kill()
    start_worker(name="worker-b", **WORKER_ENV)
    wait_status(db, sub["id"], "delivered", 5, 20)
    assert len(rec.reqs) == 2, rec.reqs  # sent again after the kill (at least once)
    assert len({req.headers.get("webhook-id") for req in rec.reqs}) == 1
    assert all(sorted(e["data"]["seq"] for e in b) == list(range(5)) for b in rec.bodies())
    for (job_id,) in db.sql(f"SELECT id FROM jobs WHERE subscription_id = "
                            f"{sql_quote(sub['id'])}"):
        assert [a_["attempt"] for a_ in job_log(api, job_id)["attemptLog"]] == [1]


def test_redis_killed_and_wiped_mid_run(api, db, redis, receiver, start_worker, report):
    n = 200
    # Every job is queued before the workers start, and each worker has one batch at a time
    # held 0.25 s by the receiver (about 80 jobs/s for both): the kill lands with most jobs
    # still in Redis however slowly this test's thread or the triggers run.
    rec = Batches(hold=0.25)
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 10, "maxIntervalSeconds": 1})
    trigger_seq(api, event, 0, n)
    one_at_a_time = {**WORKER_ENV, "WORKER_CONCURRENCY": 1}
    start_worker(name="worker-a", **one_at_a_time)
    start_worker(name="worker-b", **one_at_a_time)
    wait_until(lambda: len(rec.seqs()) >= n // 4, 30, "a quarter delivered", 0.02)
    redis.kill()
    try:
        at_kill = len(rec.seqs())
        assert at_kill < n, "everything was delivered before the kill: nothing tested"
        redis.wipe_files()
    finally:
        redis.start()  # the module's later tests need it, whatever failed here
    passes, requeued = [], []

    def reconcile():
        if not passes or time.monotonic() - passes[-1] > 1.5:
            passes.append(time.monotonic())
            counts, _ = run_reconciler(redis, db, **RECON_ENV)
            requeued.append(counts["requeued"] + counts["rescheduled"] if counts else 0)

    wait_status(db, sub["id"], "delivered", n, 60, kick=reconcile)
    seqs = rec.seqs()
    assert set(seqs) == set(range(n)), "a job was never received"
    assert sum(requeued) > 0, "the reconciler requeued nothing: Redis lost no job?"
    dups = len(seqs) - n
    # at least once: a job may come again only if its batch was at the receiver (or answered)
    # when Redis died; every other job is received once
    assert dups <= 3 * 10, f"{dups} duplicates"
    assert max(len(b) for b in rec.bodies()) <= 10
    report(f"batching, redis-server SIGKILLed and wiped after {at_kill} receptions: "
           f"{len(passes)} reconciler passes requeued {sum(requeued)} jobs, {len(seqs)} "
           f"receptions of {n} jobs ({dups} duplicates)")


def test_paused_jobs_held_then_batched(api, db, receiver, start_worker):
    """Paused: the jobs are held like single jobs (nothing sent); after the resume they are
    batched. A recovered (sent again) job goes in a new batch."""
    rec = Batches()
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 5, "maxIntervalSeconds": 1})
    start_worker(name="worker-a", **WORKER_ENV)
    assert patch_subscription(api, sub, {"status": "paused"})["status"] == "paused"
    trigger_seq(api, event, 0, 5)
    wait_until(lambda: db.scalar("SELECT count(*) FROM jobs WHERE subscription_id = "
                                 f"{sql_quote(sub['id'])}") == "5", 10, "5 jobs")
    time.sleep(1.5)
    assert rec.reqs == [], "sent while paused"
    patch_subscription(api, sub, {"status": "active"})
    wait_status(db, sub["id"], "delivered", 5, 15)
    assert [len(b) for b in rec.bodies()] == [5]
    first = rec.reqs[0].headers.get("webhook-id")
    # sent again on request (decision 28): batched again, in a batch of its own
    job_id = db.scalar(f"SELECT id FROM jobs WHERE subscription_id = {sql_quote(sub['id'])} "
                       "ORDER BY id LIMIT 1")
    st, _, _ = api.post(f"/api/v0/jobs/{job_id}/retry")
    assert st in (200, 202), st
    wait_until(lambda: len(rec.reqs) == 2, 15, "the job sent again")
    wait_status(db, sub["id"], "delivered", 5, 15)
    assert len(rec.bodies()[1]) == 1 and rec.reqs[1].headers.get("webhook-id") != first
    log = job_log(api, job_id)["attemptLog"]
    assert [a["batchId"] for a in log] == [first, rec.reqs[1].headers.get("webhook-id")], log


def test_rate_limited_batches_take_one_slot_each(api, db, receiver, start_worker):
    rec = Batches()
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 3, "maxIntervalSeconds": 300},
                   rateLimit={"perSecond": 2})
    start_worker(name="worker-a", **WORKER_ENV)
    trigger_seq(api, event, 0, 12)
    wait_status(db, sub["id"], "delivered", 12, 20)
    assert [len(b) for b in rec.bodies()] == [3, 3, 3, 3]
    # four requests at 2 a second: the attempts started (the worker's times, at their slots)
    # 1.5 s apart from the first to the last (a slot per batch: 12 single deliveries would
    # have taken 5.5 s)
    starts = sorted(float(t) for (t,) in db.sql(
        "SELECT DISTINCT extract(epoch FROM a.started_at) FROM attempts a JOIN jobs j ON "
        f"j.id = a.job_id WHERE j.subscription_id = {sql_quote(sub['id'])}"))
    assert len(starts) == 4 and starts[-1] - starts[0] >= 1.3, starts


def test_a_failed_batch_counts_once_for_the_breaker(api, db, receiver, start_worker):
    """BREAKER_FAILURES 3, a batch of 5 always failing: the circuit opens after 3 batch
    attempts (3 consecutive failures), not after the first (5 job attempts); the stats count
    the jobs' failed attempts (15)."""
    rec = Batches(statuses=(500,))
    r = receiver(responder=rec, body=b"")
    event = unique_name("batch")
    sub = register(api, event, r.url(), batching={"maxSize": 5, "maxIntervalSeconds": 300},
                   retryPolicy={"schedule": [0.2] * 6})
    start_worker(name="worker-a", BREAKER_FAILURES="3", BREAKER_COOLDOWN="60", **WORKER_ENV)
    trigger_seq(api, event, 0, 5)
    q = f"SELECT failures, circuit_open_until IS NOT NULL FROM subscriptions WHERE id = " \
        f"{sql_quote(sub['id'])}"
    wait_until(lambda: db.sql(q)[0][1] == "t", 20, "the circuit open")
    time.sleep(1.0)  # nothing more is sent while it is open
    assert [tuple(x) for x in db.sql(q)] == [("3", "t")]
    assert len(rec.reqs) == 3, rec.reqs
    st, _, status = api.get(f"/api/v0/webhooks/{event}/{sub['id']}/status")
    assert st == 200 and status["health"] == "circuit_open", status
    assert status["lastHour"]["failedAttempts"] == 15, status


EVENT = "batching.validation"


@pytest.fixture(scope="module")
def subscribed(broker):
    return broker.api.register(EVENT, "http://127.0.0.1:9/hook")


INVALID = [
    "yes", 5, True, [], {},
    {"maxSize": 5},
    {"maxIntervalSeconds": 5},
    {"maxSize": 0, "maxIntervalSeconds": 5},
    {"maxSize": 1001, "maxIntervalSeconds": 5},
    {"maxSize": 2.5, "maxIntervalSeconds": 5},
    {"maxSize": "5", "maxIntervalSeconds": 5},
    {"maxSize": 5, "maxIntervalSeconds": 0},
    {"maxSize": 5, "maxIntervalSeconds": 301},
    {"maxSize": 5, "maxIntervalSeconds": None},
    {"maxSize": 5, "maxIntervalSeconds": 5, "extra": 1},
]


@pytest.mark.parametrize("value", INVALID)
def test_invalid_batching_refused(api, unchanged, value):
    err = assert_error(api.post("/api/v0/webhooks", {
        "eventName": EVENT, "webhookUrl": "http://127.0.0.1:9/other", "batching": value}),
        400, "invalid_field")
    assert "batching" in err["message"], err
    if isinstance(value, dict) and "extra" in value:
        assert '"extra"' in err["message"], err


@pytest.mark.parametrize("value", INVALID)
def test_invalid_batching_refused_by_patch(api, db, subscribed, value):
    sub = subscribed
    before = db.sql(f"SELECT batching, description, updated_at FROM subscriptions WHERE id = "
                    f"{sql_quote(sub['id'])}")
    err = assert_error(api.request("PATCH", f"/api/v0/webhooks/{EVENT}/{sub['id']}",
                                   {"description": "x", "batching": value}), 400, "invalid_field")
    assert "batching" in err["message"], err
    assert db.sql(f"SELECT batching, description, updated_at FROM subscriptions WHERE id = "
                  f"{sql_quote(sub['id'])}") == before


def test_batching_set_shown_and_reset(api, subscribed):
    sub = subscribed
    on = patch_subscription(api, sub, {"batching": {"maxIntervalSeconds": 2, "maxSize": 1000}})
    assert on["batching"] == {"maxSize": 1000, "maxIntervalSeconds": 2}
    st, _, got = api.get(f"/api/v0/webhooks/{EVENT}/{sub['id']}")
    assert st == 200 and got["batching"] == {"maxSize": 1000, "maxIntervalSeconds": 2}, got
    assert patch_subscription(api, sub, {"description": "kept"})["batching"] == on["batching"]
    assert patch_subscription(api, sub, {"batching": None})["batching"] is None


def test_cli_batch_option(broker, subscribed, need_binaries):
    """webhookctl subs create/update --batch N/Ss|none."""
    need_binaries("webhookctl")
    import subprocess

    import harness

    def ctl(*args):
        env = harness.base_env({"WEBHOOK_API_URL": f"http://127.0.0.1:{broker.port}",
                                "WEBHOOK_API_KEY": harness.API_KEY})
        out = subprocess.run([str(harness.binary("webhookctl")), "--json", *args], env=env,
                             capture_output=True, text=True, timeout=60)
        harness.assert_no_sanitizer_report(out.stderr, "webhookctl")
        return out

    out = ctl("subs", "create", "--event", EVENT, "--url", "http://127.0.0.1:9/cli",
              "--batch", "50/2s")
    assert out.returncode == 0, out.stderr
    sub = json.loads(out.stdout)
    assert sub["batching"] == {"maxSize": 50, "maxIntervalSeconds": 2}, sub
    out = ctl("subs", "update", EVENT, sub["id"], "--batch", "none")
    assert out.returncode == 0 and json.loads(out.stdout)["batching"] is None, out
    out = ctl("subs", "update", EVENT, sub["id"], "--batch", "lots")
    assert out.returncode != 0 and "--batch must be" in out.stderr, out
    out = ctl("subs", "update", EVENT, sub["id"], "--batch", "5000/2s")  # the broker's 400
    assert out.returncode != 0 and "batching.maxSize" in out.stderr, out
