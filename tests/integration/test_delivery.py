"""Delivery by the worker to real HTTP receivers: payload bytes, signatures, retries, dead jobs,
timeouts, cancellation and a graceful stop. Short retry schedules keep the module fast."""

import time

import pytest

from harness import (DEAD, LIVE, payload_key, signature_vectors, unique_name, verify_signature,
                     wait_drained, wait_until)

# Unusual but valid formatting: proves the body is sent as received, not re-serialized.
PAYLOAD = b'{ "b":1,  "a":[1,2,{"c":"\\u00e9"}] }\n'


def assert_signed(req, secret, event_id, body):
    assert req.headers.get("webhook-id") == event_id, req.headers
    ts = int(req.headers["webhook-timestamp"])
    assert abs(ts - time.time()) <= 300, f"webhook-timestamp {ts} is not close to now"
    sig = req.headers.get("webhook-signature")
    assert verify_signature(secret, event_id, ts, body, sig), \
        f"signature {sig!r} does not verify with the subscription's secret"


def test_signature_verifier_matches_vectors():
    """The verifier the tests use is right (Standard Webhooks reference vectors)."""
    vectors = signature_vectors()
    if vectors is None:
        pytest.skip("tests/testdata/standard-webhooks.json absent")
    assert vectors
    for v in vectors:
        body = v["body"].encode()
        assert verify_signature(v["secret"], v["id"], v["timestamp"], body, v["signature"])
        assert not verify_signature(v["secret"], v["id"], v["timestamp"] + 1, body, v["signature"])


def test_fan_out_to_three_receivers(api, db, rc, receiver, start_worker):
    event = unique_name("fan")
    recvs = [receiver(name=f"fan{i}") for i in range(3)]
    subs = [api.register(event, r.url(f"/hook/{i}?q=1"), {"X-Sub": str(i), "X-Team": "books"})
            for i, r in enumerate(recvs)]
    start_worker()
    data = api.trigger(event, PAYLOAD)
    assert data["jobs"] == 3
    eid = data["eventId"]

    jobs = db.wait_jobs(eid, "delivered", count=3)
    for i, (r, sub) in enumerate(zip(recvs, subs)):
        reqs = r.requests
        assert len(reqs) == 1, f"receiver {i} got {reqs}"
        q = reqs[0]
        assert q.method == "POST" and q.path == f"/hook/{i}?q=1"
        assert q.body == PAYLOAD, f"body was altered: {q.body!r}"
        assert q.headers.get("content-type") == "application/json"
        assert (q.headers.get("user-agent") or "").startswith("webhook-broker/"), q.headers
        assert q.headers.get("x-sub") == str(i) and q.headers.get("x-team") == "books"
        assert_signed(q, sub["secret"], eid, PAYLOAD)
        other = subs[(i + 1) % 3]["secret"]
        assert not verify_signature(other, eid, int(q.headers["webhook-timestamp"]), PAYLOAD,
                                    q.headers["webhook-signature"]), "signed with another secret"

    for j in jobs:
        assert j["attempts"] == "1" and j["last_status_code"] == "200", j
        assert j["delivered_at"] is not None, j
        assert [a[:2] for a in db.attempts(j["id"])] == [(1, 200)]
    ev = api.event(eid)
    assert len(ev["jobs"]) == 3
    for j in ev["jobs"]:
        assert j["status"] == "delivered" and j["attempts"] == 1, j
        assert j["lastStatusCode"] == 200 and j["deliveredAt"] is not None, j

    wait_drained(rc, [j["id"] for j in jobs])
    assert rc.smembers(LIVE) == set()


def test_retries_until_success(api, db, rc, receiver, start_worker, report):
    r = receiver([500, 500, 200])
    event = unique_name("retry")
    sub = api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="0.3,0.3,0.3")
    body = b'{"try": true}'
    eid = api.trigger(event, body)["eventId"]

    [job] = db.wait_jobs(eid, "delivered", count=1)
    assert job["attempts"] == "3" and job["last_status_code"] == "200", job
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 500), (2, 500), (3, 200)]
    reqs = r.requests
    assert len(reqs) == 3, reqs
    for q in reqs:
        assert q.body == body
        assert_signed(q, sub["secret"], eid, body)  # same webhook-id on every retry
    report(f"3 attempts to one receiver used {len({q.client for q in reqs})} TCP connection(s)")
    [j] = api.event(eid)["jobs"]
    assert (j["status"], j["attempts"], j["lastStatusCode"]) == ("delivered", 3, 200), j
    wait_drained(rc, [job["id"]])


