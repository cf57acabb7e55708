"""Hostile clients at the connection level (broker/conn.c): slowloris requests cut off by the
whole-request deadline, the connection cap, header count and size limits, bodies declared too
large, descriptors returning to their baseline; and the hostile-input cases test_validation.py
does not cover. Every refusal is a 4xx/503 with the JSON error shape, and writes nothing."""

import json
import os
import select
import socket
import struct
import time

import pytest

from harness import API_KEY, assert_error, unique_name, wait_until

HOOKS = "/api/v0/webhooks"
EVENT = "hostile.evt"  # has a subscriber, so an accepted trigger would write a job
OK_URL = "http://127.0.0.1:9/hook"
DEADLINE = 2.0  # REQUEST_DEADLINE of the "tight" broker
SLACK = 5.0  # generous: the machine is shared and sanitizer builds are slow
AUTH_LINE = f"Authorization: Bearer {API_KEY}\r\n".encode()


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subscribed(broker):
    broker.api.register(EVENT, OK_URL)
    return EVENT


@pytest.fixture(scope="module")
def tight(module_broker):
    """A second broker on the same Redis and database with a 2 s request deadline and a long
    idle timeout, so that whatever cuts a connection off within seconds is the deadline."""
    return module_broker("broker-tight", REQUEST_DEADLINE=DEADLINE, REQUEST_TIMEOUT=60)


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------


class Raw:
    """One client connection driven byte by byte."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def send(self, data):
        """False when the broker has already closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline):
        if self.eof:
            return False
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except socket.timeout:
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def response(self, timeout=10.0):
        """(status, headers with lowercase names, body) of the next response, or None when the
        connection ends (or timeout passes) before a whole one arrived."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            if not self._fill(deadline):
                return None
            rest = self.buf.split(b"\r\n\r\n", 1)[1]
        self.buf = rest[n:]
        return status, headers, rest[:n]

    def closed_within(self, timeout):
        """True when the broker ends the connection (EOF or reset) within timeout; data still
        arriving is kept for response()."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._fill(deadline)
        return self.eof


def json_error(resp, status, code):
    """resp from Raw.response(): the status, a JSON error body with code, Connection: close."""
    assert resp is not None, "no response before the connection ended"
    st, headers, body = resp
    assert st == status, (st, headers, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    data = json.loads(body)
    assert set(data) == {"error"} and data["error"]["code"] == code, data
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    return headers


def request(method, path, headers=(), body=b"", auth=True):
    """Raw request bytes: request line, Host, optional Authorization, headers, body."""
    out = [f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()]
    if auth:
        out.append(AUTH_LINE)
    for h in headers:
        out.append(h.encode() + b"\r\n" if isinstance(h, str) else h + b"\r\n")
    if body:
        out.append(b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body))
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


HEALTHZ = request("GET", "/healthz", auth=False)


def fd_count(proc):
    return len(os.listdir(f"/proc/{proc.pid}/fd"))


def quiesce(broker, base):
    """Waits until the broker has accepted and freed every connection made so far. A request
    answered on a new connection (200, or 503 at the cap) means all earlier ones were accepted
    (the listen queue is first in, first out; descriptors alone do not show connections still
    queued there), and then the descriptor count says when they are all closed."""
    assert broker.api.get("/healthz")[0] in (200, 503)
    wait_until(lambda: fd_count(broker) <= base, 15, f"descriptors back to {base}", interval=0.2)


def settled_fd_count(proc):
    """The broker's descriptor count once it stops changing (connections the harness closed
    are freed asynchronously)."""
    last = [None]

    def stable():
        n = fd_count(proc)
        same = n == last[0]
        last[0] = n
        return same

    wait_until(stable, 15, "a stable descriptor count", interval=0.3)
    return last[0]


# --- whole-request deadline -----------------------------------------------------------------------


