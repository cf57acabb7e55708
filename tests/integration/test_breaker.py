"""Subscription health (docs/decisions.md 26): the circuit breaker, auto-disable (410 Gone,
DISABLE_AFTER_HOURS), and the operational events those transitions create (broker.endpoint.*,
broker.attempt.exhausted), delivered over HTTP and as e-mail to a real SMTP server.

The breaker's parking (no attempt while the circuit is open, one probe after) is the worker's
gate (decision 25); test_breaker_bounds_attempts_then_recovers needs it."""

import threading
import time

import pytest

from harness import SmtpSink, operational_event, unique_name, wait_until

# Many short retries (32, the most RETRY_SCHEDULE takes): without a breaker, a failing
# subscription gets an attempt per job every 2 seconds for a minute.
MANY_RETRIES = ",".join(["2"] * 32)


def fnv_partition(sub_id, n):
    """common/ids.c id_partition, in Python."""
    h = 2166136261
    for c in sub_id.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h % n


def events_named(db, name, sub_id=None):
    """Payloads (dicts) of the events called name, optionally about sub_id, oldest first."""
    import json
    rows = db.sql(f"SELECT convert_from(payload, 'UTF8') FROM events WHERE event_name = "
                  f"'{name}' ORDER BY id")
    out = [json.loads(r[0]) for r in rows]
    return [p for p in out if sub_id is None or p["subscriptionId"] == sub_id]


def health(db, sub_id):
    row = db.sql("SELECT failures, failing_since IS NOT NULL, circuit_open_until IS NOT NULL, "
                 "circuit_cooldown_s, disabled_at IS NOT NULL, coalesce(disabled_reason, '') "
                 f"FROM subscriptions WHERE id = '{sub_id}'")[0]
    return {"failures": int(row[0]), "failing": row[1] == "t", "open": row[2] == "t",
            "cooldown": int(row[3]) if row[3] else None, "disabled": row[4] == "t",
            "reason": row[5]}


def test_sql_ids_and_partitions_match_c(db, broker):
    """Migration 7's wh_partition is id_partition, and wh_uuidv7 makes version 7 ids."""
    ids = [r[0] for r in db.sql("SELECT wh_uuidv7()::text FROM generate_series(1, 20)")]
    assert len(set(ids)) == 20
    for i in ids:
        assert i[14] == "7" and i[19] in "89ab", i
    ms = int(ids[0].replace("-", "")[:12], 16)
    assert abs(ms / 1000 - time.time()) < 60, "the id's time is not now"
    for n in (1, 3, 7, 16, 256):
        got = db.sql("SELECT id::text, wh_partition(id, " + str(n) + ") FROM (SELECT wh_uuidv7() "
                     "AS id FROM generate_series(1, 30)) t")
        for i, p in got:
            assert int(p) == fnv_partition(i, n), (i, n, p)


def test_gone_disables_and_alerts_http_and_mail(api, db, receiver, start_worker):
    """410: the subscription is disabled at once, its job is dead (no retry), and a
    broker.endpoint.disabled event reaches an HTTP subscriber and, as an e-mail, a mailto:
    subscriber."""
    smtp = SmtpSink()
    try:
        gone = receiver(statuses=410, name="gone")
        watcher = receiver(name="watcher")
        event = unique_name("gone")
        sub = api.register(event, gone.url())
        api.register("broker.endpoint.disabled", watcher.url())
        mail_sub = api.register("broker.endpoint.disabled", "mailto:ops@example.com")
        start_worker(SMTP_URL=smtp.url, SMTP_FROM="alerts@broker.example", RETRY_SCHEDULE="1,1,1")
        eid = api.trigger(event, {"n": 1})["eventId"]

        db.wait_jobs(eid, "dead", count=1)
        h = health(db, sub["id"])
        assert h["disabled"] and h["reason"] == "the endpoint answered 410 Gone", h
        assert gone.count() == 1, "a 410 is not retried"
        job = db.jobs(eid)[0]
        assert db.attempts(job["id"])[0][1] == 410

        reqs = watcher.wait_for(1)
        p = operational_event(reqs[0])
        assert p["type"] == "broker.endpoint.disabled"
        assert p["subscriptionId"] == sub["id"] and p["eventName"] == event
        assert p["url"] == gone.url() and p["reason"] == "the endpoint answered 410 Gone"
        assert p["time"].endswith("Z") and "T" in p["time"]
        ev_id = reqs[0].headers.get("webhook-id")
        assert db.scalar(f"SELECT event_name FROM events WHERE id = '{ev_id}'") == \
            "broker.endpoint.disabled"

        mail_from, rcpts, msg = smtp.wait_for(1)[0]
        assert mail_from == "alerts@broker.example" and rcpts == ["ops@example.com"]
        assert "broker.endpoint.disabled" in msg["Subject"]
        assert msg["To"] == "<ops@example.com>" and msg["Date"] and msg["Message-ID"]
        body = msg.get_payload(decode=True).decode()
        assert f"subscriptionId: {sub['id']}" in body and "410 Gone" in body, body
        mail_job = wait_until(lambda: db.sql(
            f"SELECT status FROM jobs WHERE subscription_id = '{mail_sub['id']}' "
            "AND status = 'delivered'"), 10, "the mail job delivered")
        assert mail_job
        assert events_named(db, "broker.attempt.exhausted", sub["id"]) == [], \
            "a 410 reports the disabling, not an exhaustion"
    finally:
        smtp.close()


