"""The global delivery offline switch (PUT/GET /api/v0/admin/delivery): while offline triggers are
accepted and committed and no worker sends anything (workers already running, one started
while offline, retries falling due, a Redis that lost everything and was repaired by the
reconciler); going online delivers the backlog exactly once. Also the GET document, strict
validation of the PUT and the API key."""

import time
from collections import Counter

import pytest

import harness
from harness import (JOBS, LIVE, RETRY, TIME_RE, Broker, RedisServer, Worker, assert_error,
                     run_reconciler, unique_name, wait_drained, wait_until)

DELIVERY = "/api/v0/admin/delivery"
OFFLINE_WINDOW = 5.0  # the issue: "nothing sent for 5 s"


def switch_get(api):
    status, _, data = api.get(DELIVERY)
    assert status == 200, f"GET {DELIVERY}: {status} {data!r}"
    # GET also lists the subscriptions' health (test_status checks it); PUT answers without it
    subs = data.pop("subscriptions")
    assert set(subs) == {"total", "unhealthy", "listed"}, subs
    assert set(data) == {"status", "message", "since", "waitingJobs"}, data
    assert data["status"] in ("online", "offline"), data
    assert data["message"] is None or isinstance(data["message"], str), data
    assert TIME_RE.match(data["since"]), data
    assert isinstance(data["waitingJobs"], int) and data["waitingJobs"] >= 0, data
    return data


def switch_put(api, status, message=None):
    body = {"status": status}
    if message is not None:
        body["message"] = message
    code, _, data = api.request("PUT", DELIVERY, body)
    assert code == 200, f"PUT {DELIVERY} {body}: {code} {data!r}"
    assert data["status"] == status, data
    return data


@pytest.fixture(autouse=True)
def online(broker):
    """Every test starts and ends with delivery online (the switch lives in the module's
    database, shared by its tests)."""
    switch_put(broker.api, "online")
    yield
    switch_put(broker.api, "online")


def switch_logged(worker, state):
    """Whether the worker logged that it read the switch as state ("online"/"offline")."""
    return f"delivery is {state}" in worker.log_text()


def assert_nothing_sent(receivers, seconds, also=None):
    """The assertion is the wait itself: for `seconds`, no receiver gets a request (and
    also(), when given, stays true). Fails at the first request."""
    deadline = time.monotonic() + seconds
    while True:
        got = {r.name: r.count() for r in receivers if r.count()}
        assert not got, f"requests arrived while delivery was offline: {got}"
        if also is not None:
            also()
        if time.monotonic() >= deadline:
            return
        time.sleep(harness.POLL)


def assert_each_once(recv, event_ids):
    ids = Counter(r.headers.get("webhook-id") for r in recv.requests)
    missing = set(event_ids) - set(ids)
    assert not missing, f"{len(missing)} events never arrived, e.g. {sorted(missing)[:3]}"
    dups = {k: n for k, n in ids.items() if n > 1}
    assert not dups, f"delivered more than once: {dups}"
    assert set(ids) == set(event_ids), f"unexpected deliveries: {set(ids) - set(event_ids)}"