def drip(conn, data, interval, stop_when_readable=True):
    """Sends data one byte per interval; stops when the broker answers or closes. Returns
    (bytes sent, seconds since the first byte)."""
    start = None
    for i in range(len(data)):
        if not conn.send(data[i:i + 1]):
            return i, time.monotonic() - start
        if start is None:
            start = time.monotonic()
        readable, _, _ = select.select([conn.sock], [], [], interval)
        if readable and stop_when_readable:
            return i + 1, time.monotonic() - start
    return len(data), time.monotonic() - start


def test_slowloris_headers_are_cut_off_at_the_deadline(tight, unchanged):
    """One byte a second: libevent's idle timeout would restart on every byte forever; the
    deadline answers 408 and closes about DEADLINE after the first byte, while the broker
    goes on serving everybody else."""
    data = request("POST", f"/api/v0/trigger-event/{EVENT}", body=b'{"slow":true}')
    conn = Raw(tight.port)
    start = time.monotonic()
    conn.send(data[:1])
    served = [tight.api.get("/healthz", timeout=5)[0] for _ in range(3)]  # others are served
    sent, _ = drip(conn, data[1:], 1.0)
    assert conn.closed_within(SLACK), "the connection stayed open"
    elapsed = time.monotonic() - start
    assert sent + 1 < len(data), f"all {len(data)} bytes went through: no deadline"
    assert DEADLINE * 0.9 <= elapsed <= DEADLINE + SLACK, f"closed after {elapsed:.1f}s"
    assert served and set(served) == {200}, served
    json_error(conn.response(timeout=1), 408, "request_timeout")
    conn.close()


def test_slow_body_is_cut_off_at_the_deadline(tight, unchanged):
    head = request("POST", f"/api/v0/trigger-event/{EVENT}", body=b"x")[:-1]
    head = head.replace(b"Content-Length: 1", b"Content-Length: 40")
    conn = Raw(tight.port)
    start = time.monotonic()
    conn.send(head)
    sent, _ = drip(conn, b'{"a":"' + b"y" * 32 + b'"}', 1.0)
    assert conn.closed_within(SLACK)
    elapsed = time.monotonic() - start
    assert sent < 40 and elapsed <= DEADLINE + SLACK, (sent, elapsed)
    json_error(conn.response(timeout=1), 408, "request_timeout")
    conn.close()


def test_the_deadline_runs_per_request_not_between_requests(tight):
    """An idle connection (no byte sent) is not cut off by the deadline, only by the idle
    timeout; on a keep-alive connection each request gets the whole deadline, and a request
    that arrives in pieces within it is served."""
    conn = Raw(tight.port)
    time.sleep(DEADLINE + 1)  # idle before the first request
    assert conn.send(HEALTHZ)
    assert conn.response()[0] == 200
    time.sleep(DEADLINE + 1)  # idle between requests
    third = len(HEALTHZ) // 3
    for piece in (HEALTHZ[:third], HEALTHZ[third:2 * third], HEALTHZ[2 * third:]):
        assert conn.send(piece)
        time.sleep(DEADLINE / 4)  # 3 pieces in 3/4 of the deadline
    assert conn.response()[0] == 200
    assert conn.send(HEALTHZ)  # the next request has its own deadline
    assert conn.response()[0] == 200
    conn.close()


def test_pipelined_requests(api):
    """Two requests in one packet are both answered; a pipelined request over the header
    limit behind a valid one gets the valid answer first, then 431 and the close."""
    conn = Raw(api.port)
    assert conn.send(HEALTHZ + HEALTHZ)
    assert conn.response()[0] == 200
    assert conn.response()[0] == 200
    many = request("GET", "/healthz", [f"X-H{i}: {i}" for i in range(101)], auth=False)
    assert conn.send(HEALTHZ + many)
    assert conn.response()[0] == 200
    json_error(conn.response(), 431, "headers_too_large")
    assert conn.closed_within(SLACK)
    conn.close()


