"""Payload filters on subscriptions (issue 11, decision 30): registration and PATCH accept, echo
and validate "filter" (400 naming the problem, nothing written); the event index carries it;
a trigger creates jobs (and deliveries) only for the subscriptions whose filter matches, on
the index path, the keyed (Idempotency-Key) path and the PostgreSQL fallback; the index
rebuild and the reconciler write and repair the filter."""

import json

import pytest

from harness import (INDEX_READY, assert_error, event_key, run_reconciler, sql_quote,
                     unique_name, wait_until)

HOOKS = "/api/v0/webhooks"


def register(api, event, url, filt, expect=201, **extra):
    body = {"eventName": event, "webhookUrl": url, **extra}
    if filt is not ...:
        body["filter"] = filt
    st, _, data = api.post(HOOKS, body)
    assert st == expect, data
    return data


def patch(api, sub, body):
    return api.request("PATCH", f"{HOOKS}/{sub['eventName']}/{sub['id']}", body)


def jobs(api, event, payload, **kw):
    return api.trigger(event, payload, **kw)["jobs"]


def index_value(rc, sub):
    return rc.hgetall(event_key(sub["eventName"]))[sub["webhookUrl"]]


def plain_value(sub):
    return '{"id":"%s","status":"active"}' % sub["id"]


def stored(db, sub):
    return db.scalar(f"SELECT filter::text FROM subscriptions WHERE id = {sql_quote(sub['id'])}")


def test_registered_filter_is_echoed_stored_and_indexed(api, db, rc):
    event = unique_name("flt")
    filt = {"data.amount": {"$gte": 100}, "type": "order.created",
            "$or": [{"data.currency": "EUR"}, {"data.currency": {"$in": ["USD", "GBP"]}}]}
    sub = register(api, event, "http://127.0.0.1:9/a", filt)
    plain = register(api, event, "http://127.0.0.1:9/b", ...)
    assert sub["filter"] == filt
    assert plain["filter"] is None
    st, _, got = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and got["filter"] == filt
    st, _, lst = api.get(f"{HOOKS}/{event}")
    assert st == 200 and {w["id"]: w["filter"] for w in lst["webhooks"]} == \
        {sub["id"]: filt, plain["id"]: None}
    assert json.loads(stored(db, sub)) == filt
    # The index carries the text PostgreSQL has; a filter-less value is byte-identical to before.
    value = index_value(rc, sub)
    assert value == '{"id":"%s","status":"active","filter":%s}' % (sub["id"], stored(db, sub))
    assert index_value(rc, plain) == plain_value(plain)