def test_offline_300_nothing_sent_then_online_delivers_all_once(api, db, rc, receiver,
                                                                 start_worker, report):
    """The issue's test: offline, trigger 300, nothing sent for 5 s, online, all 300 arrive.
    Two workers: one running since before the switch (its blocking read is outstanding when
    the triggers arrive), one started while offline."""
    recv = receiver(name="backlog")
    event = unique_name("offline")
    api.register(event, recv.url())
    w1 = start_worker()
    wait_until(lambda: switch_logged(w1, "online"), 10, "worker1 to read the switch")
    base = switch_get(api)
    assert base["status"] == "online" and base["waitingJobs"] == 0, base

    off = switch_put(api, "offline", "incident 42: receivers down")
    assert off["message"] == "incident 42: receivers down" and off["since"] >= base["since"], off
    assert switch_get(api) == off
    w2 = start_worker()
    wait_until(lambda: switch_logged(w2, "offline"), 10, "worker2 to read the switch as offline")

    event_ids = [api.trigger(event, {"n": i})["eventId"] for i in range(300)]
    assert len(set(event_ids)) == 300

    def all_committed_and_waiting():
        assert db.count("jobs", "status = 'queued' AND attempts = 0 AND event_id IN "
                        f"(SELECT id FROM events WHERE event_name = '{event}')") == 300
        assert db.count("attempts", "job_id IN (SELECT j.id FROM jobs j JOIN events e ON "
                        f"e.id = j.event_id WHERE e.event_name = '{event}')") == 0

    assert_nothing_sent([recv], OFFLINE_WINDOW, also=all_committed_and_waiting)
    waiting = switch_get(api)
    assert waiting["status"] == "offline" and waiting["since"] == off["since"], waiting
    assert waiting["waitingJobs"] == 300, waiting
    # Every job waits in Redis: unread in the stream, or parked in the retry set by worker1
    # (its read in flight at the switch); none pending with a worker.
    wait_until(lambda: rc.pending() == 0, 5, "no job pending with a worker")
    in_stream = rc.xlen(JOBS)
    parked = rc.call("ZCARD", RETRY)
    assert in_stream + parked == 300 and rc.call("SCARD", LIVE) == 300, (in_stream, parked)
    report(f"offline: 300 jobs waited ({in_stream} in the stream, {parked} parked by a worker "
           f"that had read them); nothing sent in {OFFLINE_WINDOW:.0f} s")

    on = switch_put(api, "online")
    assert on["since"] > off["since"] and on["message"] is None, on
    recv.wait_for(300, timeout=60)
    wait_until(lambda: db.count("jobs", "status = 'delivered' AND event_id IN "
                                f"(SELECT id FROM events WHERE event_name = '{event}')") == 300,
               30, "all 300 jobs delivered")
    wait_drained(rc, timeout=30)
    assert_each_once(recv, event_ids)
    assert switch_get(api)["waitingJobs"] == 0
    # Each worker noticed (the backlog may be gone before the second one's next poll).
    wait_until(lambda: all("delivery is online again" in w.log_text() for w in (w1, w2)), 5,
               "both workers to log that delivery is online again")


def test_get_document_and_since_moves_on_transitions_only(api):
    first = switch_get(api)
    assert first["status"] == "online"
    assert switch_put(api, "online") == switch_get(api)
    assert switch_get(api)["since"] == first["since"], "PUT online while online moved since"

    off1 = switch_put(api, "offline", "maintenance")
    assert off1["since"] > first["since"]
    assert off1 == switch_get(api), "the PUT answer is not the GET document"
    off2 = switch_put(api, "offline", "maintenance, still")
    assert off2["since"] == off1["since"] and off2["message"] == "maintenance, still"
    off3 = switch_put(api, "offline")
    assert off3["since"] == off1["since"] and off3["message"] is None
    explicit_null = api.request("PUT", DELIVERY, {"status": "offline", "message": None})
    assert explicit_null[0] == 200 and explicit_null[2]["message"] is None

    on = switch_put(api, "online", "all clear")
    assert on["since"] > off1["since"] and on["message"] == "all clear"
    again = switch_put(api, "online")
    assert again["since"] == on["since"] and again["message"] is None
    assert switch_get(api) == again


BAD = [
    ({}, "invalid_field", "status is missing"),
    ({"status": "Offline"}, "invalid_field", "status must be"),
    ({"status": "paused"}, "invalid_field", "status must be"),
    ({"status": " offline"}, "invalid_field", "status must be"),
    ({"status": ""}, "invalid_field", "status must be"),
    ({"status": True}, "invalid_field", "status must be"),
    ({"status": None}, "invalid_field", "status must be"),
    ({"status": 1}, "invalid_field", "status must be"),
    ({"status": ["offline"]}, "invalid_field", "status must be"),
    ({"status": "offline", "message": 5}, "invalid_field", "message must be a string"),
    ({"status": "offline", "message": {"a": 1}}, "invalid_field", "message must be a string"),
    ({"status": "offline", "message": "x" * 501}, "invalid_field", "501 bytes"),
    ({"status": "offline", "message": "\u00e9" * 250 + "x"}, "invalid_field", "501 bytes"),
    ({"status": "offline", "message": "two\nlines"}, "invalid_field", "control characters"),
    ({"status": "offline", "message": "tab\there"}, "invalid_field", "control characters"),
    ({"status": "offline", "reason": "x"}, "invalid_field", "unknown field \"reason\""),
    (b'{"status":"offline","status":"online"}', "invalid_json", "same field twice"),
    (b'["offline"]', "invalid_json", "JSON object"),
    (b'"offline"', "invalid_json", "JSON object"),
    (b'{"status":"offline"} x', "invalid_json", None),
    (b'{"status":"offline","message":"\xff"}', "invalid_json", None),
    (b'{"status":"offline","message":"\\u0000"}', "invalid_json", None),
    (b'{"status":"offline"', "invalid_json", None),
]