def test_payload_read_from_postgres_when_redis_lost_it(api, db, rc, receiver, start_worker):
    """The worker falls back to PostgreSQL when the payload key is gone (TTL or a Redis
    loss): still the exact bytes."""
    r = receiver(200)
    event = unique_name("nopayload")
    sub = api.register(event, r.url())
    eid = api.trigger(event, PAYLOAD)["eventId"]  # no worker yet: the job waits on the stream
    assert rc.call("DEL", payload_key(eid)) == 1
    start_worker()
    [job] = db.wait_jobs(eid, "delivered", count=1)
    [q] = r.requests
    assert q.body == PAYLOAD
    assert_signed(q, sub["secret"], eid, PAYLOAD)
    wait_drained(rc, [job["id"]])


def test_redirect_is_a_failure(api, db, rc, receiver, start_worker):
    target = receiver(200, name="redirect-target")
    r = receiver([302, 200], headers=[{"Location": target.url("/landing")}, None])
    event = unique_name("redirect")
    api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="0.3,0.3")
    eid = api.trigger(event, b"{}")["eventId"]

    [job] = db.wait_jobs(eid, "delivered", count=1)
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 302), (2, 200)]
    assert r.count() == 2
    assert target.count() == 0, "the redirect was followed"
    wait_drained(rc, [job["id"]])


def test_retry_after_is_honoured(api, db, rc, receiver, start_worker, report):
    """The worker honours Retry-After within bounds (common/backoff.h: the next delay is
    max(scheduled, min(Retry-After, 2 x scheduled)), scheduled with +-20% jitter). With a 1.5 s
    step and Retry-After: 5 the retry waits 2.4..3.6 s; ignoring the header would give
    1.2..1.8 s. Only the lower bound is asserted."""
    r = receiver([503, 200], headers=[{"Retry-After": "5"}, None])
    event = unique_name("retry.after")
    api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="1.5")
    eid = api.trigger(event, b"{}")["eventId"]

    [job] = db.wait_jobs(eid, "delivered", count=1)
    reqs = r.requests
    assert len(reqs) == 2, reqs
    gap = reqs[1].mono - reqs[0].mono
    report(f"Retry-After: 5 with a 1.5 s step -> second attempt {gap:.2f}s after the first")
    assert gap >= 2.2, f"Retry-After: 5 ignored: second attempt after {gap:.2f}s"
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 503), (2, 200)]
    wait_drained(rc, [job["id"]])


def test_dead_after_last_attempt(api, db, rc, receiver, start_worker):
    r = receiver(500)
    event = unique_name("dead")
    api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="0.2,0.2")
    eid = api.trigger(event, b'{"doomed": 1}')["eventId"]

    [job] = db.wait_jobs(eid, "dead", count=1)
    assert job["attempts"] == "3" and job["last_status_code"] == "500", job
    assert job["delivered_at"] is None
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 500), (2, 500), (3, 500)]
    wait_until(lambda: any(e.get("j") == job["id"] for e in rc.stream_jobs(DEAD)), 10,
               f"job {job['id']} in {DEAD}")
    wait_drained(rc, [job["id"]])
    [j] = api.event(eid)["jobs"]
    assert (j["status"], j["attempts"], j["lastStatusCode"]) == ("dead", 3, 500), j
    time.sleep(1.0)  # proves an absence (a dead job is not tried again): no event to wait for
    assert r.count() == 3, r.requests


def test_timeout_then_success(api, db, rc, receiver, start_worker):
    r = receiver(200, delay=[3, 0])
    event = unique_name("timeout")
    api.register(event, r.url())
    start_worker(DELIVERY_TIMEOUT=1, DELIVERY_CONNECT_TIMEOUT=1, CLAIM_IDLE=2,
                 RETRY_SCHEDULE="0.3,0.3,0.3")
    eid = api.trigger(event, b"{}")["eventId"]

    [job] = db.wait_jobs(eid, "delivered", count=1)
    attempts = db.attempts(job["id"])
    assert [a[0] for a in attempts] == [1, 2], attempts
    first = attempts[0]
    assert first[1] in (None, 0), f"a timed-out attempt has no HTTP status: {first}"
    assert first[2] and ("timeout" in first[2].lower() or "timed out" in first[2].lower()), \
        f"attempt 1 error does not mention the timeout: {first[2]!r}"
    assert attempts[1][1] == 200
    assert r.count() == 2, r.requests
    wait_drained(rc, [job["id"]])