# One subscription per case: (filter, payloads that match, payloads that do not).
FAMILIES = {
    "eq": ({"type": "a", "data.n": {"$eq": 1}},
           [{"type": "a", "data": {"n": 1}}],
           [{"type": "a", "data": {"n": 2}}, {"type": "b", "data": {"n": 1}}, {}]),
    "deep-eq": ({"data": {"k": [1, {"x": True}]}},
                [{"data": {"k": [1, {"x": True}]}}],
                [{"data": {"k": [1, {"x": False}]}}, {"data": {"k": [1]}}]),
    "neq": ({"status": {"$neq": "test"}},
            [{"status": "live"}, {"other": 1}],
            [{"status": "test"}]),
    "order": ({"amount": {"$gt": 10, "$lte": 20}, "name": {"$lt": "n"}},
              [{"amount": 20, "name": "m"}],
              [{"amount": 10, "name": "m"}, {"amount": 21, "name": "m"},
               {"amount": "15", "name": "m"}, {"amount": 15, "name": "o"}]),
    "gte-lt": ({"v": {"$gte": 1.5, "$lt": 2}}, [{"v": 1.5}], [{"v": 2}, {"v": True}]),
    "in-nin": ({"c": {"$in": ["EUR", "USD"]}, "region": {"$nin": ["cn"]}},
               [{"c": "EUR"}, {"c": "USD", "region": "eu"}],
               [{"c": "JPY"}, {"c": "EUR", "region": "cn"}]),
    "exists": ({"data.refund": {"$exists": True}, "data.test": {"$exists": False}},
               [{"data": {"refund": None}}],
               [{"data": {}}, {"data": {"refund": 1, "test": False}}]),
    "strings": ({"email": {"$suffix": "@example.com", "$prefix": "ops"},
                 "subject": {"$contains": "urgent"}},
                [{"email": "ops.team@example.com", "subject": "very urgent!"}],
                [{"email": "dev@example.com", "subject": "urgent"},
                 {"email": "ops@example.org", "subject": "urgent"},
                 {"email": "ops@example.com", "subject": "later"},
                 {"email": 5, "subject": "urgent"}]),
    "logic": ({"$and": [{"$or": [{"kind": "x"}, {"kind": "y"}]},
                        {"$not": {"flag": True}}],
               "n": {"$not": {"$gt": 5}}},
              [{"kind": "y", "n": 5}, {"kind": "x", "flag": False}],
              [{"kind": "z"}, {"kind": "x", "flag": True}, {"kind": "y", "n": 6}]),
    "arrays": ({"items.sku": "s2", "items.0.qty": {"$gte": 1}, "tags": "vip"},
               [{"items": [{"sku": "s1", "qty": 1}, {"sku": "s2", "qty": 0}],
                 "tags": ["new", "vip"]}],
               [{"items": [{"sku": "s1", "qty": 1}], "tags": ["vip"]},
                {"items": [{"sku": "s2", "qty": 0}], "tags": ["vip"]},
                {"items": [{"sku": "s2", "qty": 1}], "tags": "new"}]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_operator_family_end_to_end(api, db, family):
    filt, good, bad = FAMILIES[family]
    event = unique_name("op")
    register(api, event, "http://127.0.0.1:9/f", filt)
    for payload in good:
        data = api.trigger(event, payload)
        assert data["jobs"] == 1, (payload, data)
        assert len(db.jobs(data["eventId"])) == 1
    for payload in bad:
        data = api.trigger(event, payload)
        assert data["jobs"] == 0, (payload, data)
        assert db.jobs(data["eventId"]) == []


def test_deliveries_follow_the_filter(api, db, receiver, start_worker):
    event = unique_name("dlv")
    big, every = receiver(name="big"), receiver(name="every")
    register(api, event, big.url("/big"), {"amount": {"$gt": 100}})
    register(api, event, every.url("/every"), ...)
    start_worker()
    small = api.trigger(event, {"amount": 5})
    large = api.trigger(event, {"amount": 500})
    assert (small["jobs"], large["jobs"]) == (1, 2)
    db.wait_jobs(small["eventId"], "delivered", count=1)
    db.wait_jobs(large["eventId"], "delivered", count=2)
    every.wait_for(2)
    assert [r.body for r in big.requests] == [b'{"amount": 500}']
    assert sorted(r.body for r in every.requests) == sorted([b'{"amount": 5}', b'{"amount": 500}'])


def test_keyed_triggers_are_filtered(api, db):
    event = unique_name("idem")
    register(api, event, "http://127.0.0.1:9/k", {"ok": True})
    a = api.trigger(event, {"ok": False}, headers={"Idempotency-Key": "k-no"})
    b = api.trigger(event, {"ok": True}, headers={"Idempotency-Key": "k-yes"})
    assert (a["jobs"], b["jobs"]) == (0, 1)
    again = api.trigger(event, {"ok": True}, headers={"Idempotency-Key": "k-yes"})
    assert again["eventId"] == b["eventId"] and again["jobs"] == 1


def test_patch_adds_changes_and_removes_the_filter(api, db, rc):
    event = unique_name("pf")
    sub = register(api, event, "http://127.0.0.1:9/p", ...)
    assert jobs(api, event, {"n": 1}) == 1

    st, _, out = patch(api, sub, {"filter": {"n": {"$gt": 1}}})
    assert st == 200 and out["filter"] == {"n": {"$gt": 1}}, out
    assert json.loads(index_value(rc, sub))["filter"] == {"n": {"$gt": 1}}
    assert (jobs(api, event, {"n": 1}), jobs(api, event, {"n": 2})) == (0, 1)

    st, _, out = patch(api, sub, {"filter": {"n": {"$lt": 2}}, "description": "small"})
    assert st == 200 and out["filter"] == {"n": {"$lt": 2}} and out["description"] == "small"
    assert (jobs(api, event, {"n": 1}), jobs(api, event, {"n": 2})) == (1, 0)

    st, _, out = patch(api, sub, {"description": None})  # a PATCH without filter keeps it
    assert st == 200 and out["filter"] == {"n": {"$lt": 2}}
    assert json.loads(index_value(rc, sub))["filter"] == {"n": {"$lt": 2}}

    # a new URL and a new filter together: the entry moves with the new filter
    st, _, out = patch(api, sub, {"webhookUrl": "http://127.0.0.1:9/p2",
                                  "filter": {"n": 7}})
    assert st == 200, out
    idx = rc.hgetall(event_key(event))
    assert list(idx) == ["http://127.0.0.1:9/p2"]
    assert json.loads(idx["http://127.0.0.1:9/p2"]) == \
        {"id": sub["id"], "status": "active", "filter": {"n": 7}}
    assert (jobs(api, event, {"n": 1}), jobs(api, event, {"n": 7})) == (0, 1)

    st, _, out = patch(api, sub, {"filter": None})
    assert st == 200 and out["filter"] is None
    assert stored(db, sub) is None
    assert idx_plain(rc, sub, "http://127.0.0.1:9/p2")
    assert jobs(api, event, {"n": 1}) == 1


def idx_plain(rc, sub, url):
    return rc.hgetall(event_key(sub["eventName"]))[url] == plain_value(sub)


def test_reregistration_keeps_updates_and_removes(api, db, rc):
    event = unique_name("rr")
    url = "http://127.0.0.1:9/r"
    sub = register(api, event, url, {"a": 1})
    again = register(api, event, url, ..., expect=200)  # without filter: kept
    assert again["id"] == sub["id"] and again["filter"] == {"a": 1}
    again = register(api, event, url, {"a": 2}, expect=200)
    assert again["filter"] == {"a": 2}
    assert json.loads(index_value(rc, sub))["filter"] == {"a": 2}
    assert (jobs(api, event, {"a": 1}), jobs(api, event, {"a": 2})) == (0, 1)
    again = register(api, event, url, None, expect=200)
    assert again["filter"] is None and index_value(rc, sub) == plain_value(sub)
    assert jobs(api, event, {"a": 1}) == 1


DEEP = {"a": {"$in": [[[[[[[1]]]]]]]}}  # 9 levels: object, object, 7 arrays
INVALID = [
    ({"amount": {"$gt": True}}, "filter.amount: $gt needs a number or string"),
    ({"$foo": 1}, "filter: unknown operator $foo"),
    ({"a": {"$regex": "x"}}, "filter.a: unknown operator $regex"),
    ({"a": {"$in": "x"}}, "filter.a: $in needs an array of at most 100 values"),
    ({"a": {"$in": list(range(101))}}, "filter.a: $in needs an array of at most 100 values"),
    ({"a": {"$exists": "yes"}}, "filter.a: $exists needs true or false"),
    ({"a": {"$prefix": 1}}, "filter.a: $prefix needs a string"),
    ({"$or": []}, "filter.$or: $or needs an array of 1 to 100 filters (objects)"),
    ({"$and": [{"x": {"$lt": None}}]}, "filter.$and[0].x: $lt needs a number or string"),
    ({"$not": 1}, "filter.$not: $not at this level takes a filter (an object)"),
    ({"a..b": 1}, "filter.a..b: empty segment in the field path"),
    ({"a": {"$gt": 1, "b": 2}}, "filter.a: \"b\" is not an operator"),
    (DEEP, "filter: nesting deeper than 8"),
    ({"a": "x" * 4100}, "filter: over 4096 bytes (as compact JSON)"),
    ([{"a": 1}], "filter: must be an object (or null for none)"),
    ("a", "filter: must be an object (or null for none)"),
]


@pytest.mark.parametrize("filt,message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_filter_registration_writes_nothing(api, db, rc, filt, message):
    event = unique_name("bad")
    resp = api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/x",
                            "filter": filt})
    assert_error(resp, 400, "invalid_field")
    assert resp[2]["error"]["message"].startswith(message), resp[2]
    assert db.count("subscriptions", f"event_name = {sql_quote(event)}") == 0
    assert rc.call("EXISTS", event_key(event)) == 0


@pytest.mark.parametrize("filt,message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_filter_patch_writes_nothing(api, db, rc, filt, message):
    event = unique_name("badp")
    sub = register(api, event, "http://127.0.0.1:9/x", {"keep": 1})
    before = db.sql(f"SELECT filter::text, updated_at, description FROM subscriptions "
                    f"WHERE id = {sql_quote(sub['id'])}")
    value = index_value(rc, sub)
    resp = patch(api, sub, {"description": "changed", "filter": filt})
    assert_error(resp, 400, "invalid_field")
    assert resp[2]["error"]["message"].startswith(message), resp[2]
    assert db.sql(f"SELECT filter::text, updated_at, description FROM subscriptions "
                  f"WHERE id = {sql_quote(sub['id'])}") == before
    assert index_value(rc, sub) == value


def ready_again(rc):
    wait_until(lambda: rc.call("EXISTS", INDEX_READY) == 1, 10, "the index rebuilt and marked")


def test_fallback_fan_out_applies_filters(api, db, rc):
    event = unique_name("fb")
    sub = register(api, event, "http://127.0.0.1:9/fb", {"n": {"$gte": 10}})
    other = register(api, event, "http://127.0.0.1:9/fb2", ...)
    ready_again(rc)
    # A filter-less entry in the index: only the PostgreSQL path can refuse this payload.
    rc.call("HSET", event_key(event), sub["webhookUrl"], plain_value(sub))
    rc.call("DEL", INDEX_READY)
    data = api.trigger(event, {"n": 1})
    assert data["jobs"] == 1, data
    assert [j[0] for j in db.sql(f"SELECT subscription_id FROM jobs WHERE event_id = "
                                 f"{sql_quote(data['eventId'])}")] == [other["id"]]
    # That trigger started the rebuild, which writes the filter back.
    ready_again(rc)
    assert index_value(rc, sub) == \
        '{"id":"%s","status":"active","filter":%s}' % (sub["id"], stored(db, sub))
    rc.call("DEL", INDEX_READY)
    assert jobs(api, event, {"n": 10}) == 2
    ready_again(rc)
    assert jobs(api, event, {"n": 1}) == 1  # the index path again


def test_reconciler_repairs_stale_and_missing_filters(api, db, rc, redis, need_binaries):
    need_binaries("webhook-reconciler")
    event = unique_name("rec")
    stale = register(api, event, "http://127.0.0.1:9/s", {"n": 1})
    missing = register(api, event, "http://127.0.0.1:9/m", {"n": 2})
    extra = register(api, event, "http://127.0.0.1:9/e", ...)
    good = {s["id"]: index_value(rc, s) for s in (stale, missing, extra)}
    key = event_key(event)
    rc.call("HSET", key, stale["webhookUrl"],
            '{"id":"%s","status":"active","filter":{"n": 9}}' % stale["id"])
    rc.call("HSET", key, missing["webhookUrl"], plain_value(missing))
    rc.call("HSET", key, extra["webhookUrl"],
            '{"id":"%s","status":"active","filter":{"n": 3}}' % extra["id"])
    assert jobs(api, event, {"n": 9}) == 2, "the stale entries are what the fan-out reads"

    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] >= 3, counts
    assert {s["id"]: index_value(rc, s) for s in (stale, missing, extra)} == good
    assert jobs(api, event, {"n": 9}) == 1
    assert jobs(api, event, {"n": 2}) == 2
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] == 0, "a second pass found more to fix"


