"""GET /api/v0/webhooks/<event>/<id>/status (issue 10, docs/decisions.md 29): health derived from
the subscription row, counts from the rollups, latency, jobs waiting, and recent activity (the
attempts and the lifecycle log) newest first; the subscription list of GET
/api/v0/admin/delivery, unhealthy first. Real stack: broker, worker, receivers that fail on
command."""

import threading
import uuid

from harness import assert_error, patch_subscription, unique_name, wait_until

HOOKS = "/api/v0/webhooks"


def status(api, sub):
    st, _, data = api.get(f"{HOOKS}/{sub['eventName']}/{sub['id']}/status")
    assert st == 200, (st, data)
    return data


def kinds(data):
    """The lifecycle kinds of recentActivity, oldest first (attempts left out)."""
    return [e["kind"] for e in reversed(data["recentActivity"]) if e["kind"] != "attempt"]


def test_failing_circuit_open_recovered(api, db, receiver, start_worker):
    """BREAKER_FAILURES 3: failing, then circuit_open after the third failure, then, the
    receiver fixed, recovered by the probe. Counts match what the receiver saw; the activity
    lists created, circuit_opened, circuit_closed in that order."""
    healthy = threading.Event()
    answered = {"ok": 0, "fail": 0}
    lock = threading.Lock()

    def respond(index, req):
        with lock:
            if healthy.is_set():
                answered["ok"] += 1
                return 200, 0, None
            answered["fail"] += 1
            return 500, 0, None

    target = receiver(responder=respond, name="target")
    event = unique_name("status")
    sub = api.register(event, target.url())
    s = status(api, sub)
    assert s["health"] == "healthy" and s["consecutiveFailures"] == 0, s
    assert s["lastSuccessAt"] is None and s["lastFailureAt"] is None
    assert s["lastHour"] == {"delivered": 0, "failedAttempts": 0, "dead": 0}
    assert kinds(s) == ["created"]

    start_worker(RETRY_SCHEDULE="1,1,1,1,1,1,1,1", BREAKER_FAILURES="3",
                 BREAKER_COOLDOWN="2", BREAKER_COOLDOWN_MAX="2")
    eid = api.trigger(event, {"n": 1})["eventId"]
    s = wait_until(lambda: (lambda d: d if d["health"] == "failing" else None)(status(api, sub)),
                   15, "health failing")
    assert 1 <= s["consecutiveFailures"] < 3 and s["lastFailureAt"] and s["failingSince"]

    s = wait_until(lambda: (lambda d: d if d["health"] == "circuit_open" else None)(
        status(api, sub)), 15, "health circuit_open")
    assert s["consecutiveFailures"] >= 3 and s["circuitOpenUntil"], s
    assert "circuit_opened" in kinds(s)
    attempts = [e for e in s["recentActivity"] if e["kind"] == "attempt"]
    assert attempts and all(e["statusCode"] == 500 for e in attempts), attempts
    assert attempts[0]["jobId"] == db.jobs(eid)[0]["id"]

    healthy.set()
    db.wait_jobs(eid, "delivered", count=1, timeout=30)
    s = wait_until(lambda: (lambda d: d if d["health"] == "healthy" else None)(status(api, sub)),
                   15, "health healthy again")
    with lock:
        ok, fail = answered["ok"], answered["fail"]
    assert ok == 1 and fail >= 3
    assert s["consecutiveFailures"] == 0 and s["circuitOpenUntil"] is None
    for window in ("lastHour", "last24Hours"):
        assert s[window] == {"delivered": ok, "failedAttempts": fail, "dead": 0}, (window, s)
    assert s["lastSuccessAt"] >= s["lastFailureAt"], s
    k = kinds(s)
    assert k[0] == "created" and k[-1] == "circuit_closed", k
    assert k.index("circuit_opened") < k.index("circuit_closed"), k
    ats = [e["at"] for e in s["recentActivity"]]
    assert ats == sorted(ats, reverse=True), "recentActivity is not newest first"
    assert s["recentActivity"][0]["kind"] in ("attempt", "circuit_closed")
    assert s["latencyMs"]["samples"] == ok + fail
    assert s["latencyMs"]["p50"] is not None and s["latencyMs"]["p99"] >= s["latencyMs"]["p50"]
    assert s["jobsWaiting"] == 0


def test_dead(api, db, receiver, start_worker):
    """Dead jobs and failed attempts count; no success: lastSuccessAt null."""
    failing = receiver(statuses=500, name="failing")
    event = unique_name("statusdead")
    sub = api.register(event, failing.url())
    start_worker(RETRY_SCHEDULE="0.2", BREAKER_FAILURES="1000")
    eids = [api.trigger(event, {"n": i})["eventId"] for i in range(3)]
    for eid in eids:
        db.wait_jobs(eid, "dead", count=1)
    s = wait_until(lambda: (lambda d: d if d["lastHour"]["dead"] == 3 else None)(
        status(api, sub)), 10, "3 dead in the status")
    assert s["lastHour"] == {"delivered": 0, "failedAttempts": failing.count(), "dead": 3}, s
    assert failing.count() == 6 and s["consecutiveFailures"] == 6
    assert s["lastSuccessAt"] is None and s["health"] == "failing"