# --- header limits -----------------------------------------------------------------------------


def header_lines(n):
    return [f"X-Filler-{i}: {i}" for i in range(n)]


def test_header_count_limit(api, unchanged):
    # Host and Authorization are two of the 100 header lines the default MAX_HEADERS allows.
    ok = Raw(api.port)
    assert ok.send(request("GET", HOOKS + "/" + EVENT, header_lines(98)))
    assert ok.response()[0] == 200
    ok.close()
    for n in (99, 500):
        conn = Raw(api.port)
        conn.send(request("POST", f"/api/v0/trigger-event/{EVENT}", header_lines(n), b"{}"))
        json_error(conn.response(), 431, "headers_too_large")
        assert conn.closed_within(SLACK)
        conn.close()


def test_header_bytes_limit(api, unchanged):
    """The request line and headers, CRLFs included, may be 65536 bytes (MAX_HEADER_BYTES):
    one byte more is 431, never libevent's HTML 413."""

    def with_size(total):
        base = request("GET", "/healthz", ["X-Pad: "], auth=False)
        return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (total - len(base)))

    conn = Raw(api.port)
    assert len(with_size(65536)) == 65536
    assert conn.send(with_size(65536))
    assert conn.response()[0] == 200
    assert conn.send(with_size(65537))
    json_error(conn.response(), 431, "headers_too_large")
    conn.close()
    for data in (request("GET", "/healthz?" + "q" * 70000, auth=False),  # a long URL
                 request("POST", f"/api/v0/trigger-event/{EVENT}", ["X-Big: " + "b" * 300000],
                         b"{}")):
        conn = Raw(api.port)
        conn.send(data)
        json_error(conn.response(), 431, "headers_too_large")
        conn.close()
    # The same through the ordinary client: the answer arrives even though the broker
    # refuses before the client has finished sending.
    resp = api.post(f"/api/v0/trigger-event/{EVENT}", b"{}", headers={"X-Big": "b" * 100000})
    assert_error(resp, 431, "headers_too_large")


NUL_CASES = {
    # (request line path suffix, extra header line, the name the message gives)
    "request_line": ("\x00x", None, "request line"),
    "header": ("", b"X-Note: a\x00b", "header X-Note"),
    "idempotency_key": ("", b"Idempotency-Key: ab\x00cd", "header Idempotency-Key"),
}


@pytest.mark.parametrize("case", sorted(NUL_CASES))
def test_nul_byte_in_the_head_is_refused(api, unchanged, case):
    """evhttp keeps header lines as C strings and would use the part before a NUL as the whole
    value (an Idempotency-Key "ab\\0cd" read as "ab"): 400 naming the line, nothing written."""
    suffix, line, named = NUL_CASES[case]
    conn = Raw(api.port)
    conn.send(request("POST", f"/api/v0/trigger-event/{EVENT}{suffix}", [line] if line else [],
                      b"{}"))
    resp = conn.response()
    json_error(resp, 400, "invalid_field")
    assert f"the {named} holds a NUL byte" in json.loads(resp[2])["error"]["message"], resp
    assert conn.closed_within(SLACK)
    conn.close()


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(api, unchanged):
    """A Content-Length over MAX_BODY_BYTES is answered with the JSON 413 as soon as the
    headers arrive (before, beyond twice the limit, libevent answered with its HTML 413)."""
    for length in (262145, 10**12, 10**40):
        conn = Raw(api.port)
        head = request("POST", f"/api/v0/trigger-event/{EVENT}", body=b"x")[:-1]
        conn.send(head.replace(b"Content-Length: 1", b"Content-Length: %d" % length))
        json_error(conn.response(timeout=SLACK), 413, "payload_too_large")
        assert conn.closed_within(SLACK)
        conn.close()


BAD_AUTH = [None, b"Authorization: Bearer wrong-key-0123456789", b"Authorization: Basic x",
            b"Authorization: Bearer " + b"k" * 400]