def test_replay_to_every_subscription_applies_filters(api, db):
    event = unique_name("rp")
    picky = register(api, event, "http://127.0.0.1:9/picky", {"n": {"$gt": 5}})
    every = register(api, event, "http://127.0.0.1:9/every", ...)
    wide = register(api, event, "http://127.0.0.1:9/wide", {"n": {"$exists": True}})
    data = api.trigger(event, {"n": 1})
    assert data["jobs"] == 2
    eid = data["eventId"]
    st, _, out = api.post(f"/api/v0/events/{eid}/replay")
    assert st == 202, out
    assert sorted(j["subscriptionId"] for j in out["jobs"]) == sorted([every["id"], wide["id"]])
    assert out["count"] == 2
    # listed explicitly: sent whatever the filter says (the operator chose)
    st, _, out = api.post(f"/api/v0/events/{eid}/replay", {"subscriptionIds": [picky["id"]]})
    assert st == 202 and [j["subscriptionId"] for j in out["jobs"]] == [picky["id"]], out
    # nothing matches: no job, still 202
    api.request("PATCH", f"{HOOKS}/{event}/{every['id']}", {"filter": {"n": 2}})
    api.request("PATCH", f"{HOOKS}/{event}/{wide['id']}", {"filter": {"m": {"$exists": True}}})
    st, _, out = api.post(f"/api/v0/events/{eid}/replay")
    assert st == 202 and out["count"] == 0 and out["jobs"] == [], out
    assert len(db.jobs(eid)) == 2 + 2 + 1


def test_operational_events_take_no_filter(api, db):
    """Their jobs are created by the workers' outcome statement, not by the broker's fan-out."""
    event = "broker.endpoint.disabled"
    url = "http://127.0.0.1:9/" + unique_name("ops")
    resp = api.post(HOOKS, {"eventName": event, "webhookUrl": url, "filter": {"a": 1}})
    assert_error(resp, 400, "invalid_field")
    assert "operational events" in resp[2]["error"]["message"]
    assert db.count("subscriptions", f"url = {sql_quote(url)}") == 0
    sub = register(api, event, url, None)
    assert sub["filter"] is None
    resp = patch(api, sub, {"filter": {"a": 1}})
    assert_error(resp, 400, "invalid_field")
    assert stored(db, sub) is None
    st, _, out = patch(api, sub, {"filter": None})
    assert st == 200 and out["filter"] is None
    api.delete(f"{HOOKS}/{event}/{sub['id']}")
