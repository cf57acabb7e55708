"""PATCH /api/v0/webhooks/<event>/<id> (subscription controls, issue 9): every field, every
refusal (400 naming the field, nothing changed), 404s, a URL change through the SSRF guard and
the event index, a URL taken by another subscription (409), null resets, status "active"
clearing a disabled subscription's state, and POST registration with the same settings. The
subscription JSON of every answer shows the delivery state and the settings."""

import json

import pytest

from harness import TIME_RE, assert_error, event_key, sql_quote, unique_name

HOOKS = "/api/v0/webhooks"
CONTROL_KEYS = {"status", "description", "rateLimit", "retryPolicy", "timeoutSeconds"}


def path(sub):
    return f"{HOOKS}/{sub['eventName']}/{sub['id']}"


def patch(api, sub, body, **kw):
    return api.request("PATCH", path(sub), body, **kw)


def ok(api, sub, body):
    st, _, data = patch(api, sub, body)
    assert st == 200, data
    return data


def get(api, sub):
    st, _, data = api.get(path(sub))
    assert st == 200, data
    return data


def stable(sub):
    """A subscription without the fields a successful PATCH always changes."""
    return {k: v for k, v in sub.items() if k != "updatedAt"}


@pytest.fixture
def sub(api):
    return api.register(unique_name("patch"), "http://127.0.0.1:9/patch")


def test_defaults_shown_everywhere(api, sub):
    assert CONTROL_KEYS <= set(sub), sub
    assert sub["status"] == "active"
    assert sub["description"] is None and sub["rateLimit"] is None
    assert sub["retryPolicy"] is None and sub["timeoutSeconds"] is None
    assert "pausedAt" not in sub and "disabledAt" not in sub and "disabledReason" not in sub
    st, _, lst = api.get(f"{HOOKS}/{sub['eventName']}")
    assert st == 200 and CONTROL_KEYS <= set(lst["webhooks"][0]), lst
    st, _, lst = api.get(f"{HOOKS}?limit=100")
    assert st == 200 and all(CONTROL_KEYS <= set(w) for w in lst["webhooks"]), lst


def test_every_field(api, db, rc, sub):
    body = {"webhookUrl": "http://127.0.0.1:9/new", "headers": {"X-Team": "a"},
            "rateLimit": {"perSecond": 5},
            "retryPolicy": {"strategy": "exponential", "baseSeconds": 1, "maxSeconds": 60,
                            "maxAttempts": 5},
            "timeoutSeconds": 7, "description": "Bücher, für das Team"}
    out = ok(api, sub, body)
    assert out["id"] == sub["id"] and out["secret"] == sub["secret"]
    assert out["webhookUrl"] == "http://127.0.0.1:9/new"
    assert out["headers"] == {"X-Team": "a"}
    assert out["rateLimit"] == {"perSecond": 5}
    assert out["retryPolicy"] == {"strategy": "exponential", "baseSeconds": 1, "maxSeconds": 60,
                                  "maxAttempts": 5}
    assert list(out["retryPolicy"]) == ["strategy", "baseSeconds", "maxSeconds", "maxAttempts"], \
        "not in the canonical member order"
    assert out["timeoutSeconds"] == 7 and out["description"] == "Bücher, für das Team"
    assert out["status"] == "active" and out["updatedAt"] >= sub["updatedAt"]
    assert get(api, sub) == out
    row = db.sql(f"SELECT url, rate_limit::text, timeout_seconds, description FROM "
                 f"subscriptions WHERE id = {sql_quote(sub['id'])}")[0]
    assert row == ("http://127.0.0.1:9/new", '{"perSecond": 5}', "7", "Bücher, für das Team")
    # The event index moved with the URL.
    index = rc.hgetall(event_key(sub["eventName"]))
    assert list(index) == ["http://127.0.0.1:9/new"], index
    assert json.loads(index["http://127.0.0.1:9/new"])["id"] == sub["id"]

    # The other shapes of the settings, as canonical JSON.
    out = ok(api, sub, {"rateLimit": {"periodSeconds": 60, "max": 100},
                        "retryPolicy": {"schedule": [1, 2.5, 30.0]}})
    assert out["rateLimit"] == {"max": 100, "periodSeconds": 60}
    assert list(out["rateLimit"]) == ["max", "periodSeconds"]
    assert out["retryPolicy"] == {"schedule": [1, 2.5, 30]}
    out = ok(api, sub, {"retryPolicy": {"strategy": "fixed", "intervalSeconds": 0.5,
                                        "maxAttempts": 3}})
    assert out["retryPolicy"] == {"strategy": "fixed", "intervalSeconds": 0.5, "maxAttempts": 3}
    assert out["rateLimit"] == {"max": 100, "periodSeconds": 60}, "a field not given is kept"


