"""The bench tools themselves (build/bench/receiver and build/bench/loadgen): the receiver's
counting and its HTTP/1.1 handling (pipelining, 100-continue, errors), and the load generator's
direct mode, its injected duplicates and losses, and its connections to a server that closes
them after every answer. No broker: scripts/bench.sh covers broker mode."""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

import harness

STATS_KEYS = {"received", "unique", "duplicates", "invalid", "out_of_range", "missing_headers",
              "stale", "run", "first_us", "last_us", "p50_us", "p99_us", "max_us", "min_us"}
COUNT_KEYS = STATS_KEYS - {"p50_us", "p99_us", "max_us", "min_us"}
HEADERS = b"webhook-id: a\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,x\r\n"


@pytest.fixture
def receiver(need_binaries, tmp_path):
    need_binaries("bench/receiver", "bench/loadgen")
    proc = harness.Proc("bench-receiver",
                        [harness.binary("bench/receiver"), "--port", "0", "--paths", "8",
                         "--max-seq", "10000", "--max-seconds", "120"],
                        env=harness.base_env({}), log_dir=tmp_path, sanitized=True)

    def port():
        m = re.search(r"^port (\d+)$", proc.log_text(), re.M)
        return int(m.group(1)) if m else None

    proc.start_until(lambda: port() is not None, 10, "the receiver's port line")
    proc.port = port()
    yield proc
    proc.stop()
    assert re.search(r"^stats sigterm \{", proc.log_text(), re.M), proc.log_tail()