@pytest.mark.parametrize("auth", BAD_AUTH)
@pytest.mark.parametrize("framing", [b"Content-Length: 200000", b"Transfer-Encoding: chunked"])
def test_body_without_a_valid_key_is_refused_before_it_is_sent(api, unchanged, auth, framing):
    """A request that brings a body is refused with 401 as soon as its headers arrive when it
    has no valid API key, so a client without a key cannot make the broker buffer bodies
    (before, the broker waited for the body, up to twice MAX_BODY_BYTES, and said 401 after)."""
    conn = Raw(api.port)
    head = [b"POST /api/v0/trigger-event/%s HTTP/1.1" % EVENT.encode(), b"Host: 127.0.0.1",
            b"Content-Type: application/json", framing]
    if auth:
        head.append(auth)
    conn.send(b"\r\n".join(head) + b"\r\n\r\n")  # and no body
    headers = json_error(conn.response(timeout=SLACK), 401, "unauthorized")
    assert headers.get("www-authenticate") == "Bearer", headers
    assert conn.closed_within(SLACK)
    conn.close()


def test_body_with_a_valid_key_passes_the_early_check(api, subscribed):
    """The key is read from the raw headers (any case, surrounding blanks): the body is then
    read and the request handled."""
    conn = Raw(api.port)
    body = b'{"early": true}'
    conn.send(b"POST /api/v0/trigger-event/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"authorization:   bearer %s  \r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (subscribed.encode(), API_KEY.encode(), len(body)))
    conn.send(body)
    resp = conn.response(timeout=SLACK)
    assert resp is not None and resp[0] == 202, resp
    conn.close()


# --- connection cap ------------------------------------------------------------------------------


def test_connection_cap(start_broker, unchanged):
    cap = 4
    b = start_broker(MAX_CONNECTIONS=cap, REQUEST_TIMEOUT=60)
    base = settled_fd_count(b)
    held = []
    for _ in range(2):  # two keep-alive connections that made a request
        c = Raw(b.port)
        assert c.send(HEALTHZ) and c.response()[0] == 200
        held.append(c)
    held += [Raw(b.port) for _ in range(cap - 2)]  # and two that never send a byte
    wait_until(lambda: fd_count(b) >= base + cap, 10, "the broker to accept the silent ones")

    # The next connections are answered 503 at once, without sending anything, and closed.
    for _ in range(20):
        extra = Raw(b.port)
        headers = json_error(extra.response(timeout=SLACK), 503, "too_many_connections")
        assert headers.get("connection") == "close" and headers.get("retry-after") == "1"
        assert extra.closed_within(SLACK)
        extra.close()
    # The ordinary client sending a request gets the same answer.
    assert_error(b.api.post(f"/api/v0/trigger-event/{EVENT}", b"{}"), 503, "too_many_connections")
    # The held connections still work.
    assert held[0].send(HEALTHZ) and held[0].response()[0] == 200

    # Closing two makes room again.
    held.pop(0).close()
    held.pop().close()

    def served():
        try:
            return b.api.get("/healthz", timeout=5)[0] == 200
        except OSError:
            return False

    wait_until(served, 10, "a request to succeed after connections closed", interval=0.2)
    for c in held:
        c.close()
    # Refusals are logged as a summary, not once per connection.
    lines = [l for l in b.log_text().splitlines() if "connection limit reached" in l]
    assert 1 <= len(lines) <= 3, lines


# --- descriptors -------------------------------------------------------------------------------