def test_empty_object_changes_nothing(api, sub):
    out = ok(api, sub, {})
    assert stable(out) == stable(sub)


def test_null_resets(api, db, sub):
    ok(api, sub, {"rateLimit": {"perSecond": 1}, "retryPolicy": {"schedule": [1]},
                  "timeoutSeconds": 3, "description": "x", "headers": {"X-A": "1"}})
    out = ok(api, sub, {"rateLimit": None, "retryPolicy": None, "timeoutSeconds": None,
                        "description": None, "headers": None})
    assert out["rateLimit"] is None and out["retryPolicy"] is None
    assert out["timeoutSeconds"] is None and out["description"] is None
    assert out["headers"] == {}
    assert db.sql(f"SELECT rate_limit IS NULL, retry_policy IS NULL, timeout_seconds IS NULL, "
                  f"description IS NULL FROM subscriptions WHERE id = {sql_quote(sub['id'])}") \
        == [("t", "t", "t", "t")]


INVALID = [
    ({"webhookUrl": 5}, "webhookUrl"),
    ({"webhookUrl": "ftp://127.0.0.1/x"}, "http"),
    ({"webhookUrl": "http://user@127.0.0.1/x"}, None),
    ({"headers": {"Host": "x"}}, "Host"),
    ({"headers": ["x"]}, "headers"),
    ({"headers": {"X-A": 1}}, "headers.X-A"),
    ({"status": "disabled"}, "status"),
    ({"status": "stopped"}, "status"),
    ({"status": None}, "status"),
    ({"rateLimit": {"perSecond": 0}}, "rateLimit.perSecond"),
    ({"rateLimit": {"perSecond": 1.5}}, "rateLimit.perSecond"),
    ({"rateLimit": {"perSecond": 10001}}, "rateLimit.perSecond"),
    ({"rateLimit": {"max": 5}}, "rateLimit"),
    ({"rateLimit": {"max": 5, "periodSeconds": 0}}, "rateLimit.periodSeconds"),
    ({"rateLimit": {"perSecond": 1, "burst": 2}}, "rateLimit"),
    ({"rateLimit": 5}, "rateLimit"),
    ({"retryPolicy": {"schedule": []}}, "retryPolicy.schedule"),
    ({"retryPolicy": {"schedule": [1, -1]}}, "retryPolicy.schedule[1]"),
    ({"retryPolicy": {"strategy": "linear"}}, "retryPolicy.strategy"),
    ({"retryPolicy": {"strategy": "fixed", "intervalSeconds": 1}}, "retryPolicy.maxAttempts"),
    ({"retryPolicy": {"strategy": "exponential", "baseSeconds": 10, "maxSeconds": 5,
                      "maxAttempts": 3}}, "retryPolicy.maxSeconds"),
    ({"retryPolicy": "fast"}, "retryPolicy"),
    ({"timeoutSeconds": 0}, "timeoutSeconds"),
    ({"timeoutSeconds": 31}, "timeoutSeconds"),
    ({"timeoutSeconds": 2.5}, "timeoutSeconds"),
    ({"timeoutSeconds": "5"}, "timeoutSeconds"),
    ({"description": "x" * 1025}, "description"),
    ({"description": 5}, "description"),
    ({"secret": "whsec_x"}, "secret"),
    ({"eventName": "oth*er"}, "eventName"),  # a new name is accepted (decision 39), not this
    ({"colour": "red"}, "colour"),
    # A valid field first: nothing of it is written either.
    ({"description": "changed", "timeoutSeconds": 99}, "timeoutSeconds"),
]