def test_invalid_puts_are_refused_and_change_nothing(api):
    before = switch_put(api, "online", "baseline")
    for body, code, words in BAD:
        err = assert_error(api.request("PUT", DELIVERY, body), 400, code)
        if words:
            assert words in err["message"], f"{body!r}: {err}"
        assert switch_get(api) == before, f"{body!r} changed the switch"
    # An empty body, none at all (so no Content-Type either), the wrong Content-Type.
    assert_error(api.request("PUT", DELIVERY, b""), 400, "invalid_json")
    assert_error(api.request("PUT", DELIVERY), 415, "unsupported_media_type")
    assert_error(api.request("PUT", DELIVERY, b'{"status":"offline"}',
                             headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")
    # Other methods.
    for method in ("POST", "DELETE", "PATCH"):
        resp = api.request(method, DELIVERY, {"status": "offline"})
        assert_error(resp, 405, "method_not_allowed")
        assert resp[1].get("allow") == "GET, PUT", resp[1]
    assert switch_get(api) == before
    # The limits themselves are accepted: 500 bytes of UTF-8, an empty message.
    longest = "\u00e9" * 250
    assert switch_put(api, "offline", longest)["message"] == longest
    assert switch_put(api, "offline", "")["message"] == ""


def test_api_key_required(api):
    before = switch_put(api, "online")
    for headers in ({"Authorization": None}, {"Authorization": "Bearer wrong-key-0123456789abc"}):
        resp = api.get(DELIVERY, headers=headers)
        assert_error(resp, 401, "unauthorized")
        assert resp[1].get("www-authenticate") == "Bearer"
        assert_error(api.request("PUT", DELIVERY, {"status": "offline"}, headers=headers), 401,
                     "unauthorized")
    assert switch_get(api) == before
    # The second configured key works like the first.
    status, _, data = api.get(DELIVERY, headers={"Authorization": f"Bearer {harness.API_KEY_2}"})
    data.pop("subscriptions", None)
    assert status == 200 and data == before


def test_retry_falling_due_while_offline_is_not_attempted(api, db, rc, receiver, start_worker):
    """A job whose retry falls due while offline stays in the retry set: no attempt, no failure
    recorded; once online it is sent as the same attempt 2."""
    recv = receiver(statuses=[500, 200], name="flaky")
    event = unique_name("due")
    api.register(event, recv.url())
    w = start_worker(RETRY_SCHEDULE="2")
    wait_until(lambda: switch_logged(w, "online"), 10, "the worker to read the switch")
    eid = api.trigger(event, {"x": 1})["eventId"]
    job = db.wait_jobs(eid, "retrying", count=1)[0]
    switch_put(api, "offline", "retry test")
    assert recv.count() == 1

    # The retry's due time passes (by more than a promoter tick and a poll) while offline.
    wait_until(lambda: db.scalar("SELECT now() > next_attempt_at + interval '1.5 s' FROM jobs "
                                 f"WHERE id = '{job['id']}'") == "t",
               10, "the retry to fall due while offline", 0.1)
    row = db.jobs(eid)[0]
    assert row["status"] == "retrying" and row["attempts"] == "1", row
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 500)]
    assert recv.count() == 1, recv.requests
    assert rc.call("ZCARD", RETRY) == 1 and rc.xlen(JOBS) == 0 and rc.pending() == 0

    switch_put(api, "online")
    db.wait_jobs(eid, "delivered", count=1)
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 500), (2, 200)]
    assert recv.count() == 2
    wait_drained(rc, [job["id"]])


