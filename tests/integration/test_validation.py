"""Hostile and malformed input: every refusal is the right 4xx with the JSON error shape, never
a 5xx, and writes nothing (row counts in PostgreSQL and the Redis stream are unchanged)."""

import json

import pytest

from harness import assert_error, unique_name

HOOKS = "/api/v0/webhooks"
EVENT = "val.evt"  # has a subscriber, so an accepted trigger would write a job
OK_URL = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
def subscribed(broker):
    broker.api.register(EVENT, OK_URL)
    return EVENT


@pytest.fixture(scope="module")
def small_broker(module_broker):
    """A second broker on the same Redis and database with MAX_BODY_BYTES=1024."""
    return module_broker("broker-small", MAX_BODY_BYTES=1024)


def trigger_path(name=EVENT):
    return f"/api/v0/trigger-event/{name}"


def reg(**fields):
    body = {"eventName": EVENT, "webhookUrl": OK_URL}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()

# --- JSON syntax, for both the trigger payload and the registration body --------------------

BAD_JSON = {
    "syntax": b'{"a":',
    "trailing_garbage": b'{"a":1} x',
    "two_values": b'{"a":1} {"b":2}',
    "nul_escape": b'{"a":"\\u0000"}',
    "invalid_utf8": b'{"a":"\xff"}',
    "overlong_utf8": b'{"a":"\xc0\xaf"}',
    "lone_surrogate_utf8": b'{"a":"\xed\xa0\x80"}',
    "empty": b"",
    "whitespace_only": b" \n ",
    "deep_nesting": b"[" * 200 + b"]" * 200,
    "single_quotes": b"{'a':1}",
    "nan": b'{"a":NaN}',
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_trigger_rejects_bad_json(api, unchanged, case):
    assert_error(api.post(trigger_path(), BAD_JSON[case]), 400, "invalid_json")


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_register_rejects_bad_json(api, unchanged, case):
    body = BAD_JSON[case]
    if case == "nul_escape":  # the NUL inside a field we read
        body = b'{"eventName":"val.evt","webhookUrl":"http://127.0.0.1:9/a\\u0000b"}'
        assert_error(api.post(HOOKS, body), 400, {"invalid_json", "invalid_field"})
        return
    assert_error(api.post(HOOKS, body), 400, "invalid_json")


def test_register_rejects_duplicate_keys(api, unchanged):
    body = b'{"eventName":"val.evt","webhookUrl":"http://127.0.0.1:9/x","webhookUrl":"http://127.0.0.1:9/y"}'
    assert_error(api.post(HOOKS, body), 400, "invalid_json")
    body = b'{"eventName":"val.evt","webhookUrl":"http://127.0.0.1:9/x","headers":{"X-A":"1","X-A":"2"}}'
    assert_error(api.post(HOOKS, body), 400, {"invalid_json", "invalid_field"})


# --- size and media type ----------------------------------------------------------------------


def test_body_too_large(small_broker, unchanged):
    api = small_broker.api
    big = b'{"a":"' + b"x" * 2000 + b'"}'
    assert_error(api.post(trigger_path(), big), 413, "payload_too_large")
    assert_error(api.post(HOOKS, big), 413, "payload_too_large")


def test_body_over_limit_is_json_413_up_to_the_read_cap(small_broker, unchanged):
    """Up to twice the limit + 64 KiB the broker reads the body and answers the contract's
    JSON 413 itself."""
    body = b'{"a":"' + b"x" * (2 * 1024 + 60_000) + b'"}'
    assert_error(small_broker.api.post(trigger_path(), body), 413, "payload_too_large")


def test_body_far_too_large(small_broker, unchanged):
    """Far beyond the read cap, libevent 2.1 refuses the request from its Content-Length
    before reading the body, with its own (HTML) 413: documented in docs/api.md and
    docs/decisions.md. Still a 413, never a reset or a 5xx, and nothing is written."""
    huge = b'{"a":"' + b"x" * 2_000_000 + b'"}'
    status, _, _ = small_broker.api.post(trigger_path(), huge)
    assert status == 413


def test_body_at_the_limit_is_accepted(small_broker, db):
    body = b'{"a":"' + b"x" * (1024 - 8) + b'"}'
    assert len(body) == 1024
    data = small_broker.api.trigger(unique_name("limit"), body)
    assert data["jobs"] == 0
    assert db.count("events", f"id = '{data['eventId']}'") == 1


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "multipart/form-data; boundary=x"])
def test_wrong_content_type(api, unchanged, ctype):
    assert_error(api.post(trigger_path(), b"{}", headers={"Content-Type": ctype}), 415,
                 "unsupported_media_type")
    assert_error(api.post(HOOKS, json.dumps(reg()).encode(), headers={"Content-Type": ctype}),
                 415, "unsupported_media_type")