@pytest.mark.parametrize("body,naming", INVALID, ids=[json.dumps(b)[:60] for b, _ in INVALID])
def test_invalid_values_refused(api, sub, body, naming):
    before = get(api, sub)
    err = assert_error(patch(api, sub, body), 400, "invalid_field")
    if naming:
        assert naming in err["message"], err
    assert get(api, sub) == before, "a refused PATCH changed the subscription"


def test_invalid_json_and_body(api, sub):
    assert_error(patch(api, sub, b"[]"), 400, "invalid_json")
    assert_error(patch(api, sub, b'{"description": "a", "description": "b"}'), 400,
                 "invalid_json")
    assert_error(patch(api, sub, b"{}", headers={"Content-Type": "text/plain"}), 415)
    assert get(api, sub)["description"] is None


def test_not_found(api, sub):
    other = api.register(unique_name("patch-other"), "http://127.0.0.1:9/o")
    assert_error(api.request("PATCH", f"{HOOKS}/{sub['eventName']}/{other['id']}", {}), 404,
                 "not_found")
    assert_error(api.request("PATCH", f"{HOOKS}/{sub['eventName']}/"
                                      "0190a0b0-0000-7000-8000-000000000000", {}), 404)
    assert_error(api.request("PATCH", f"{HOOKS}/{sub['eventName']}/not-an-id", {}), 404)
    st, _, _ = api.delete(path(other))
    assert st == 200
    assert_error(patch(api, other, {"description": "x"}), 404, "not_found")


def test_method_listed_in_allow(api, sub):
    st, hdrs, _ = api.request("PUT", path(sub), {})
    assert st == 405 and "PATCH" in hdrs.get("allow"), hdrs


def test_url_conflict(api, rc, sub):
    other = api.register(sub["eventName"], "http://127.0.0.1:9/taken")
    before = get(api, sub)
    assert_error(patch(api, sub, {"webhookUrl": "http://127.0.0.1:9/taken"}), 409, "url_in_use")
    assert get(api, sub) == before
    index = rc.hgetall(event_key(sub["eventName"]))
    assert json.loads(index["http://127.0.0.1:9/taken"])["id"] == other["id"]
    assert json.loads(index["http://127.0.0.1:9/patch"])["id"] == sub["id"]
    # The same URL again is no conflict: nothing changes.
    assert ok(api, sub, {"webhookUrl": sub["webhookUrl"]})["webhookUrl"] == sub["webhookUrl"]


def test_url_change_ssrf_refused(module_broker, db):
    guarded = module_broker("guarded", WEBHOOK_ALLOW_PRIVATE_NETWORKS=0)
    api = guarded.api
    sub = api.register(unique_name("patch-ssrf"), "http://93.184.215.14/hook")
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/", "http://localhost/"):
        err = assert_error(patch(api, sub, {"webhookUrl": url, "description": "no"}), 400,
                           "url_not_allowed")
        assert err["message"], err
    assert get(api, sub)["webhookUrl"] == "http://93.184.215.14/hook"
    assert get(api, sub)["description"] is None


def test_pause_and_resume(api, db, sub):
    out = ok(api, sub, {"status": "paused"})
    assert out["status"] == "paused" and TIME_RE.match(out["pausedAt"]), out
    again = ok(api, sub, {"status": "paused"})
    assert again["pausedAt"] == out["pausedAt"], "a second pause keeps the first pause time"
    assert get(api, sub)["status"] == "paused"
    out = ok(api, sub, {"status": "active"})
    assert out["status"] == "active" and "pausedAt" not in out
    assert db.scalar(f"SELECT paused_at IS NULL FROM subscriptions "
                     f"WHERE id = {sql_quote(sub['id'])}") == "t"


