"""Management and trigger API against a real broker, Redis and PostgreSQL (no worker runs in
this module, so triggered jobs stay on the stream where the test can look at them)."""

import base64
import json
import uuid

import pytest

from harness import (LIVE, TIME_RE, UUID_RE, assert_error, event_key, payload_key, sql_quote,
                     unique_name)

HOOKS = "/api/v0/webhooks"


def assert_subscription(sub, event, url, headers, with_secret):
    assert UUID_RE.match(sub["id"]), sub
    assert uuid.UUID(sub["id"]).version == 7, f"id is not a UUIDv7: {sub['id']}"
    assert sub["eventName"] == event
    assert sub["webhookUrl"] == url
    assert sub["headers"] == headers
    assert sub["status"] == "active"
    assert TIME_RE.match(sub["createdAt"]) and TIME_RE.match(sub["updatedAt"]), sub
    if with_secret:
        assert sub["secret"].startswith("whsec_"), sub["secret"]
        key = base64.b64decode(sub["secret"][6:], validate=True)
        assert 24 <= len(key) <= 64, f"secret key of {len(key)} bytes"
    else:
        assert "secret" not in sub, f"secret leaked in a listing: {sub}"


def test_health_and_ready(api):
    st, _, data = api.get("/healthz")
    assert (st, data) == (200, {"status": "ok"})
    st, _, data = api.get("/readyz")
    assert st == 200 and data == {"status": "ready", "redis": "up", "postgres": "up"}, data


def test_register_creates_subscription(api, db, rc):
    event = unique_name("book.created")
    url = "http://127.0.0.1:9/hooks/books?team=1"
    st, _, sub = api.post(HOOKS, {"eventName": event, "webhookUrl": url,
                                  "headers": {"X-Team": "books"}})
    assert st == 201, sub
    assert set(sub) == {"id", "eventName", "eventNames", "webhookUrl", "secret", "headers", "status",
                        "createdAt", "updatedAt", "description", "rateLimit", "retryPolicy",
                        "timeoutSeconds", "payload", "payloadFields", "ordered", "filter",
                        "batching", "tenant"}, sub
    assert sub["tenant"] is None, sub  # global (decision 44)
    assert sub["ordered"] is False, sub  # the default (decision 33)
    assert sub["batching"] is None, sub  # off by default (decision 40)
    assert_subscription(sub, event, url, {"X-Team": "books"}, with_secret=True)

    # The secret is stored encrypted (test_secrets.py opens it), never as the text returned.
    row = db.sql(f"SELECT event_name, url, secret LIKE 'enc:v1:%', "
                 f"strpos(secret, {sql_quote(sub['secret'][6:])}), status FROM subscriptions "
                 f"WHERE id = {sql_quote(sub['id'])}")
    assert row == [(event, url, "t", "0", "active")]

    index = rc.hgetall(event_key(event))
    assert list(index) == [url], index
    assert json.loads(index[url])["id"] == sub["id"]


def test_register_same_event_and_url_returns_existing(api, db, rc):
    event = unique_name("book.updated")
    url = "http://127.0.0.1:9/same"
    first = api.register(event, url, {"X-A": "1"})
    st, _, again = api.post(HOOKS, {"eventName": event, "webhookUrl": url, "headers": {"X-B": "2"}})
    assert st == 200, again
    assert again["id"] == first["id"] and again["secret"] == first["secret"]
    assert again["headers"] == {"X-B": "2"}, "headers are replaced, not merged"
    assert again["updatedAt"] >= first["updatedAt"]
    assert db.count("subscriptions", f"event_name = {sql_quote(event)}") == 1
    st, _, one = api.get(f"{HOOKS}/{event}/{first['id']}")
    assert st == 200 and one["headers"] == {"X-B": "2"}
    index = rc.hgetall(event_key(event))
    assert list(index) == [url] and json.loads(index[url])["id"] == first["id"]
    # A different URL for the same event is a second subscription.
    other = api.register(event, "http://127.0.0.1:9/other")
    assert other["id"] != first["id"] and other["secret"] != first["secret"]
    assert set(rc.hgetall(event_key(event))) == {url, "http://127.0.0.1:9/other"}


