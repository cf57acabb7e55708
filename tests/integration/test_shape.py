"""Payload shape per subscription (issue 11, decision 31): "payload" ("raw", the default, or
"envelope") and "payloadFields" (constant fields merged at the top level) on registration and
PATCH, shown in every subscription JSON; the bodies the worker delivers (raw byte for byte, the
envelope's exact bytes and timestamp, fields merged, the clash rule, payloads that are not
objects), signed over exactly the bytes sent; a PATCH applying to the next attempt and to a
replay; every invalid value refused with 400 naming the field and nothing written."""

import datetime
import json
import re
import time

import pytest

from harness import SmtpSink, assert_error, sql_quote, unique_name, verify_signature, wait_until

HOOKS = "/api/v0/webhooks"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Unusual but valid formatting and numbers a re-serializer would change.
PAYLOAD = b' { "b":1.50,  "big":12345678901234567890123, "a":[1,{"c":"\\u00e9"}] }\n'


def register(api, event, url, **settings):
    st, _, data = api.post(HOOKS, {"eventName": event, "webhookUrl": url, **settings})
    assert st == 201, data
    return data


def patch(api, sub, body):
    return api.request("PATCH", f"{HOOKS}/{sub['eventName']}/{sub['id']}", body)


def patched(api, sub, body):
    st, _, data = patch(api, sub, body)
    assert st == 200, data
    return data


def id_time(event_id):
    """The RFC 3339 UTC time (ms) a UUIDv7 carries in its first 48 bits."""
    ms = int(event_id.replace("-", "")[:12], 16)
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def envelope(event_id, name, data, extra=b""):
    """The exact bytes of the envelope the worker sends (data: the payload's bytes)."""
    head = json.dumps({"id": event_id, "type": name, "timestamp": id_time(event_id)},
                      separators=(",", ":")).encode()
    return head[:-1] + b',"data":' + data.strip(b" \t\r\n") + extra + b"}"


def assert_signed(req, sub, event_id):
    """Signed over exactly the bytes received; webhook-id is the event's id."""
    assert req.headers.get("webhook-id") == event_id, req.headers
    ts = int(req.headers["webhook-timestamp"])
    assert verify_signature(sub["secret"], event_id, ts, req.body,
                            req.headers["webhook-signature"]), "signature does not cover the body"


def deliver(api, db, recv, event, payload, n=1):
    """Triggers payload and waits for the receiver's n-th request; (event id, that request)."""
    eid = api.trigger(event, payload)["eventId"]
    db.wait_jobs(eid, "delivered")
    recv.wait_for(n)
    req = recv.requests[n - 1]
    assert req.headers.get("webhook-id") == eid
    return eid, req


def test_defaults_shown_everywhere(api):
    event = unique_name("shape.defaults")
    sub = register(api, event, "http://127.0.0.1:9/d")
    assert sub["payload"] == "raw" and sub["payloadFields"] is None, sub
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and one["payload"] == "raw" and one["payloadFields"] is None, one
    for path in (f"{HOOKS}/{event}", f"{HOOKS}?limit=100"):
        st, _, lst = api.get(path)
        assert st == 200 and lst["webhooks"], lst
        assert all(w["payload"] in ("raw", "envelope") and "payloadFields" in w
                   for w in lst["webhooks"]), lst
    fields = {"env": "prod", "n": [1, 2.5, {"x": None}], "ü": True}
    sub = patched(api, sub, {"payload": "envelope", "payloadFields": fields})
    assert sub["payload"] == "envelope" and sub["payloadFields"] == fields
    assert list(sub["payloadFields"]) == ["env", "n", "ü"], "the order given is kept"
    st, _, lst = api.get(f"{HOOKS}/{event}")
    assert lst["webhooks"][0]["payload"] == "envelope"
    assert lst["webhooks"][0]["payloadFields"] == fields
    # "raw" is the default: stored as NULL; null resets both.
    out = patched(api, sub, {"payload": "raw"})
    assert out["payload"] == "raw" and out["payloadFields"] == fields
    out = patched(api, sub, {"payload": None, "payloadFields": None})
    assert out["payload"] == "raw" and out["payloadFields"] is None


