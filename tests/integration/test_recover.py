"""Sending finished jobs again (issue 10, decision 28): POST /api/v0/jobs/<id>/retry and the
bulk recovery of a subscription's dead jobs (POST/GET /api/v0/webhooks/<event>/<id>/recover),
against a real stack with a receiver that fails on command."""

import datetime
import json

from harness import OpenTransaction, assert_error, unique_name, wait_until

# One attempt and one retry 0.1 s later, then dead; the breaker never opens in these tests.
FAST_DEATH = {"RETRY_SCHEDULE": "0.1", "BREAKER_FAILURES": "1000000"}


class Switch:
    """A receiver's responder: 500 while failing is set, else 200."""

    def __init__(self):
        self.failing = True

    def __call__(self, index, req):
        return (500 if self.failing else 200), 0, None


def iso(t):
    return t.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# A UUIDv7 made at time t (a SQL expression): the API's time of a job is its id's millisecond.
UUID7_AT = ("(lpad(to_hex(floor(extract(epoch FROM {t}) * 1000)::bigint), 12, '0') || '7' || "
            "substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid")


def now_iso(delta=0.0):
    return iso(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta))


def dead_jobs(db, sub_id):
    return db.sql(f"SELECT id, attempts FROM jobs WHERE subscription_id = '{sub_id}' "
                  f"AND status = 'dead' ORDER BY created_at, id")


def kill_n(api, db, receiver, start_worker, n, **worker_env):
    """A subscription whose n jobs are dead (one event each, triggered in order)."""
    sw = Switch()
    recv = receiver(responder=sw, name="recover")
    event = unique_name("recover")
    sub = api.register(event, recv.url())
    since = now_iso(-1)
    worker = start_worker(**{**FAST_DEATH, **worker_env})
    events = [api.trigger(event, {"n": i})["eventId"] for i in range(n)]
    wait_until(lambda: len(dead_jobs(db, sub["id"])) == n, 60, f"{n} dead jobs")
    return sw, recv, event, sub, since, events, worker


def test_recover_resends_exactly_the_dead_jobs_in_order_each_once(api, db, receiver,
                                                                   start_worker, start_broker):
    sw, recv, event, sub, since, events, worker = kill_n(api, db, receiver, start_worker, 50,
                                                        WORKER_CONCURRENCY="1")
    worker.stop()
    assert recv.count() == 100  # two attempts each
    before = {jid: int(a) for jid, a in dead_jobs(db, sub["id"])}
    sw.failing = False
    path = f"/api/v0/webhooks/{event}/{sub['id']}/recover"
    # The jobs are locked by a transaction: the recovery's first chunk waits, so it is running
    # while a second request for the same window comes (through another broker: the first
    # one's database connection waits with the chunk).
    other = start_broker()
    lock = OpenTransaction(db, "\\o /dev/null\nSELECT id FROM jobs WHERE subscription_id = "
                               f"'{sub['id']}' AND status = 'dead' FOR UPDATE;\n\\o")
    try:
        until = now_iso()
        st, _, first = api.post(path, {"since": since, "until": until})
        assert st == 202, first
        assert first["count"] == 50 and first["status"] == "running" and first["created"], first
        st, _, again = other.api.post(path, {"since": since, "until": until})
        assert st == 200 and again["id"] == first["id"] and not again["created"], again
        st, _, prog = other.api.get(f"{path}/{first['id']}")
        assert st == 200 and prog["status"] == "running" and prog["done"] == 0, prog
        assert prog["total"] == 50, prog
    finally:
        lock.release()
    start_worker(**FAST_DEATH, WORKER_CONCURRENCY="1")
    recv.wait_for(150, timeout=60)

    def finished():
        st, _, p = api.get(f"{path}/{first['id']}")
        return p if st == 200 and p["status"] == "done" else None

    prog = wait_until(finished, 30, "the recovery to be done")
    assert prog["done"] == 50 and prog["total"] == 50 and prog["finishedAt"], prog
    wait_until(lambda: db.count("jobs", f"subscription_id = '{sub['id']}' AND status = "
                                        "'delivered'") == 50, 30, "50 delivered")
    resent = recv.requests[100:]
    assert len(resent) == 50, resent  # each once, nothing doubled
    # in creation order: the events' payloads n = 0..49
    assert [json.loads(r.body)["n"] for r in resent] == list(range(50))
    for jid, attempts in before.items():
        assert db.attempts(jid)[-1][:2] == (attempts + 1, 200)