def test_list_paging(api):
    st, _, before = api.get(f"{HOOKS}?page_size=500")
    assert st == 200
    total0 = before["total"]
    event = unique_name("paging")
    ids = [api.register(event, f"http://127.0.0.1:9/p{i}")["id"] for i in range(7)]

    pages = []
    for off, n in ((0, 3), (3, 3), (6, 1)):
        st, _, page = api.get(f"{HOOKS}?page_size=3&offset={total0 + off}")
        assert st == 200, page
        assert page["total"] == total0 + 7
        assert page["offset"] == total0 + off and page["page_size"] == 3
        assert len(page["webhooks"]) == n, page
        for item in page["webhooks"]:
            assert_subscription(item, event, item["webhookUrl"], {}, with_secret=False)
        pages += [w["id"] for w in page["webhooks"]]
    assert pages == ids, "pages are ordered by creation time"

    st, _, page = api.get(f"{HOOKS}?page_size=3&offset={total0 + 7}")
    assert st == 200 and page["webhooks"] == [] and page["total"] == total0 + 7

    st, _, page = api.get(HOOKS)
    assert st == 200 and page["page_size"] == 50 and page["offset"] == 0
    assert len(page["webhooks"]) == min(50, total0 + 7)
    assert all("secret" not in w for w in page["webhooks"])


@pytest.mark.parametrize("query", ["page_size=0", "page_size=501", "page_size=abc", "offset=-1",
                                   "page_size=", "offset=x", "page_size=3.5"])
def test_list_bad_paging(api, query):
    assert_error(api.get(f"{HOOKS}?{query}"), 400, "invalid_field")


def test_list_by_event_name(api):
    event = unique_name("by.name")
    a = api.register(event, "http://127.0.0.1:9/a", {"X-A": "a"})
    b = api.register(event, "http://127.0.0.1:9/b")
    api.register(unique_name("by.name.other"), "http://127.0.0.1:9/a")
    st, _, data = api.get(f"{HOOKS}/{event}")
    assert st == 200, data
    assert data["eventName"] == event
    assert [w["id"] for w in data["webhooks"]] == [a["id"], b["id"]]
    assert_subscription(data["webhooks"][0], event, "http://127.0.0.1:9/a", {"X-A": "a"}, False)
    st, _, data = api.get(f"{HOOKS}/{unique_name('nobody')}")
    assert st == 200 and data["webhooks"] == [], data


def test_get_one(api):
    event = unique_name("get.one")
    sub = api.register(event, "http://127.0.0.1:9/one", {"X-K": "v"})
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and one == sub, (one, sub)

    assert_error(api.get(f"{HOOKS}/{unique_name('wrong')}/{sub['id']}"), 404, "not_found")
    assert_error(api.get(f"{HOOKS}/{event}/{uuid.uuid4()}"), 404, "not_found")
    resp = api.get(f"{HOOKS}/{event}/not-a-uuid")
    assert resp[0] in (400, 404), resp
    assert_error(resp, resp[0], {"not_found", "invalid_field"})