def test_storage(api, db):
    sub = register(api, unique_name("shape.store"), "http://127.0.0.1:9/s",
                   payload="raw", payloadFields={"k": "v",  "n": 1.0, "e": "é"})
    row = db.sql(f"SELECT payload_shape IS NULL, payload_fields::text FROM subscriptions "
                 f"WHERE id = {sql_quote(sub['id'])}")[0]
    assert row == ("t", '{"k":"v","n":1,"e":"é"}'), row
    patched(api, sub, {"payload": "envelope", "payloadFields": {}})
    row = db.sql(f"SELECT payload_shape, payload_fields::text FROM subscriptions "
                 f"WHERE id = {sql_quote(sub['id'])}")[0]
    assert row == ("envelope", "{}"), row
    # A re-registration of the same event + URL changes only the settings it sends.
    st, _, again = api.post(HOOKS, {"eventName": sub["eventName"], "webhookUrl": sub["webhookUrl"],
                                    "payloadFields": {"z": [True]}})
    assert st == 200 and again["id"] == sub["id"], again
    assert again["payload"] == "envelope" and again["payloadFields"] == {"z": [True]}, again


def test_raw_default_is_the_payload_byte_for_byte(api, db, receiver, start_worker):
    event = unique_name("shape.raw")
    recv = receiver()
    sub = api.register(event, recv.url())
    start_worker()
    eid, req = deliver(api, db, recv, event, PAYLOAD)
    assert req.body == PAYLOAD
    assert_signed(req, sub, eid)
    # Fields that all clash, or none: the payload unchanged too.
    patched(api, sub, {"payloadFields": {"b": "theirs", "a": 0}})
    eid, req = deliver(api, db, recv, event, PAYLOAD, n=2)
    assert req.body == PAYLOAD
    assert_signed(req, sub, eid)
    patched(api, sub, {"payloadFields": {}})
    eid, req = deliver(api, db, recv, event, PAYLOAD, n=3)
    assert req.body == PAYLOAD