def test_entries_of_a_dead_worker_are_not_claimed_while_offline(api, db, rc, receiver,
                                                               start_worker):
    """Entries pending with a consumer that went away (a "ghost" that read them and never
    acknowledged) stay with it while offline, long past CLAIM_IDLE; once online a live
    worker claims and delivers each once."""
    recv = receiver(name="claimed")
    event = unique_name("claim")
    api.register(event, recv.url())
    w = start_worker(DELIVERY_TIMEOUT="1", CLAIM_IDLE="2")
    wait_until(lambda: switch_logged(w, "online"), 10, "the worker to read the switch")
    switch_put(api, "offline", "claim test")
    wait_until(lambda: switch_logged(w, "offline"), 10, "the worker to see offline")
    event_ids = [api.trigger(event, {"n": i})["eventId"] for i in range(10)]
    # The worker's blocking read, sent while online, may take some and park them in the retry
    # set; the ghost takes the rest.
    wait_until(lambda: rc.xlen(JOBS) + rc.call("ZCARD", RETRY) == 10 and rc.pending() == 0, 10,
               "the 10 jobs waiting in Redis")
    read = rc.call("XREADGROUP", "GROUP", harness.GROUP, "ghost", "COUNT", 100, "STREAMS", JOBS,
                   ">")
    ghost = len(read[0][1])
    assert ghost >= 5, f"the ghost read only {ghost} of the 10 jobs"
    assert rc.pending_by_consumer() == {"ghost": ghost}

    # Idle past CLAIM_IDLE (2 s) plus the claim period (1 s), and then some: still the ghost's.
    def still_the_ghosts():
        assert rc.pending_by_consumer() == {"ghost": ghost}

    assert_nothing_sent([recv], 4.5, also=still_the_ghosts)
    idle_ms = min(int(e[2]) for e in rc.call("XPENDING", JOBS, harness.GROUP, "-", "+", 100))
    assert idle_ms > 3000, idle_ms

    switch_put(api, "online")
    recv.wait_for(10, timeout=20)
    wait_until(lambda: db.count("jobs", "status = 'delivered' AND event_id IN (SELECT id FROM "
                                f"events WHERE event_name = '{event}')") == 10,
               20, "the 10 jobs delivered")
    wait_drained(rc)
    assert_each_once(recv, event_ids)
    assert "claimed" in w.log_text()
    rc.call("XGROUP", "DELCONSUMER", JOBS, harness.GROUP, "ghost")


def test_redis_lost_while_offline_then_reconciled_still_waits(api, db, receiver, tmp_path):
    """Offline, triggers, Redis killed and restarted empty, a reconciler pass requeues the jobs:
    they wait in the stream; nothing is sent until online, then each arrives once. Its own
    Redis, broker and worker (the module's Redis stays untouched)."""
    redis = RedisServer(tmp_path / "redis", name="redis-lost").start()
    broker = Broker(tmp_path, redis, db, name="broker-lost")
    worker = Worker(tmp_path, redis, db, name="worker-lost")
    procs = [broker, worker]
    try:
        broker.start()
        own = broker.api
        recv = receiver(name="after-loss")
        event = unique_name("lost")
        own.register(event, recv.url())
        worker.start()
        wait_until(lambda: switch_logged(worker, "online"), 10, "the worker to read the switch")
        switch_put(own, "offline", "redis test")
        wait_until(lambda: switch_logged(worker, "offline"), 10, "the worker to see offline")
        event_ids = [own.trigger(event, {"n": i})["eventId"] for i in range(20)]
        with redis.client() as c:
            wait_until(lambda: c.call("SCARD", LIVE) == 20, 10, "the 20 jobs enqueued")

        redis.kill()
        redis.start()
        with redis.client() as c:
            # the 20 live jobs are gone with the data (the broker and worker may already have
            # reconnected and written keys of their own, so not DBSIZE)
            assert c.call("SCARD", LIVE) == 0
            wait_until(lambda: c.call("EXISTS", JOBS) == 1, 15,
                       "the worker to re-create the stream and group")
        counts, text = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
        assert counts and counts["requeued"] == 20, text
        with redis.client() as c:
            def waiting_in_stream():
                assert c.xlen(JOBS) == 20 and c.pending() == 0 and c.call("SCARD", LIVE) == 20

            waiting_in_stream()
            # Two of the worker's polls at least: it still sends nothing and reads nothing.
            assert_nothing_sent([recv], 2.5, also=waiting_in_stream)
        assert switch_get(own)["waitingJobs"] == 20

        switch_put(own, "online")
        recv.wait_for(20, timeout=30)
        wait_until(lambda: db.count("jobs", "status = 'delivered' AND event_id IN (SELECT id FROM "
                                    f"events WHERE event_name = '{event}')") == 20,
                   20, "the 20 jobs delivered")
        with redis.client() as c:
            wait_drained(c)
        assert_each_once(recv, event_ids)
    finally:
        if broker.alive():
            switch_put(broker.api, "online")
        harness.stop_all(procs)
        redis.stop()