def test_exhausted_job_is_reported(api, db, receiver, start_worker):
    failing = receiver(statuses=500, name="failing")
    watcher = receiver(name="watcher")
    event = unique_name("exh")
    sub = api.register(event, failing.url())
    api.register("broker.attempt.exhausted", watcher.url())
    start_worker(RETRY_SCHEDULE="0.2,0.2")
    eid = api.trigger(event, {"n": 1})["eventId"]
    job = db.wait_jobs(eid, "dead", count=1)[0]

    def mine():
        return [p for p in map(operational_event, watcher.requests)
                if p["subscriptionId"] == sub["id"]]

    got = wait_until(mine, 15, "broker.attempt.exhausted at the watcher")
    assert len(got) == 1
    p = got[0]
    assert p["type"] == "broker.attempt.exhausted" and p["jobId"] == job["id"]
    assert p["reason"].startswith("attempt 3 failed: HTTP 500"), p
    assert health(db, sub["id"])["failures"] == 3


def test_no_operational_event_about_operational_subscriptions(api, db, receiver, start_worker):
    """A subscriber of a broker.* event whose own deliveries die causes no further event."""
    failing = receiver(statuses=500, name="failing")
    broken_watcher = receiver(statuses=500, name="broken-watcher")
    event = unique_name("loop")
    api.register(event, failing.url())
    watcher = api.register("broker.attempt.exhausted", broken_watcher.url())
    start_worker(RETRY_SCHEDULE="0.2,0.2")
    before = len(events_named(db, "broker.attempt.exhausted"))
    eid = api.trigger(event, {"n": 1})["eventId"]
    db.wait_jobs(eid, "dead", count=1)
    wait_until(lambda: db.sql(f"SELECT 1 FROM jobs WHERE subscription_id = '{watcher['id']}' "
                              "AND status = 'dead'"), 15, "the watcher's own job dead")
    time.sleep(1.0)
    assert len(events_named(db, "broker.attempt.exhausted")) == before + 1
    assert events_named(db, "broker.attempt.exhausted", watcher["id"]) == []


def test_disable_after_hours(api, db, receiver, start_worker):
    """DISABLE_AFTER_HOURS tiny (0.0005 h = 1.8 s): a failure after that long without a success
    disables the subscription with the reason."""
    failing = receiver(statuses=500, name="failing")
    watcher = receiver(name="watcher")
    event = unique_name("stale")
    sub = api.register(event, failing.url())
    api.register("broker.endpoint.disabled", watcher.url())
    start_worker(RETRY_SCHEDULE=MANY_RETRIES, DISABLE_AFTER_HOURS="0.0005",
                 BREAKER_FAILURES="1000")
    api.trigger(event, {"n": 1})
    wait_until(lambda: health(db, sub["id"])["disabled"], 20, "the subscription disabled")
    h = health(db, sub["id"])
    assert h["reason"] == "no successful delivery for 0.0005 hours", h
    assert h["failures"] >= 2
    got = wait_until(lambda: [p for p in map(operational_event, watcher.requests)
                              if p["subscriptionId"] == sub["id"]], 15, "the disabled event")
    assert got[0]["reason"] == "no successful delivery for 0.0005 hours"


def test_healthy_success_writes_no_subscription_row(api, db, receiver, start_worker):
    ok = receiver(name="ok")
    event = unique_name("healthy")
    sub = api.register(event, ok.url())
    start_worker()
    xmin = db.scalar(f"SELECT xmin::text FROM subscriptions WHERE id = '{sub['id']}'")
    eids = [api.trigger(event, {"n": i})["eventId"] for i in range(20)]
    for eid in eids:
        db.wait_jobs(eid, "delivered", count=1)
    assert db.scalar(f"SELECT xmin::text FROM subscriptions WHERE id = '{sub['id']}'") == xmin
    assert health(db, sub["id"]) == {"failures": 0, "failing": False, "open": False,
                                     "cooldown": None, "disabled": False, "reason": ""}