def test_descriptors_return_to_baseline(start_broker, report):
    """Hundreds of connections ending every way there is (answered, refused at the cap, cut by
    the deadline, refused for their headers or declared body, abandoned half-way, reset) leave
    the broker with the descriptors it had before."""
    b = start_broker(MAX_CONNECTIONS=8, REQUEST_DEADLINE=1, REQUEST_TIMEOUT=60)
    base = settled_fd_count(b)
    counts = {}

    def count(kind):
        counts[kind] = counts.get(kind, 0) + 1

    for i in range(100):  # answered, keep-alive and close
        c = Raw(b.port)
        c.send(HEALTHZ if i % 2 else request("GET", "/healthz", ["Connection: close"], auth=False))
        assert c.response()[0] == 200
        c.close()
        count("answered")
    for i in range(40):  # refused for headers or declared body
        c = Raw(b.port)
        if i % 2:
            c.send(request("GET", "/healthz", header_lines(120), auth=False))
            json_error(c.response(), 431, "headers_too_large")
        else:
            head = request("POST", f"/api/v0/trigger-event/{EVENT}", body=b"x")[:-1]
            c.send(head.replace(b"Content-Length: 1", b"Content-Length: 99999999"))
            json_error(c.response(), 413, "payload_too_large")
        c.close()
        count("refused_limits")
    for i in range(40):  # abandoned half-way, some with a reset
        c = Raw(b.port)
        c.send(HEALTHZ[:10 + i])
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        count("abandoned")
    quiesce(b, base)  # the cap of 8 must be free again for what follows
    slow = [Raw(b.port) for _ in range(6)]  # cut off by the deadline
    for c in slow:
        c.send(HEALTHZ[:5])
    for c in slow:
        json_error(c.response(timeout=SLACK), 408, "request_timeout")
        c.close()
        count("deadline")
    quiesce(b, base)
    held = [Raw(b.port) for _ in range(8)]  # the cap, then refused ones
    wait_until(lambda: fd_count(b) >= base + 8, 10, "the broker to accept 8 connections")
    for _ in range(60):
        c = Raw(b.port)
        json_error(c.response(timeout=SLACK), 503, "too_many_connections")
        c.close()
        count("refused_cap")
    for c in held:
        c.close()
    peak = fd_count(b)
    wait_until(lambda: fd_count(b) <= base, 15, f"descriptors back to {base}", interval=0.2)
    report(f"broker descriptors: {base} before, {peak} just after, {fd_count(b)} after "
           f"{sum(counts.values())} connections {counts}")
    assert b.api.get("/healthz")[0] == 200


# --- draining ----------------------------------------------------------------------------------


def test_sigterm_with_idle_and_slow_connections_exits_promptly(start_broker):
    b = start_broker(REQUEST_DEADLINE=30, REQUEST_TIMEOUT=60)
    idle = Raw(b.port)
    slow = Raw(b.port)
    slow.send(HEALTHZ[:5])
    keep = Raw(b.port)
    assert keep.send(HEALTHZ) and keep.response()[0] == 200
    start = time.monotonic()
    assert b.stop() == 0  # exit 0, no sanitizer report
    assert time.monotonic() - start < 10
    for c in (idle, slow, keep):
        assert c.closed_within(5)
        c.close()


# --- hostile input test_validation.py does not cover ----------------------------------------------