def test_envelope_exact_bytes_and_timestamp(api, db, receiver, start_worker):
    event = unique_name("shape.env")
    recv = receiver()
    sub = register(api, event, recv.url(), payload="envelope")
    start_worker()
    before = time.time()
    eid, req = deliver(api, db, recv, event, PAYLOAD)
    assert req.body == envelope(eid, event, PAYLOAD), req.body
    assert_signed(req, sub, eid)
    doc = json.loads(req.body)
    assert list(doc) == ["id", "type", "timestamp", "data"]
    assert doc["id"] == eid and doc["type"] == event
    assert TS_RE.match(doc["timestamp"]), doc["timestamp"]
    t = datetime.datetime.strptime(doc["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert before - 1 <= t <= time.time(), (before, t)
    # The event's createdAt (the group commit's time) is the same instant within the commit
    # delay; the envelope's is the id's, identical for every attempt and replay.
    created = api.event(eid)["createdAt"]
    c = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert 0 <= c - t < 2, (created, doc["timestamp"])
    # payloadRaw stays the original.
    assert api.event(eid)["payloadRaw"].encode() == PAYLOAD
    # Payloads that are not objects go in "data" as they are.
    for payload in (b"[1, 2]", b'"text"', b"42", b"null", b"{}"):
        n = len(recv.requests) + 1
        eid, req = deliver(api, db, recv, event, payload, n=n)
        assert req.body == envelope(eid, event, payload), req.body
        assert_signed(req, sub, eid)


def test_fields_merged_raw_object_event_keys_win(api, db, receiver, start_worker):
    event = unique_name("shape.fields")
    recv = receiver()
    fields = {"env": "prod", "a": "fields lose", "n": [1, {"x": None}], "ключ": "значение"}
    sub = register(api, event, recv.url(), payloadFields=fields)
    assert sub["payload"] == "raw" and sub["payloadFields"] == fields
    start_worker()
    payload = '{"a": 1, "b": "é", "nested": {"env": "inner"}}'.encode()
    eid, req = deliver(api, db, recv, event, payload)
    want = payload[:-1] + ',"env":"prod","n":[1,{"x":null}],"ключ":"значение"}'.encode()
    assert req.body == want, req.body
    assert_signed(req, sub, eid)
    doc = json.loads(req.body)
    assert doc["a"] == 1, "the event's own key wins"
    assert doc["nested"] == {"env": "inner"}, "only top-level keys are merged"
    # An escaped key in the payload is the same key.
    payload = b'{"\\u0065nv": "mine"}'
    eid, req = deliver(api, db, recv, event, payload, n=2)
    assert json.loads(req.body) == {"env": "mine", "a": "fields lose", "n": [1, {"x": None}],
                                    "ключ": "значение"}
    assert_signed(req, sub, eid)


def test_big_payload_shaped_and_signed(api, db, receiver, start_worker):
    """A payload near MAX_BODY_BYTES (256 KiB) with nested objects, escaped quotes and non-ASCII
    text: merged and enveloped byte-exactly, signed over what was sent."""
    event = unique_name("shape.big")
    raw_recv, env_recv = receiver(name="raw"), receiver(name="env")
    raw_sub = register(api, event, raw_recv.url(), payloadFields={"env": "prod", "items": 0})
    env_sub = register(api, event, env_recv.url(), payload="envelope",
                       payloadFields={"env": "prod"})
    start_worker()
    items = [{"id": i, "name": f'Bücher "{i}" \\ {{[', "tags": ["a", {"b": [i, 1.50]}]}
             for i in range(2500)]
    payload = json.dumps({"items": items, "total": 2500}, ensure_ascii=False).encode()
    assert 200_000 < len(payload) < 262_144
    eid = api.trigger(event, payload)["eventId"]
    db.wait_jobs(eid, "delivered", count=2)
    raw_recv.wait_for(1)
    env_recv.wait_for(1)
    got = raw_recv.requests[0]
    assert got.body == payload[:-1] + b',"env":"prod"}'
    assert_signed(got, raw_sub, eid)
    got = env_recv.requests[0]
    assert got.body == envelope(eid, event, payload, b',"env":"prod"')
    assert_signed(got, env_sub, eid)


def test_fields_not_merged_into_raw_non_objects(api, db, receiver, start_worker):
    event = unique_name("shape.nonobj")
    recv = receiver()
    sub = register(api, event, recv.url(), payloadFields={"env": "prod"})
    start_worker()
    for i, payload in enumerate((b" [1, {\"a\": 2}] ", b'"text"', b"-1.5e3", b"null", b"true")):
        eid, req = deliver(api, db, recv, event, payload, n=i + 1)
        assert req.body == payload, "a payload that is not an object is sent as triggered"
        assert_signed(req, sub, eid)
    # An empty object gets the fields.
    eid, req = deliver(api, db, recv, event, b"{}", n=6)
    assert req.body == b'{"env":"prod"}'
    assert_signed(req, sub, eid)


def test_fields_in_envelope_never_replace_its_keys(api, db, receiver, start_worker):
    event = unique_name("shape.envfields")
    recv = receiver()
    sub = register(api, event, recv.url(), payload="envelope",
                   payloadFields={"id": "x", "type": "y", "timestamp": "z", "data": 0,
                                  "source": "billing", "v": 2})
    start_worker()
    eid, req = deliver(api, db, recv, event, b'["not", "an", "object"]')
    assert req.body == envelope(eid, event, b'["not", "an", "object"]',
                                b',"source":"billing","v":2'), req.body
    assert_signed(req, sub, eid)
    doc = json.loads(req.body)
    assert doc["id"] == eid and doc["type"] == event and doc["data"] == ["not", "an", "object"]


def test_patch_applies_to_the_next_attempt_and_replay(api, db, receiver, start_worker):
    event = unique_name("shape.patch")
    recv = receiver(statuses=[500, 200, 200, 200])
    sub = api.register(event, recv.url())
    start_worker(RETRY_SCHEDULE="2")
    eid = api.trigger(event, PAYLOAD)["eventId"]
    recv.wait_for(1)
    assert recv.requests[0].body == PAYLOAD
    # Between the failed attempt and its retry: the retry is sent in the new shape.
    patched(api, sub, {"payload": "envelope", "payloadFields": {"env": "prod"}})
    db.wait_jobs(eid, "delivered")
    recv.wait_for(2)
    second = recv.requests[1]
    assert second.body == envelope(eid, event, PAYLOAD, b',"env":"prod"'), second.body
    assert_signed(second, sub, eid)
    # Back to raw: a replay of the same event sends the payload as triggered again.
    patched(api, sub, {"payload": None, "payloadFields": None})
    st, _, out = api.post(f"/api/v0/events/{eid}/replay")
    assert st == 202 and out["count"] == 1, out
    recv.wait_for(3)
    third = recv.requests[2]
    assert third.body == PAYLOAD
    assert_signed(third, sub, eid)
    assert api.event(eid)["payloadRaw"].encode() == PAYLOAD


def snapshot(db):
    return db.sql("SELECT id, payload_shape, payload_fields::text, description, updated_at "
                  "FROM subscriptions ORDER BY id")


BAD_PAYLOAD = ["Raw", "", "json", 1, True, {"kind": "raw"}, ["raw"]]
BAD_FIELDS = [
    [], "x", 1, True, ["a", 1],
    {"": 1},
    {"k" * 129: 1},
    {f"f{i}": i for i in range(21)},
    {"a": "x" * 4089},
]


@pytest.mark.parametrize("value", BAD_PAYLOAD)
def test_invalid_payload_refused(api, db, value):
    event = unique_name("shape.bad")
    sub = api.register(event, "http://127.0.0.1:9/bad")
    before = snapshot(db)
    err = assert_error(patch(api, sub, {"payload": value, "description": "kept?"}), 400,
                       "invalid_field")
    assert "payload" in err["message"] and "raw" in err["message"], err
    err = assert_error(api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/n",
                                        "payload": value}), 400, "invalid_field")
    assert "payload" in err["message"], err
    assert snapshot(db) == before, "a refused request wrote something"