def test_delete_cancels_retrying_job(api, db, rc, receiver, start_worker):
    r = receiver(500)
    event = unique_name("cancel")
    sub = api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="2,2")
    eid = api.trigger(event, b"{}")["eventId"]

    r.wait_for(1)
    db.wait_jobs(eid, "retrying", count=1, timeout=10)
    st, _, gone = api.delete(f"/api/v0/webhooks/{event}/{sub['id']}")
    assert st == 200 and gone["status"] == "deleted", gone
    seen = r.count()
    assert seen == 1

    [job] = db.wait_jobs(eid, "cancelled", count=1, timeout=15)
    wait_drained(rc, [job["id"]])
    # Proves an absence (no attempt after the cancel, past when the next would have been due):
    # there is no event to wait for.
    time.sleep(2.5)
    assert r.count() == seen, f"deliveries after the delete: {r.requests[seen:]}"
    assert db.jobs(eid)[0]["status"] == "cancelled", "a terminal state changed"
    assert len(db.attempts(job["id"])) == 1


def test_worker_drains_on_sigterm(api, db, rc, receiver, start_worker):
    r = receiver(200, delay=1.0)
    event = unique_name("drain")
    api.register(event, r.url())
    w = start_worker()
    eid = api.trigger(event, b"{}")["eventId"]
    r.wait_for(1)
    assert w.stop() == 0  # SIGTERM while the delivery is in flight: finish it, exit 0
    [job] = db.wait_jobs(eid, "delivered", count=1, timeout=5)
    assert r.count() == 1
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 200)]
    wait_drained(rc, [job["id"]], timeout=2)  # acked before exiting, nothing left pending


def test_drain_timeout_frees_in_flight_deliveries(api, db, rc, receiver, start_worker):
    """A delivery still running when DRAIN_TIMEOUT ends is abandoned: the worker frees the
    transfer and its job (nothing for LeakSanitizer to report under SAN=1), exits 0, and the
    job stays pending in Redis, unfinished in PostgreSQL, for another worker to claim."""
    r = receiver(200, delay=5.0)
    event = unique_name("draintimeout")
    api.register(event, r.url())
    w = start_worker(DRAIN_TIMEOUT="0.3")
    eid = api.trigger(event, b"{}")["eventId"]
    r.wait_for(1)
    assert w.stop() == 0  # checks the log for sanitizer reports too
    log = w.log_text()
    assert "drain timeout: 1 jobs left pending" in log, w.log_tail()
    assert "stopped 1 deliveries still in flight" in log, w.log_tail()
    [job] = db.jobs(eid)
    assert job["status"] == "queued" and db.attempts(job["id"]) == []
    assert rc.pending() == 1, rc.pending()


def test_attempt_log_keeps_capped_json_escaped_excerpts(api, db, receiver, start_worker):
    """Each attempt is in the event's attemptLog; a hostile response body is stored as at most
    its first 1024 bytes, with NUL and invalid UTF-8 replaced by U+FFFD, and comes back as
    valid JSON."""
    hostile = (b'"}],"injected":true,\\\x00\x01\x1f\r\n<script>\xff\xfe\xc3' + b"\xe2\x80\xa8"
               + "é€😀".encode() + b"A" * 3000)
    r = receiver([500, 200], body=[hostile, b"thanks"])
    event = unique_name("excerpt")
    api.register(event, r.url())
    start_worker(RETRY_SCHEDULE="0.2")
    eid = api.trigger(event, b'{"n": 1}')["eventId"]
    db.wait_jobs(eid, "delivered", count=1)

    status, _, doc = api.request("GET", f"/api/v0/events/{eid}")
    assert status == 200
    assert isinstance(doc, dict), doc  # parsed strictly: raw control characters would fail
    assert "injected" not in doc
    [job] = doc["jobs"]
    assert job["attempts"] == 2 and len(job["attemptLog"]) == 2, job
    first, second = job["attemptLog"]
    assert (first["attempt"], first["statusCode"], first["error"]) == (1, 500, "HTTP 500")
    assert (second["attempt"], second["statusCode"], second["error"]) == (2, 200, None)
    assert second["responseExcerpt"] == "thanks"
    assert isinstance(first["durationMs"], int) and first["startedAt"] <= second["startedAt"]
    expected = hostile[:1024].replace(b"\x00", b"\xff").decode("utf-8", "replace")
    assert first["responseExcerpt"] == expected
    assert len(first["responseExcerpt"]) <= 1024
    assert "\x00" not in first["responseExcerpt"]