def test_jobs_waiting(api, db, receiver, start_worker):
    """A job waiting for its retry counts in jobsWaiting."""
    failing = receiver(statuses=500, name="failing")
    slow = unique_name("statuswait")
    sub2 = api.register(slow, failing.url())
    start_worker(RETRY_SCHEDULE="600", BREAKER_FAILURES="1000")
    eid = api.trigger(slow, {"n": 1})["eventId"]
    db.wait_jobs(eid, "retrying", count=1)
    s = status(api, sub2)
    assert s["jobsWaiting"] == 1 and s["health"] == "failing", s


def test_paused_and_disabled(api, db, receiver, start_worker):
    gone = receiver(statuses=410, name="gone")
    event = unique_name("statuspause")
    sub = api.register(event, gone.url())
    patch_subscription(api, sub, {"status": "paused"})
    s = status(api, sub)
    assert s["health"] == "paused" and s["pausedAt"], s
    patch_subscription(api, sub, {"status": "active", "description": "back"})
    s = status(api, sub)
    assert s["health"] == "healthy"
    assert kinds(s) == ["created", "paused", "resumed", "updated"], kinds(s)
    assert s["recentActivity"][0]["detail"] == "settings"

    start_worker()
    eid = api.trigger(event, {"n": 1})["eventId"]
    db.wait_jobs(eid, "dead", count=1)
    s = wait_until(lambda: (lambda d: d if d["health"] == "disabled" else None)(status(api, sub)),
                   10, "health disabled")
    assert s["disabledReason"] == "the endpoint answered 410 Gone" and s["disabledAt"]
    assert kinds(s)[-1] == "disabled"
    assert [e for e in s["recentActivity"] if e["kind"] == "disabled"][0]["detail"] == \
        "the endpoint answered 410 Gone"

    # the admin list shows it, with its reason, before healthy subscriptions
    st, _, adm = api.get("/api/v0/admin/delivery")
    assert st == 200, adm
    subs = adm["subscriptions"]
    assert subs["total"] >= 1 and subs["unhealthy"] >= 1
    listed = subs["listed"]
    mine = [x for x in listed if x["id"] == sub["id"]]
    assert mine == [{"id": sub["id"], "eventName": event, "url": gone.url(), "health": "disabled",
                     "consecutiveFailures": 1,
                     "disabledReason": "the endpoint answered 410 Gone"}], mine
    ranks = {"circuit_open": 0, "failing": 1, "disabled": 2, "paused": 3, "healthy": 4}
    order = [ranks[x["health"]] for x in listed]
    assert order == sorted(order), "unhealthy subscriptions are not listed first"

    patch_subscription(api, sub, {"status": "active"})
    s = status(api, sub)
    assert s["health"] == "healthy" and kinds(s)[-1] == "enabled"
    enabled = [e for e in s["recentActivity"] if e["kind"] == "enabled"][0]
    assert enabled["detail"] == "was disabled: the endpoint answered 410 Gone"


def test_bad_input_and_unknown(api, db, receiver):
    ok = receiver(name="ok")
    event = unique_name("statusbad")
    sub = api.register(event, ok.url())
    for bad in ("not-a-uuid", "1234", sub["id"] + "0"):
        err = assert_error(api.get(f"{HOOKS}/{event}/{bad}/status"), 400, "invalid_field")
        assert "id" in err["message"]
    assert_error(api.get(f"{HOOKS}/bad%20name/{sub['id']}/status"), 400, "invalid_field")
    assert_error(api.get(f"{HOOKS}/{event}/{uuid.uuid4()}/status"), 404, "not_found")
    other = unique_name("statusother")
    assert_error(api.get(f"{HOOKS}/{other}/{sub['id']}/status"), 404, "not_found")
    assert_error(api.post(f"{HOOKS}/{event}/{sub['id']}/status", {}), 405)
    st, _, _ = api.delete(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200
    assert_error(api.get(f"{HOOKS}/{event}/{sub['id']}/status"), 404, "not_found")
    rows = db.sql(f"SELECT kind FROM subscription_activity WHERE subscription_id = '{sub['id']}' "
                  "ORDER BY at")
    assert [r[0] for r in rows] == ["created", "deleted"]


def test_reregistration_is_logged(api, db, receiver):
    ok = receiver(name="ok")
    event = unique_name("statusrereg")
    sub = api.register(event, ok.url())
    again = api.register(event, ok.url(), headers={"X-A": "1"}, expect=200)
    assert again["id"] == sub["id"]
    s = status(api, sub)
    assert kinds(s) == ["created", "updated"]
    assert s["recentActivity"][0]["detail"] == "registered again"