BAD_JSON = {
    "huge_number": b'{"a":1e400}',
    "huge_negative_number": b'[-1e400]',
    "huge_number_upper_e": b'{"a":1E+400}',
    "lone_high_surrogate_escape": b'{"a":"\\ud800"}',
    "lone_low_surrogate_escape": b'{"a":"\\udc00"}',
    "high_surrogate_then_letter": b'{"a":"\\ud800\\u0041"}',
    "byte_order_mark": b'\xef\xbb\xbf{"a":1}',
    "trailing_nul": b'{"a":1}\x00',
    "nul_in_key": b'{"a\\u0000b":1}',
    "utf16_encoded": '{"a":1}'.encode("utf-16-le"),
    "raw_control_char": b'{"a":"x\x01y"}',
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_trigger_rejects_more_bad_json(api, unchanged, case):
    assert_error(api.post(f"/api/v0/trigger-event/{EVENT}", BAD_JSON[case]), 400, "invalid_json")


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_register_rejects_more_bad_json(api, unchanged, case):
    body = BAD_JSON[case]
    if body.startswith(b"{"):  # inside a registration
        body = (b'{"eventName":"hostile.evt","webhookUrl":"http://127.0.0.1:9/x","headers":'
                + body + b"}")
    assert_error(api.post(HOOKS, body), 400, {"invalid_json", "invalid_field"})


def test_numbers_in_range_are_fine(api, db):
    data = api.trigger(unique_name("num"), b'{"a":1e308,"b":-1e-400,"c":0.1}')
    assert db.count("events", f"id = '{data['eventId']}'") == 1


def reg_headers(headers):
    return json.dumps({"eventName": EVENT, "webhookUrl": OK_URL + "2", "headers": headers})


BAD_HEADERS = {
    "te": {"TE": "trailers"},
    "trailer": {"Trailer": "X"},
    "upgrade": {"Upgrade": "h2c"},
    "keep_alive": {"Keep-Alive": "1"},
    "expect": {"Expect": "100-continue"},
    "proxy_authorization": {"Proxy-Authorization": "Basic eA=="},
    "webhook_upper": {"WEBHOOK-TIMESTAMP": "1"},
    "webhook_prefix_only": {"webhook-": "1"},
    "content_length_lower": {"content-length": "1"},
    "host_lower": {"host": "evil"},
    "name_unicode": {"X-Caf\u00e9": "1"},
    "name_trailing_space": {"X-A ": "1"},
    "name_too_long": {"X-" + "n" * 300: "1"},
    "value_nul": {"X-A": "a\u0000b"},
    "value_control": {"X-A": "a\u0001b"},
    "value_del": {"X-A": "a\u007fb"},
    "value_too_long": {"X-A": "v" * 4097},
    "value_crlf_only": {"X-A": "\r\n"},
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_register_rejects_more_headers(api, unchanged, case):
    assert_error(api.post(HOOKS, reg_headers(BAD_HEADERS[case])), 400,
                 {"invalid_field", "invalid_json"})


@pytest.mark.parametrize("segment", [
    "a%5Bb", "a%5Db", "a%7Bb", "a%3F", "%25", "%2525", "%C0%AF", "%EF%BD%81",  # fullwidth a
    "%D0%B0", "a%0Db", "a%7Fb", "%2e%2F", "a" * 129, "a%2", "%%41",
])
@pytest.mark.parametrize("route", ["list", "get", "delete"])
def test_bad_event_names_on_subscription_routes(api, unchanged, segment, route):
    sub = "018f0000-0000-7000-8000-000000000000"
    method, path = {"list": ("GET", f"{HOOKS}/{segment}"),
                    "get": ("GET", f"{HOOKS}/{segment}/{sub}"),
                    "delete": ("DELETE", f"{HOOKS}/{segment}/{sub}")}[route]
    resp = api.request(method, path)
    assert resp[0] in (400, 404), resp
    assert_error(resp, resp[0], {"invalid_field", "not_found"})


@pytest.mark.parametrize("query", [
    "page_size=99999999999999999999", "offset=99999999999999999999", "page_size=-5",
    "page_size=1e3", "page_size=0x10", "offset=1.5", "offset=1000000001", "page_size=5x",
    "page_size=%205", "page_size=+5", "offset=-0", "page_size=", "offset=%0A1",
])
def test_more_bad_page_parameters(api, query):
    assert_error(api.get(f"{HOOKS}?{query}"), 400, "invalid_field")


@pytest.mark.parametrize("path", [
    "/api/v0/trigger-event/" + "a" * 300,  # a path segment longer than any field
    "/api/v0/events/" + "e" * 300,
])
def test_overlong_path_segments(api, unchanged, path):
    resp = api.post(path, b"{}") if "trigger" in path else api.get(path)
    assert resp[0] in (400, 404), resp
    assert_error(resp, resp[0], {"invalid_field", "not_found"})