def test_active_clears_disabled(api, db, sub):
    db.sql(f"UPDATE subscriptions SET disabled_at = now(), disabled_reason = 'failing for 5 days', "
           f"failures = 12, failing_since = now() - interval '5 days', "
           f"circuit_open_until = now() + interval '1 hour', circuit_cooldown_s = 60, "
           f"slow_until = now() + interval '1 minute' WHERE id = {sql_quote(sub['id'])}")
    cur = get(api, sub)
    assert cur["status"] == "disabled" and cur["disabledReason"] == "failing for 5 days"
    assert TIME_RE.match(cur["disabledAt"]), cur
    # Pausing a disabled subscription is refused: it must be made active first.
    err = assert_error(patch(api, sub, {"status": "paused"}), 409, "subscription_disabled")
    assert "active" in err["message"]
    assert get(api, sub) == cur
    # Other settings can change while disabled.
    assert ok(api, sub, {"description": "still disabled"})["status"] == "disabled"
    out = ok(api, sub, {"status": "active"})
    assert out["status"] == "active" and "disabledAt" not in out and "disabledReason" not in out
    row = db.sql(f"SELECT disabled_at IS NULL, disabled_reason IS NULL, failures, "
                 f"failing_since IS NULL, circuit_open_until IS NULL, circuit_cooldown_s IS NULL, "
                 f"slow_until IS NULL, paused_at IS NULL FROM subscriptions "
                 f"WHERE id = {sql_quote(sub['id'])}")
    assert row == [("t", "t", "0", "t", "t", "t", "t", "t")]


def test_disabled_gets_no_jobs_paused_does(api, db, sub):
    ok(api, sub, {"status": "paused"})
    ev = api.trigger(sub["eventName"], {"n": 1})["eventId"]
    assert len(db.jobs(ev)) == 1, "a paused subscription gets its jobs (they wait)"
    ok(api, sub, {"status": "active"})
    db.sql(f"UPDATE subscriptions SET disabled_at = now(), disabled_reason = 'test' "
           f"WHERE id = {sql_quote(sub['id'])}")
    answer = api.trigger(sub["eventName"], {"n": 2})
    assert answer["jobs"] == 0, answer
    assert db.jobs(answer["eventId"]) == [], "a disabled subscription got a job"


def test_register_with_settings(api, db):
    event = unique_name("patch-post")
    body = {"eventName": event, "webhookUrl": "http://127.0.0.1:9/p",
            "rateLimit": {"perSecond": 2}, "retryPolicy": {"schedule": [1, 1]},
            "timeoutSeconds": 4, "description": "first"}
    st, _, sub = api.post(HOOKS, body)
    assert st == 201, sub
    assert sub["rateLimit"] == {"perSecond": 2} and sub["retryPolicy"] == {"schedule": [1, 1]}
    assert sub["timeoutSeconds"] == 4 and sub["description"] == "first"
    assert sub["status"] == "active"
    # A re-registration updates the settings given, keeps the others and the delivery state.
    ok(api, sub, {"status": "paused"})
    st, _, again = api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/p",
                                    "timeoutSeconds": None, "description": "second"})
    assert st == 200, again
    assert again["id"] == sub["id"] and again["status"] == "paused"
    assert again["timeoutSeconds"] is None and again["description"] == "second"
    assert again["rateLimit"] == {"perSecond": 2} and again["retryPolicy"] == {"schedule": [1, 1]}
    # The same validation as PATCH; status is not a registration field.
    for bad, naming in (({"rateLimit": {"perSecond": 0}}, "rateLimit.perSecond"),
                        ({"timeoutSeconds": 60}, "timeoutSeconds"),
                        ({"status": "paused"}, "status")):
        err = assert_error(api.post(HOOKS, {"eventName": event, "webhookUrl":
                                            "http://127.0.0.1:9/q", **bad}), 400, "invalid_field")
        assert naming in err["message"], err
    assert db.count("subscriptions", f"event_name = {sql_quote(event)}") == 1


def test_mailto_url_rules(api, sub):
    """A PATCH's webhookUrl is checked like a registration's: mailto: only for the broker's
    operational events, and a well-formed address."""
    err = assert_error(patch(api, sub, {"webhookUrl": "mailto:ops@example.com"}), 400,
                       "invalid_field")
    assert "mailto:" in err["message"] and "broker." in err["message"], err
    alert = api.register("broker.endpoint.disabled", "mailto:" + unique_name("ops") + "@example.com")
    assert ok(api, alert, {"webhookUrl": "mailto:oncall@example.com"})["webhookUrl"] == \
        "mailto:oncall@example.com"
    assert_error(patch(api, alert, {"webhookUrl": "mailto:not an address"}), 400, "invalid_field")
    assert get(api, alert)["webhookUrl"] == "mailto:oncall@example.com"
    back = ok(api, alert, {"webhookUrl": "http://127.0.0.1:9/ops"})
    assert back["webhookUrl"] == "http://127.0.0.1:9/ops"
    api.request("DELETE", path(alert))