def test_retry_of_a_dead_job_delivers_it_once_as_attempt_n_plus_1(api, db, receiver,
                                                                   start_worker):
    sw, recv, event, sub, since, events, _ = kill_n(api, db, receiver, start_worker, 1)
    (jid, attempts), = dead_jobs(db, sub["id"])
    assert int(attempts) == 2
    sw.failing = False
    st, _, job = api.post(f"/api/v0/jobs/{jid}/retry")
    assert st == 202, job
    assert job["id"] == jid and job["status"] == "queued" and job["nextAttempt"] == 3, job
    db.wait_jobs(events[0], "delivered")
    assert db.attempts(jid) == [(1, 500, db.attempts(jid)[0][2]), (2, 500, db.attempts(jid)[1][2]),
                                (3, 200, None)]
    assert recv.count() == 3
    # delivered: may be sent again on request (attempt 4)
    st, _, job = api.post(f"/api/v0/jobs/{jid}/retry")
    assert st == 202 and job["nextAttempt"] == 4, job
    recv.wait_for(4)
    wait_until(lambda: len(db.attempts(jid)) == 4, 15, "attempt 4 recorded")


def test_a_failing_manual_attempt_past_the_schedule_is_dead_at_once(api, db, receiver,
                                                                   start_worker):
    """The worker numbers the manual attempt n+1 and asks the retry schedule for it: a job
    that used up its schedule gets exactly one more attempt (decision 28)."""
    sw, recv, event, sub, since, events, _ = kill_n(api, db, receiver, start_worker, 1)
    (jid, _), = dead_jobs(db, sub["id"])
    st, _, job = api.post(f"/api/v0/jobs/{jid}/retry")
    assert st == 202, job
    recv.wait_for(3)
    wait_until(lambda: dead_jobs(db, sub["id"]) and len(db.attempts(jid)) == 3, 15,
               "dead again after attempt 3")
    assert recv.count() == 3
    assert [a for a, _, _ in db.attempts(jid)] == [1, 2, 3]


def test_retry_refuses_queued_unknown_and_malformed_jobs(api, db, receiver):
    recv = receiver(statuses=200)
    event = unique_name("recover.queued")
    api.register(event, recv.url())
    eid = api.trigger(event, {})["eventId"]  # no worker: it stays queued
    jid, = [j["id"] for j in db.jobs(eid)]
    assert_error(api.post(f"/api/v0/jobs/{jid}/retry"), 409, "conflict")
    assert db.jobs(eid)[0]["status"] == "queued"
    assert_error(api.post("/api/v0/jobs/0190aaaa-0000-7000-8000-000000000000/retry"), 404)
    err = assert_error(api.post("/api/v0/jobs/not-a-uuid/retry"), 400, "invalid_field")
    assert "job id" in err["message"]


def test_retry_and_recover_refuse_a_disabled_subscription(api, db, receiver, start_worker):
    sw, recv, event, sub, since, events, _ = kill_n(api, db, receiver, start_worker, 1)
    (jid, _), = dead_jobs(db, sub["id"])
    db.sql(f"UPDATE subscriptions SET disabled_at = now(), disabled_reason = 'test' "
           f"WHERE id = '{sub['id']}'")
    err = assert_error(api.post(f"/api/v0/jobs/{jid}/retry"), 409, "subscription_disabled")
    assert "disabled" in err["message"]
    assert_error(api.post(f"/api/v0/webhooks/{event}/{sub['id']}/recover", {"since": since}),
                 409, "subscription_disabled")
    assert dead_jobs(db, sub["id"]) and db.count("recoveries", f"subscription_id = "
                                                              f"'{sub['id']}'") == 0


