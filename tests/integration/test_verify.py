"""Endpoint verification at registration (issue 11, decision 32): with "verify": true the broker
POSTs a signed challenge {"type": "webhook.verification", "challenge": ...} to the webhook URL
and stores the subscription only when a 2xx answer whose JSON body echoes the challenge comes
back within 10 s; otherwise 422 verification_failed saying what came back, and nothing is
written (no row in PostgreSQL, no entry in the Redis event index). The receivers here are real
HTTP servers on 127.0.0.1."""

import http.server
import json
import socket
import threading
import time

import pytest

from harness import (assert_error, event_key, free_port, unique_name, verify_signature,
                     wait_until)
from test_resolver import DnsBroker, private_resolv

HOOKS = "/api/v0/webhooks"


class Endpoint:
    """A challenge receiver: answer(index, request_json, raw_body) -> (status, body bytes) or
    None to hold the request until release(). Records (headers, raw body) of each request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.lock:
                    index = len(owner.requests)
                    owner.requests.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = None
                out = owner.answer(index, doc, raw)
                if out is None:
                    owner.released.wait(30)
                    self.close_connection = True
                    return
                status, body = out
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", owner.redirect_to)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.redirect_to = "http://127.0.0.1:9/"
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def echo(index, doc, raw):
    return 200, json.dumps({"challenge": doc["challenge"]}).encode()


@pytest.fixture
def endpoint():
    made = []

    def make(answer=echo):
        e = Endpoint(answer)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def register(api, event, url, **fields):
    body = {"eventName": event, "webhookUrl": url, **fields}
    return api.post(HOOKS, body)


def stored(db, rc, event):
    """(rows in PostgreSQL, fields in the Redis index) for the event."""
    rows = db.count("subscriptions", f"event_name = '{event}'")
    return rows, rc.call("HLEN", event_key(event))


def failed(api, db, rc, event, url, words=(), code=422, err_code="verification_failed", **fields):
    err = assert_error(register(api, event, url, verify=True, **fields), code, err_code)
    for w in words:
        assert w in err["message"], err
    assert stored(db, rc, event) == (0, 0), "a failed verification wrote something"
    return err


def test_echo_registers_and_the_challenge_is_signed(api, db, rc, endpoint):
    e = endpoint()
    event = unique_name("verify")
    st, _, sub = register(api, event, e.url(), verify=True, headers={"X-Tenant": "acme"})
    assert st == 201, sub
    assert stored(db, rc, event) == (1, 1)
    assert e.count() == 1
    headers, raw = e.requests[0]
    doc = json.loads(raw)
    assert set(doc) == {"type", "challenge"} and doc["type"] == "webhook.verification"
    assert len(doc["challenge"]) == 64 and int(doc["challenge"], 16) >= 0  # 32 random bytes, hex
    assert headers["content-type"] == "application/json"
    assert headers["x-tenant"] == "acme"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert verify_signature(sub["secret"], headers["webhook-id"], headers["webhook-timestamp"],
                            raw, headers["webhook-signature"])
    # a second verification sends another challenge
    st2, _, _ = register(api, unique_name("verify"), e.url(), verify=True)
    assert st2 == 201
    assert json.loads(e.requests[1][1])["challenge"] != doc["challenge"]


def test_given_secret_signs_the_challenge(api, db, rc, endpoint):
    e = endpoint()
    event = unique_name("verify")
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
    st, _, sub = register(api, event, e.url(), verify=True, secret=secret)
    assert st == 201 and sub["secret"] == secret
    headers, raw = e.requests[0]
    assert verify_signature(secret, headers["webhook-id"], headers["webhook-timestamp"], raw,
                            headers["webhook-signature"])


def test_registration_again_signs_with_the_existing_secret_and_headers(api, db, rc, endpoint):
    e = endpoint()
    event = unique_name("verify")
    st, _, first = register(api, event, e.url(), headers={"X-Tenant": "kept"})
    assert st == 201 and e.count() == 0  # no verify: no challenge
    st, _, again = register(api, event, e.url(), verify=True)
    assert st == 200, again
    assert again["id"] == first["id"] and again["secret"] == first["secret"]
    headers, raw = e.requests[0]
    assert headers["x-tenant"] == "kept"
    assert verify_signature(first["secret"], headers["webhook-id"], headers["webhook-timestamp"],
                            raw, headers["webhook-signature"])


def test_secret_changed_meanwhile_is_verified_again(api, db, rc, endpoint):
    """While the challenge of a new registration waits, another registration of the same event
    and URL stores its own secret. The verified registration's upsert then loses its
    compare-and-set, reads again and keeps that secret: it sends a second challenge signed with
    it, so the secret stored is always the one that signed the echoed challenge."""
    gate = threading.Event()

    def answer(index, doc, raw):
        if index == 0:
            gate.wait(10)
        return echo(index, doc, raw)

    e = endpoint(answer)
    event = unique_name("verify")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=register(api, event, e.url(), verify=True)))
    t.start()
    wait_until(lambda: e.count() == 1, 5, "the first challenge arrives")
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
    st, _, other = register(api, event, e.url(), secret=secret)
    assert st == 201, other
    gate.set()
    t.join(15)
    st, _, sub = out["r"]
    assert st == 200 and sub["id"] == other["id"] and sub["secret"] == secret, sub
    assert e.count() == 2
    first, second = e.requests
    assert not verify_signature(secret, first[0]["webhook-id"], first[0]["webhook-timestamp"],
                                first[1], first[0]["webhook-signature"])
    assert verify_signature(secret, second[0]["webhook-id"], second[0]["webhook-timestamp"],
                            second[1], second[0]["webhook-signature"])
    assert stored(db, rc, event) == (1, 1)


def test_verify_false_sends_nothing(api, db, rc, endpoint):
    e = endpoint()
    event = unique_name("verify")
    st, _, _ = register(api, event, e.url(), verify=False)
    assert st == 201 and e.count() == 0
    assert stored(db, rc, event) == (1, 1)


def test_wrong_echo_is_refused(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: (200, b'{"challenge":"not-it"}'))
    failed(api, db, rc, unique_name("verify"), e.url(),
           ("HTTP 200", "another challenge", '{"challenge":"not-it"}'))


def test_challenge_echoed_as_plain_text_is_refused(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: (200, doc["challenge"].encode()))
    failed(api, db, rc, unique_name("verify"), e.url(), ("not a JSON object",))


def test_no_challenge_member_and_empty_body_are_refused(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: (200, b'{"ok":true}'))
    failed(api, db, rc, unique_name("verify"), e.url(), ('no "challenge" string',))
    e2 = endpoint(lambda i, doc, raw: (204, b""))
    failed(api, db, rc, unique_name("verify"), e2.url(), ("HTTP 204", "is empty"))


def test_non_2xx_is_refused_with_status_and_body(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: (500, b'{"challenge":"%s","oops":"\x01down"}' %
                                      doc["challenge"].encode()))
    err = failed(api, db, rc, unique_name("verify"), e.url(), ("HTTP 500", "oops", "?down"))
    assert "\x01" not in err["message"]


def test_long_body_is_quoted_in_part(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: (400, b"x" * 5000))
    err = failed(api, db, rc, unique_name("verify"), e.url(), ("HTTP 400", "xxx..."))
    assert len(err["message"]) < 400


def test_body_over_64_kib_is_refused(api, db, rc, endpoint):
    big = json.dumps({"challenge": "x", "pad": "y" * 70000}).encode()
    e = endpoint(lambda i, doc, raw: (200, big))
    failed(api, db, rc, unique_name("verify"), e.url(), ("over 65536 bytes",))


def test_redirect_is_not_followed(api, db, rc, endpoint):
    target = endpoint()
    e = endpoint(lambda i, doc, raw: (307, b""))
    e.redirect_to = target.url()
    failed(api, db, rc, unique_name("verify"), e.url(), ("HTTP 307", "redirects are not followed"))
    assert target.count() == 0


def test_connection_refused(api, db, rc):
    port = free_port()  # nothing listens there
    failed(api, db, rc, unique_name("verify"), f"http://127.0.0.1:{port}/hook",
           ("the challenge request failed", "onnect"))


def test_no_answer_within_10_s(api, db, rc, endpoint):
    e = endpoint(lambda i, doc, raw: None)  # holds the request
    t0 = time.monotonic()
    failed(api, db, rc, unique_name("verify"), e.url(), ("no answer to the challenge within 10 s",))
    took = time.monotonic() - t0
    assert 9.5 <= took <= 13, took
    # the broker's loop was never blocked meanwhile: other requests were answered (checked in
    # test_loop_is_not_blocked)


def test_loop_is_not_blocked(api, endpoint):
    e = endpoint(lambda i, doc, raw: None)
    out = {}
    t = threading.Thread(target=lambda: out.update(
        r=register(api, unique_name("verify"), e.url(), verify=True)))
    t.start()
    wait_until(lambda: e.count() == 1, 5, "the challenge arrives")
    t0 = time.monotonic()
    assert api.get("/healthz")[0] == 200
    assert time.monotonic() - t0 < 1
    e.released.set()  # the receiver drops the connection without an answer
    t.join(15)
    assert_error(out["r"], 422, "verification_failed")


def test_ssrf_guard_refuses_before_any_challenge(module_broker, db, rc, endpoint):
    guarded = module_broker("guarded", WEBHOOK_ALLOW_PRIVATE_NETWORKS=0)
    e = endpoint()
    for url in (e.url(), f"http://localhost:{e.port}/hook"):
        failed(guarded.api, db, rc, unique_name("verify"), url, ("refus",), code=400,
               err_code="url_not_allowed")
    assert e.count() == 0


@pytest.mark.parametrize("value", ["yes", 1, 0, None, [], {}, "true"])
def test_verify_must_be_boolean(api, db, rc, endpoint, value):
    e = endpoint()
    event = unique_name("verify")
    err = assert_error(register(api, event, e.url(), verify=value), 400, "invalid_field")
    assert "verify" in err["message"]
    assert e.count() == 0 and stored(db, rc, event) == (0, 0)


def test_mailto_cannot_be_verified(api, db, rc):
    event = "broker." + unique_name("verify")
    err = assert_error(register(api, event, "mailto:ops@example.com", verify=True), 400,
                       "invalid_field")
    assert "verify" in err["message"] and "mailto" in err["message"]
    assert stored(db, rc, event) == (0, 0)


def test_patch_refuses_verify(api, db, endpoint):
    e = endpoint()
    event = unique_name("verify")
    st, _, sub = register(api, event, e.url(), verify=True)
    assert st == 201
    before = db.sql(f"SELECT url, updated_at FROM subscriptions WHERE id = '{sub['id']}'")
    err = assert_error(api.request("PATCH", f"{HOOKS}/{event}/{sub['id']}",
                                   {"webhookUrl": e.url("/other"), "verify": True}), 400,
                       "invalid_field")
    assert "verify is accepted at registration only" in err["message"]
    assert db.sql(f"SELECT url, updated_at FROM subscriptions WHERE id = '{sub['id']}'") == before
    assert e.count() == 1


def test_too_many_verifications_under_way(api, db, rc, endpoint):
    """32 challenges at most are under way; a registration beyond is answered 503 at once."""
    e = endpoint(lambda i, doc, raw: None)
    events = [unique_name("verify") for _ in range(33)]
    results = {}

    def go(ev):
        results[ev] = register(api, ev, e.url(), verify=True)

    threads = [threading.Thread(target=go, args=(ev,)) for ev in events[:32]]
    for t in threads:
        t.start()
    wait_until(lambda: e.count() == 32, 10, "32 challenges arrive")
    t0 = time.monotonic()
    st, hdrs, data = register(api, events[32], e.url(), verify=True)
    assert time.monotonic() - t0 < 2
    assert_error((st, hdrs, data), 503, "unavailable")
    assert hdrs.get("retry-after") == "1"
    assert "too many endpoint verifications" in data["error"]["message"]
    e.released.set()
    for t in threads:
        t.join(20)
    for ev in events[:32]:
        assert_error(results[ev], 422, "verification_failed")
    for ev in events:
        assert stored(db, rc, ev) == (0, 0)
    # the slots are free again
    ok = endpoint()
    assert register(api, unique_name("verify"), ok.url(), verify=True)[0] == 201


def test_shutdown_with_verifications_under_way(start_broker, db, rc, endpoint):
    """SIGTERM while challenges are unanswered: after DRAIN_TIMEOUT the broker answers them 503
    (or the client sees the connection close), writes nothing and exits 0 (sanitizer-clean)."""
    b = start_broker(DRAIN_TIMEOUT=1)
    e = endpoint(lambda i, doc, raw: None)
    events = [unique_name("verify") for _ in range(3)]
    results = {}

    def go(ev):
        try:
            results[ev] = register(b.api, ev, e.url(), verify=True)
        except OSError as x:
            results[ev] = x

    threads = [threading.Thread(target=go, args=(ev,)) for ev in events]
    for t in threads:
        t.start()
    wait_until(lambda: e.count() == 3, 10, "3 challenges arrive")
    b.stop()  # SIGTERM; exit status 0 and no sanitizer report
    for t in threads:
        t.join(10)
    for ev in events:
        r = results[ev]
        if not isinstance(r, OSError):
            assert_error(r, 503, "unavailable")
        assert stored(db, rc, ev) == (0, 0)
    assert "endpoint verifications still under way" in b.log_text()


# --- the guard on the address dialled: a name that answers differently the second time --------


class RebindingDns:
    """UDP DNS server on 127.0.0.1:53. For A queries it answers first_ip the first time and
    then_ip after (a DNS rebinding attack); AAAA and other queries get an empty answer."""

    def __init__(self, first_ip, then_ip):
        self.answers = [socket.inet_aton(first_ip), socket.inet_aton(then_ip)]
        self.asked_a = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.05)
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            i = 12
            while i < len(data) and data[i]:
                i += 1 + data[i]
            end = i + 5
            qtype = int.from_bytes(data[i + 1:i + 3], "big")
            answer = b""
            if qtype == 1:
                ip = self.answers[min(self.asked_a, 1)]
                self.asked_a += 1
                answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04" + ip
            counts = b"\x00\x01" + (b"\x00\x01" if answer else b"\x00\x00") + b"\x00\x00\x00\x00"
            self.sock.sendto(data[:2] + b"\x81\x80" + counts + data[12:end] + answer, addr)

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()


def test_dialled_address_is_checked(binaries, redis, db, broker, rc, tmp_path, endpoint):
    """The registration lookup sees a public address, libcurl's own lookup for the challenge
    gets 127.0.0.1: the guard on the dialled address refuses it (400 url_not_allowed, as for a
    URL the registration lookup refuses), nothing is sent and nothing is stored."""
    resolv = private_resolv(tmp_path, 5)
    try:
        dns = RebindingDns("93.184.215.14", "127.0.0.1")
    except OSError as e:
        pytest.skip(f"cannot bind 127.0.0.1:53: {e}")
    b = DnsBroker(tmp_path, redis, db, {}, "dns-broker", resolv)  # guard on
    try:
        b.start()
        e = endpoint()
        event = unique_name("verify")
        err = failed(b.api, db, rc, event, f"http://rebind.example.test:{e.port}/hook",
                     ("refused by the SSRF guard", "127.0.0.1"), code=400,
                     err_code="url_not_allowed")
        assert "challenge" in err["message"]
        assert dns.asked_a >= 2  # the registration's lookup, then libcurl's
        assert e.count() == 0
    finally:
        if b.alive():
            b.stop()
        dns.close()