def test_content_type_parameters_are_fine(api, db):
    data = api.trigger(unique_name("charset"), b"{}",
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert data["jobs"] == 0
    assert db.count("events", f"id = '{data['eventId']}'") == 1


# --- routes and methods -----------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("GET", "/index.html"), ("GET", "/api/v0/nope"), ("POST", "/api/v1/webhooks"),
    ("GET", "/api/v0/webhook"), ("GET", "/api/v0/webhooks/val.evt/x/y"),
    ("POST", "/api/v0/trigger-event"), ("GET", "/healthz/x"),
])
def test_unknown_route(api, unchanged, method, path):
    body = b"{}" if method == "POST" else None
    assert_error(api.request(method, path, body), 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", HOOKS, {"GET", "POST"}),
    ("DELETE", HOOKS, {"GET", "POST"}),
    ("GET", "/api/v0/trigger-event/val.evt", {"POST"}),
    ("DELETE", "/api/v0/trigger-event/val.evt", {"POST"}),
    ("POST", "/healthz", {"GET"}),
])
def test_wrong_method(api, unchanged, method, path, allowed):
    body = b"{}" if method in ("PUT", "POST") else None
    resp = api.request(method, path, body)
    assert_error(resp, 405, "method_not_allowed")
    allow = {m.strip().upper() for m in (resp[1].get("allow") or "").split(",") if m.strip()}
    assert allowed <= allow, f"Allow: {resp[1].get('allow')!r}"
    assert method not in allow


# --- event names --------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", [
    "a%2Fb", "a%2fb", "a%00b", "a%20b", "a+b", "a*b", "a%2Ab", "a%3Fb", "%C3%A9", "caf%C3%A9",
    "a%252Fb", "%", "a%G1", "x" * 129, "a%0Ab", "a%5Cb", "a%09b", "%E2%80%8Ba",
])
def test_trigger_bad_event_name(api, unchanged, segment):
    resp = api.post(trigger_path(segment), b"{}")
    assert_error(resp, 400, "invalid_field")


@pytest.mark.parametrize("path", ["/api/v0/trigger-event/a/b", "/api/v0/trigger-event//",
                                  "/api/v0/trigger-event/"])
def test_trigger_path_with_extra_segments(api, unchanged, path):
    resp = api.post(path, b"{}")
    assert resp[0] in (400, 404), resp
    assert_error(resp, resp[0], {"invalid_field", "not_found"})


def test_event_name_limits_accepted(api, db):
    for name in ("x" * 128, "A.b_c-d:e.9", "a%3Ab"):  # %3A decodes to ':'
        data = api.trigger(name, b"{}")
        expect = name.replace("%3A", ":")
        assert data["eventName"] == expect, data


# --- registration fields ------------------------------------------------------------------------

LONG_URL = "http://127.0.0.1:9/" + "a" * (2049 - len("http://127.0.0.1:9/"))
assert len(LONG_URL) == 2049