def exchange(port, data, until=None, timeout=5):
    """Sends data on a new connection and reads until the peer closes, or until `until` (bytes)
    was seen as often as data asked for. Returns the bytes read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        got = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if until is not None and until(got):
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        return got
    finally:
        s.close()


def post(path, body, headers=HEADERS, version=b"HTTP/1.1"):
    return (b"POST " + path + b" " + version + b"\r\nHost: x\r\n" + headers +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def stats(port, counts=False):
    raw = exchange(port, b"GET /stats%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   % (b"?counts=1" if counts else b""))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw
    return json.loads(body)


def run_loadgen(port_or_base, *args, timeout=60):
    base = port_or_base if isinstance(port_or_base, str) else f"http://127.0.0.1:{port_or_base}"
    p = subprocess.run([str(harness.binary("bench/loadgen")), "--direct", "--receiver-base", base,
                        "--settle-seconds", "0.2", "--max-seconds", "50", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, env=harness.base_env({}))
    harness.assert_no_sanitizer_report(p.stderr, "loadgen")
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    result = dict(kv.split("=", 1) for kv in m.group(1).split()) if m else None
    return p, result


def test_receiver_pipelined_requests_and_counts(receiver):
    port = receiver.port
    reset = exchange(port, b"GET /reset?run=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reset.startswith(b"HTTP/1.1 200 ") and reset.endswith(b'{"reset":true}\n'), reset
    good = b'{"seq":3,"t":1,"run":5}'
    reqs = (post(b"/r/1", good) + post(b"/r/1", good) +              # unique, duplicate
            post(b"/r/2", good, headers=b"webhook-id: a\r\n") +      # missing headers
            post(b"/r/9", good) + post(b"/r/x", good) +              # invalid paths
            post(b"/r/0", b'{"seq":3,"t":1,"run":4}') +              # stale
            post(b"/r/0", b'{"seq":10000,"t":1,"run":5}') +          # out of range
            b"GET /stats?counts=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    # all in one write: the receiver answers every pipelined request, in order
    raw = exchange(port, reqs, until=lambda b: b.count(b"HTTP/1.1 ") == 8 and b.endswith(b"}\n"))
    assert raw.count(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == 7, raw
    body = json.loads(raw.rpartition(b"\r\n\r\n")[2])
    assert set(body) == COUNT_KEYS
    assert body == {**body, "received": 7, "unique": 2, "duplicates": 1, "missing_headers": 1,
                    "invalid": 2, "stale": 1, "out_of_range": 1, "run": 5}
    full = stats(port)
    assert set(full) == STATS_KEYS and full["unique"] == 2 and full["p50_us"] > 0


def test_receiver_http_edges(receiver):
    port = receiver.port
    # Expect: 100-continue gets the interim answer, then the final one once the body came
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b'{"seq":1,"t":1,"run":0,"pad":"' + b"x" * 3000 + b'"}'
    s.sendall(b"POST /r/0 HTTP/1.1\r\nHost: x\r\n" + HEADERS +
              b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert s.recv(1000) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body)
    assert s.recv(1000) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    s.close()
    # HTTP/1.0 without keep-alive: answered, then closed
    raw = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in raw
    assert raw.endswith(b'{"status":"ok"}\n')
    # errors: the answer, then the connection is closed (exchange returns on close)
    cases = [(b"PUT /r/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
             (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
             (b"GET /reset?run=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"400"),
             (b"POST /r/0 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
             (b"GARBAGE\r\n\r\n", b"400"),
             (b"POST /r/0 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
             (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", b"400")]
    for req, code in cases:
        raw = exchange(port, req)
        assert raw.startswith(b"HTTP/1.1 " + code + b" "), (req, raw)
        assert b'{"error":' in raw, raw
    st = stats(port, counts=True)
    assert st["received"] == 1 and st["unique"] == 1 and st["missing_headers"] == 0


def expected_injections(events, k, dup, skip):
    nd = events * k
    skipped = {d for d in range(nd) if skip and d % skip == skip - 1}
    dups = [d for d in range(0, nd, dup) if d not in skipped] if dup else []
    return nd, len(skipped), len(dups)


def test_loadgen_direct_reports_duplicates_and_losses(receiver):
    nd, lost, dups = expected_injections(400, 3, 7, 11)
    p, r = run_loadgen(receiver.port, "--subscribers", 3, "--events", 400, "--concurrency", 8,
                       "--inject-dup", 7, "--inject-skip", 11)
    assert p.returncode == 1, p.stdout + p.stderr  # losses
    assert r is not None, p.stdout + p.stderr
    assert (r["mode"], int(r["expected"]), int(r["lost"]), int(r["duplicates"])) == \
        ("direct", nd, lost, dups), r
    assert int(r["unique"]) == nd - lost and r["wait"] == "complete"
    assert int(r["trigger_errors"]) == 0 and int(r["missing_headers"]) == 0
    assert int(r["invalid"]) == 0 and int(r["stale"]) == 0
    assert 1 <= int(r["connections"]) <= 8  # keep-alive: one per slot at most


def test_loadgen_direct_clean_run_exits_0(receiver):
    p, r = run_loadgen(receiver.port, "--subscribers", 2, "--events", 300, "--concurrency", 4,
                       "--pad", 5000, "--rate", 2000)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (int(r["unique"]), int(r["lost"]), int(r["duplicates"])) == (600, 0, 0), r
    assert "pacing:" in p.stdout and float(r["p50_ms"]) >= 0


def test_loadgen_setup_errors(need_binaries):
    need_binaries("bench/loadgen")
    port = harness.free_port()  # nothing listens there
    p, r = run_loadgen(port, "--events", 10)
    assert p.returncode == 2 and r is None and "receiver" in p.stderr, p.stderr
    p, r = run_loadgen("http://192.0.2.1:80", "--events", 10)
    assert p.returncode == 2 and "loopback only" in p.stderr, p.stderr


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.0 receiver that closes the connection after every answer (no keep-alive) and
    answers /stats without Content-Length (the body ends with the connection)."""
    protocol_version = "HTTP/1.0"
    count = 0
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        if self.path.startswith("/stats"):
            body = json.dumps({"received": self.count, "unique": self.count}).encode()
        else:
            body = b'{"reset":true}'
        self.send_response(200)
        self.end_headers()  # no Content-Length
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_loadgen_reconnects_when_the_server_closes(need_binaries):
    need_binaries("bench/loadgen")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        p, r = run_loadgen(srv.server_address[1], "--events", 50, "--concurrency", 3)
    finally:
        srv.shutdown()
        srv.server_close()
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(r["unique"]) == 50 and int(r["trigger_errors"]) == 0, r
    assert int(r["connections"]) == 50, r  # a new connection for every request