def test_success_of_a_subscription_failing_elsewhere_resets_it(api, db, receiver, start_worker):
    """Successes go through the short outcome statement while their subscriptions are healthy
    (decision 50); a subscription whose failures another worker has just committed makes the
    batch go through the full one, which resets it, exactly as before. The failures are set by
    hand here (another worker's commit, as the statement sees it); the healthy subscription's
    row is never written; both get their attempt rows and their rollup counts."""
    a_recv, b_recv = receiver(name="healthy-a"), receiver(name="failing-b")
    event = unique_name("mixed")
    a = api.register(event, a_recv.url())
    b = api.register(event, b_recv.url())
    db.sql(f"UPDATE subscriptions SET failures = 3, failing_since = now() - interval '1 minute' "
           f"WHERE id = '{b['id']}'")
    xmin = db.scalar(f"SELECT xmin::text FROM subscriptions WHERE id = '{a['id']}'")
    start_worker()
    eids = [api.trigger(event, {"n": i})["eventId"] for i in range(5)]
    for eid in eids:
        db.wait_jobs(eid, "delivered", count=2)
    assert health(db, b["id"])["failures"] == 0 and not health(db, b["id"])["failing"]
    assert db.scalar(f"SELECT xmin::text FROM subscriptions WHERE id = '{a['id']}'") == xmin
    for sub in (a, b):
        assert db.scalar(f"SELECT count(*) FROM attempts t JOIN jobs j ON j.id = t.job_id "
                         f"WHERE j.subscription_id = '{sub['id']}' AND t.status_code = 200") == "5"
        assert db.scalar(f"SELECT sum(delivered) FROM subscription_stats "
                         f"WHERE subscription_id = '{sub['id']}'") == "5"
    assert db.scalar("SELECT sum(delivered) FROM stats_hourly WHERE event_name = "
                     f"'{event}'") == "10"
    assert len(a_recv.requests) == 5 and len(b_recv.requests) == 5


def test_success_resets_failures(api, db, receiver, start_worker):
    flaky = receiver(statuses=[500, 500, 200], name="flaky")
    event = unique_name("flaky")
    sub = api.register(event, flaky.url())
    start_worker(RETRY_SCHEDULE="0.2,0.2,0.2")
    eid = api.trigger(event, {"n": 1})["eventId"]
    db.wait_jobs(eid, "delivered", count=1)
    assert health(db, sub["id"])["failures"] == 0
    assert not health(db, sub["id"])["failing"]


def test_breaker_bounds_attempts_then_recovers(api, db, receiver, start_worker, report):
    """100 % failures for 60 s with the default BREAKER_FAILURES 10 and BREAKER_COOLDOWN 30:
    the attempts stay within the breaker's schedule (10, what was in flight, the probes), not
    one every 2 s per job. Then the receiver recovers: after the next probe the backlog is
    delivered, the circuit columns are cleared, and circuit_opened and recovered events reach a
    subscriber of those names. Needs the gate (decision 25)."""
    healthy = threading.Event()

    def respond(index, req):
        return (200 if healthy.is_set() else 500), 0, None

    target = receiver(responder=respond, name="target")
    watcher = receiver(name="watcher")
    event = unique_name("breaker")
    sub = api.register(event, target.url())
    api.register("broker.endpoint.circuit_opened", watcher.url())
    api.register("broker.endpoint.recovered", watcher.url())
    start_worker(RETRY_SCHEDULE=MANY_RETRIES)
    eids = [api.trigger(event, {"n": i})["eventId"] for i in range(5)]

    wait_until(lambda: health(db, sub["id"])["open"], 30, "the circuit opened")
    h = health(db, sub["id"])
    assert h["cooldown"] == 30 and h["failures"] >= 10, h
    time.sleep(60)
    attempts = target.count()
    report(f"breaker: {attempts} attempts in ~60 s of failures (5 jobs, 2 s retries)")
    # 10 to open, at most the 5 jobs in flight when it opened, one probe per cooldown (30, 60)
    assert attempts <= 10 + 5 + 3, f"{attempts} attempts: the breaker did not hold them back"

    opened = [p for p in map(operational_event, watcher.requests)
              if p["type"] == "broker.endpoint.circuit_opened" and p["subscriptionId"] == sub["id"]]
    assert len(opened) == 1, opened
    assert health(db, sub["id"])["cooldown"] == 60, "the failed probe did not double the cooldown"

    # The probe at ~30 s failed and re-opened the circuit for 60 s: the next one, at ~90 s,
    # finds the receiver healthy, and the jobs parked until then follow.
    healthy.set()
    for eid in eids:
        db.wait_jobs(eid, "delivered", count=1, timeout=60)
    h = health(db, sub["id"])
    assert h == {"failures": 0, "failing": False, "open": False, "cooldown": None,
                 "disabled": False, "reason": ""}, h
    recovered = wait_until(lambda: [p for p in map(operational_event, watcher.requests)
                                    if p["type"] == "broker.endpoint.recovered"
                                    and p["subscriptionId"] == sub["id"]], 15,
                           "the recovered event")
    assert len(recovered) == 1 and recovered[0]["url"] == target.url()