def test_delete(api, db, rc):
    event = unique_name("del")
    url = "http://127.0.0.1:9/del"
    keep = api.register(event, "http://127.0.0.1:9/keep")
    sub = api.register(event, url)
    st, _, gone = api.delete(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200, gone
    assert gone["id"] == sub["id"] and gone["status"] == "deleted"

    assert_error(api.get(f"{HOOKS}/{event}/{sub['id']}"), 404, "not_found")
    st, _, listed = api.get(f"{HOOKS}/{event}")
    assert [w["id"] for w in listed["webhooks"]] == [keep["id"]]
    st, _, page = api.get(f"{HOOKS}?page_size=500")
    assert sub["id"] not in {w["id"] for w in page["webhooks"]}
    assert set(rc.hgetall(event_key(event))) == {"http://127.0.0.1:9/keep"}
    assert db.scalar(f"SELECT status FROM subscriptions WHERE id = {sql_quote(sub['id'])}") == "deleted"
    assert_error(api.delete(f"{HOOKS}/{event}/{sub['id']}"), 404, "not_found")

    again = api.register(event, url, expect=201)
    assert again["id"] != sub["id"] and again["secret"] != sub["secret"]
    assert set(rc.hgetall(event_key(event))) == {url, "http://127.0.0.1:9/keep"}


def test_trigger_without_subscribers(api, db):
    event = unique_name("lonely")
    payload = b'{"n": 1, "s": "x"}'
    data = api.trigger(event, payload)
    assert data["jobs"] == 0 and data["eventName"] == event
    assert UUID_RE.match(data["eventId"])
    ev = api.event(data["eventId"])
    assert ev["id"] == data["eventId"] and ev["eventName"] == event
    assert ev["payload"] == {"n": 1, "s": "x"} and ev["jobs"] == []
    assert TIME_RE.match(ev["createdAt"])
    stored = db.scalar(f"SELECT encode(payload, 'hex') FROM events WHERE id = {sql_quote(data['eventId'])}")
    assert bytes.fromhex(stored) == payload


def test_reserved_event_names_can_be_subscribed_but_not_triggered(api, db, rc):
    """broker.* names are the broker's own operational events: registering a subscription to
    one works, triggering one is 403 reserved_event_name and writes nothing."""
    sub = api.register("broker.endpoint.disabled", "http://127.0.0.1:9/ops")
    assert sub["eventName"] == "broker.endpoint.disabled"
    events, xlen = db.count("events"), rc.xlen()
    for name in ("broker.endpoint.disabled", "broker.attempt.exhausted", "broker.anything"):
        resp = api.post(f"/api/v0/trigger-event/{name}", b'{"forged": true}')
        assert_error(resp, 403, "reserved_event_name")
        assert "broker." in resp[2]["error"]["message"]
    assert db.count("events") == events and rc.xlen() == xlen
    # Only the exact prefix is reserved.
    for name in ("brokers.x", "Broker.endpoint.disabled", "my.broker.x"):
        assert api.trigger(unique_name(name), b"{}")["jobs"] == 0


def test_trigger_enqueues_jobs(api, db, rc):
    event = unique_name("enqueue")
    subs = [api.register(event, f"http://127.0.0.1:9/e{i}") for i in range(2)]
    xlen0 = rc.xlen()
    payload = b'[1, 2,  "three"]'
    data = api.trigger(event, payload)
    assert data["jobs"] == 2
    eid = data["eventId"]

    ev = api.event(eid)
    assert {j["subscriptionId"] for j in ev["jobs"]} == {s["id"] for s in subs}
    for j in ev["jobs"]:
        assert j["status"] == "queued" and j["attempts"] == 0, j
    jobs = db.jobs(eid)
    assert {j["status"] for j in jobs} == {"queued"} and len(jobs) == 2

    assert rc.xlen() == xlen0 + 2
    entries = [e for e in rc.stream_jobs() if e["e"] == eid]
    assert len(entries) == 2, entries
    assert {e["j"] for e in entries} == {j["id"] for j in jobs}
    for e in entries:
        assert e["n"] == event and e["a"] == 1
        assert e["u"] == next(s["webhookUrl"] for s in subs if s["id"] == e["s"])
    assert {j["id"] for j in jobs} <= rc.smembers(LIVE)
    assert rc.call("GET", payload_key(eid)) == payload


def test_get_unknown_event(api):
    assert_error(api.get(f"/api/v0/events/{uuid.uuid4()}"), 404, "not_found")
    st, _, data = api.get("/api/v0/events/nope")
    assert st in (400, 404), (st, data)