@pytest.mark.parametrize("value", BAD_FIELDS, ids=range(len(BAD_FIELDS)))
def test_invalid_payload_fields_refused(api, db, value):
    event = unique_name("shape.badf")
    sub = api.register(event, "http://127.0.0.1:9/badf")
    before = snapshot(db)
    err = assert_error(patch(api, sub, {"payloadFields": value, "payload": "envelope"}), 400,
                       "invalid_field")
    assert "payloadFields" in err["message"], err
    err = assert_error(api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/n",
                                        "payloadFields": value}), 400, "invalid_field")
    assert "payloadFields" in err["message"], err
    assert snapshot(db) == before, "a refused request wrote something"


def test_limits_accepted_at_the_bound(api):
    sub = api.register(unique_name("shape.bound"), "http://127.0.0.1:9/bound")
    at_limit = {f"f{i}": i for i in range(19)}
    at_limit["k" * 128] = ""
    at_limit["k" * 128] = "x" * (4096 - len(json.dumps(at_limit, separators=(",", ":"))))
    assert len(json.dumps(at_limit, separators=(",", ":"))) == 4096 and len(at_limit) == 20
    out = patched(api, sub, {"payloadFields": at_limit})
    assert out["payloadFields"] == at_limit


def test_duplicate_key_in_payload_fields_refused(api, db):
    event = unique_name("shape.dup")
    sub = api.register(event, "http://127.0.0.1:9/dup")
    before = snapshot(db)
    err = assert_error(patch(api, sub, b'{"payloadFields": {"a": 1, "a": 2}}'), 400,
                       "invalid_field")
    assert "payloadFields" in err["message"], err
    assert snapshot(db) == before


def test_operational_events_shaped_over_http_not_in_mail(api, db, receiver, start_worker):
    """The broker's own events are shaped like any event for an HTTP subscriber; an e-mail
    (mailto:) stays the text report of the event's own fields: the settings are accepted and
    shown there but do not apply (decision 31)."""
    sink = SmtpSink()
    try:
        addr = f"{unique_name('shape').replace('.', '-')}@example.com"
        mail_sub = register(api, "broker.endpoint.disabled", f"mailto:{addr}",
                            payload="envelope", payloadFields={"env": "prod"})
        assert mail_sub["payload"] == "envelope" and mail_sub["payloadFields"] == {"env": "prod"}
        ops = receiver(name="ops")
        http_sub = register(api, "broker.endpoint.disabled", ops.url(), payload="envelope",
                            payloadFields={"env": "prod"})
        start_worker(SMTP_URL=sink.url)
        gone = receiver(statuses=410, name="gone")
        api.register(unique_name("gone"), gone.url())
        api.trigger(db.scalar("SELECT event_name FROM subscriptions WHERE url = "
                              f"{sql_quote(gone.url())}"), {"n": 1})
        ops.wait_for(1)
        req = ops.requests[0]
        doc = json.loads(req.body)
        assert list(doc) == ["id", "type", "timestamp", "data", "env"], doc
        assert doc["type"] == "broker.endpoint.disabled" == doc["data"]["type"]
        assert doc["id"] == req.headers["webhook-id"] and doc["env"] == "prod"
        assert_signed(req, http_sub, doc["id"])

        def mine():
            return [m for m in sink.messages if m[1] == [addr]]

        msg = wait_until(mine, 15, "the e-mail")[0][2]
        body = msg.get_payload(decode=True).decode()
        assert "type: broker.endpoint.disabled" in body and "reason: " in body, body
        assert "env:" not in body and "data:" not in body, body
    finally:
        sink.close()