def test_recover_bad_input_names_the_field(api, db, receiver):
    recv = receiver(statuses=200)
    event = unique_name("recover.bad")
    sub = api.register(event, recv.url())
    path = f"/api/v0/webhooks/{event}/{sub['id']}/recover"
    before = db.count("recoveries")
    cases = [
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-16T00:00:01Z"}, "14 days"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-02 00:00"}, "since"),
        ({"since": "2026-02-30T00:00:00Z"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": "yesterday"}, "until"),
        ({"since": 12}, "since"),
        ({}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "window": 1}, "window"),
    ]
    for body, field in cases:
        err = assert_error(api.post(path, body), 400, "invalid_field")
        assert field in err["message"], (body, err)
    assert_error(api.post(f"/api/v0/webhooks/{event}/nope/recover", {"since": now_iso()}), 400,
                 "invalid_field")
    assert_error(api.get(f"{path}/nope"), 400, "invalid_field")
    assert_error(api.get(f"{path}/0190aaaa-0000-7000-8000-000000000000"), 404)
    other = unique_name("recover.other")
    assert_error(api.post(f"/api/v0/webhooks/{other}/{sub['id']}/recover",
                          {"since": now_iso(-60)}), 404)
    assert db.count("recoveries") == before
    # 14 days exactly, with offsets: accepted (nothing dead in it)
    st, _, rec = api.post(path, {"since": "2026-01-01T01:00:00+01:00",
                                 "until": "2026-01-15T00:00:00.000Z"})
    assert st == 202 and rec["count"] == 0, rec
    wait_until(lambda: api.get(f"{path}/{rec['id']}")[2]["status"] == "done", 10,
               "an empty recovery to be done")


def test_a_broker_resumes_a_running_recovery_at_start_up(api, db, receiver, start_worker,
                                                         start_broker):
    """What a broker killed between two chunks leaves: a running recovery whose cursor is
    half-way. A broker started later re-sends the rest, after the cursor, in order, once."""
    recv = receiver(statuses=200, name="resume")
    event = unique_name("recover.resume")
    sub = api.register(event, recv.url())
    sid = sub["id"]
    db.sql(f"""
        INSERT INTO events (id, event_name, payload, created_at)
        SELECT wh_uuidv7(), '{event}', convert_to('{{"n":' || g || '}}', 'UTF8'),
               now() - interval '1 hour' + g * interval '1 second'
        FROM generate_series(1, 20) g;
        INSERT INTO jobs (id, event_id, subscription_id, url, partition, status, attempts,
                          last_status_code, created_at, updated_at)
        SELECT {UUID7_AT.format(t='e.created_at')}, e.id, '{sid}', '{recv.url()}', wh_partition('{sid}', 1), 'dead', 2,
               500, e.created_at, now() - interval '1 minute'
        FROM events e WHERE e.event_name = '{event}';
        INSERT INTO recoveries (id, subscription_id, since, until, total, done, cursor_at,
                                cursor_id)
        SELECT wh_uuidv7(), '{sid}', now() - interval '2 hours', now(), 20, 10, created_at, id
        FROM jobs WHERE subscription_id = '{sid}' ORDER BY id OFFSET 9 LIMIT 1;
    """)
    rid = db.scalar(f"SELECT id FROM recoveries WHERE subscription_id = '{sid}'")
    start_worker(WORKER_CONCURRENCY="1")
    start_broker()
    path = f"/api/v0/webhooks/{event}/{sid}/recover/{rid}"
    wait_until(lambda: api.get(path)[2].get("status") == "done", 30, "the recovery resumed")
    st, _, prog = api.get(path)
    assert prog["done"] == 20 and prog["total"] == 20, prog
    recv.wait_for(10)
    wait_until(lambda: db.count("jobs", f"subscription_id = '{sid}' AND status = 'delivered'")
               == 10, 30, "the second half delivered")
    assert [json.loads(r.body)["n"] for r in recv.requests] == list(range(11, 21))
    assert db.count("jobs", f"subscription_id = '{sid}' AND status = 'dead'") == 10
