"""Batching (issue 11 part 4, docs/decisions.md 40): `batching: {"maxSize", "maxIntervalSeconds"}`
sends a subscription's jobs together, one POST whose body is a JSON array of envelopes, signed
once with webhook-id = the batch id, when maxSize are waiting or the oldest has waited
maxIntervalSeconds. A failed batch is retried as a unit and each job's attempt log shows the
batch's attempts; dead as a unit. Two workers never put a job in two batches; a worker SIGKILLed
mid-batch and a Redis SIGKILLed and wiped mid-run lose nothing. Invalid settings: 400, nothing
written."""

import json
import shutil
import threading
import time

import pytest

from harness import (RETRY, assert_error, patch_subscription, run_reconciler, sql_quote,
                     sub_key, unique_name, verify_signature, wait_until)

WORKER_ENV = dict(WORKER_CONCURRENCY=16, DELIVERY_TIMEOUT=2, DELIVERY_CONNECT_TIMEOUT=1,
                  CLAIM_IDLE=3, LOG_LEVEL="info")
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