BAD_REGISTRATIONS = {
    "url_ftp": reg(webhookUrl="ftp://127.0.0.1/x"),
    "url_file": reg(webhookUrl="file:///etc/passwd"),
    "url_javascript": reg(webhookUrl="javascript:alert(1)"),
    "url_userinfo": reg(webhookUrl="http://user:pw@127.0.0.1/"),
    "url_user_only": reg(webhookUrl="http://good.example@127.0.0.1/"),
    "url_no_host": reg(webhookUrl="http:///path"),
    "url_scheme_only": reg(webhookUrl="http://"),
    "url_relative": reg(webhookUrl="/hooks"),
    "url_not_a_url": reg(webhookUrl="not a url"),
    "url_space": reg(webhookUrl="http://127.0.0.1:9/a b"),
    "url_crlf": reg(webhookUrl="http://127.0.0.1:9/a\r\nX-Injected: 1"),
    "url_backslash": reg(webhookUrl="http://127.0.0.1:9\\@evil/"),
    "url_too_long": reg(webhookUrl=LONG_URL),
    "url_empty": reg(webhookUrl=""),
    "url_number": reg(webhookUrl=123),
    "url_null": reg(webhookUrl=None),
    "url_list": reg(webhookUrl=["http://127.0.0.1:9/"]),
    "url_missing": reg(webhookUrl=DROP),
    "event_missing": reg(eventName=DROP),
    "event_empty": reg(eventName=""),
    "event_space": reg(eventName="a b"),
    "event_slash": reg(eventName="a/b"),
    "event_unicode": reg(eventName="café"),
    "event_too_long": reg(eventName="x" * 129),
    "event_number": reg(eventName=5),
    "event_object": reg(eventName={"a": 1}),
    "headers_string": reg(headers="X-A: 1"),
    "headers_list": reg(headers=[["X-A", "1"]]),
    "header_value_number": reg(headers={"X-A": 5}),
    "header_value_null": reg(headers={"X-A": None}),
    "header_host": reg(headers={"Host": "evil"}),
    "header_webhook_id": reg(headers={"webhook-id": "x"}),
    "header_webhook_sig_case": reg(headers={"Webhook-Signature": "v1,x"}),
    "header_content_length": reg(headers={"Content-Length": "5"}),
    "header_content_type": reg(headers={"Content-Type": "text/plain"}),
    "header_transfer_encoding": reg(headers={"Transfer-Encoding": "chunked"}),
    "header_connection": reg(headers={"Connection": "close"}),
    "header_user_agent": reg(headers={"User-Agent": "x"}),
    "header_name_space": reg(headers={"X Bad": "1"}),
    "header_name_colon": reg(headers={"X:Bad": "1"}),
    "header_name_empty": reg(headers={"": "1"}),
    "header_value_crlf": reg(headers={"X-A": "a\r\nX-Injected: 1"}),
    "header_value_lf": reg(headers={"X-A": "a\nb"}),
    "header_value_cr": reg(headers={"X-A": "a\rb"}),
    "header_too_many": reg(headers={f"X-H{i}": str(i) for i in range(33)}),
    "unknown_field": reg(eventname="typo"),
    "unknown_field_previous_secret": reg(previousSecret="whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    "secret_not_base64": reg(secret="whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!"),
    "body_array": [reg()],
    "body_string": "val.evt",
    "body_null": None,
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
def test_register_rejects(api, unchanged, case):
    body = json.dumps(BAD_REGISTRATIONS[case]).encode()
    # A body that is valid JSON but not an object may be called either.
    codes = {"invalid_field", "invalid_json"} if case.startswith("body_") else "invalid_field"
    assert_error(api.post(HOOKS, body), 400, codes)


def test_register_32_headers_accepted(api, db):
    headers = {f"X-H{i}": str(i) for i in range(32)}
    sub = api.register(unique_name("h32"), OK_URL, headers)
    assert sub["headers"] == headers
    assert db.count("subscriptions", f"id = '{sub['id']}'") == 1
