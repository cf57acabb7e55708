"""The registration-time host lookups are bounded: RESOLVE_QUEUE_MAX lookups waiting or under
way (503 with Retry-After beyond), RESOLVE_TIMEOUT per lookup (the URL is then accepted, as
when no DNS server answers: decision 15), a late answer is dropped without a second callback,
and lookups still waiting at exit are answered and freed (sanitizer-clean).

A real resolver that hangs is needed: the broker runs in a private mount namespace
(`unshare -m`) where /etc/resolv.conf names a DNS server of this test on 127.0.0.1:53, which
holds every query until told to answer NXDOMAIN. Nothing outside the broker's namespace sees
that file. Needs root (for the mount and port 53) and a free 127.0.0.1:53; skipped otherwise.
This is a test set-up only: the broker has no test hook."""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from harness import Broker, assert_error, binary, unique_name, wait_until

HOOKS = "/api/v0/webhooks"


class FakeDns:
    """UDP DNS server on 127.0.0.1:53: records each query's name and holds it until release(),
    then (and from then on) answers NXDOMAIN."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.05)
        self.names = []
        self.held = []
        self.holding = True
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _qname_end(data):
        i = 12
        while i < len(data) and data[i]:
            i += 1 + data[i]
        return i + 1 + 4  # the zero label, QTYPE, QCLASS

    @staticmethod
    def _name(data):
        labels, i = [], 12
        while i < len(data) and data[i]:
            labels.append(data[i + 1:i + 1 + data[i]].decode(errors="replace"))
            i += 1 + data[i]
        return ".".join(labels)

    def _nxdomain(self, data, addr):
        end = self._qname_end(data)
        reply = data[:2] + b"\x81\x83" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + data[12:end]
        self.sock.sendto(reply, addr)

    def _run(self):
        while not self.closed:
            with self.lock:
                if not self.holding:
                    for data, addr in self.held:
                        self._nxdomain(data, addr)
                    self.held = []
            try:
                data, addr = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.names.append(self._name(data))
                if self.holding:
                    self.held.append((data, addr))
                else:
                    self._nxdomain(data, addr)

    def hosts_asked(self):
        with self.lock:
            return set(self.names)

    def release(self):
        with self.lock:
            self.holding = False

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def dns():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private /etc/resolv.conf")
    try:
        server = FakeDns()
    except OSError as e:
        pytest.skip(f"cannot bind 127.0.0.1:53: {e}")
    try:
        yield server
    finally:
        server.release()
        server.close()


class DnsBroker(Broker):
    """A broker whose /etc/resolv.conf (in its own mount namespace) names 127.0.0.1."""

    def __init__(self, log_dir, redis, db, env, name, resolv):
        full = {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "0", **env}
        super().__init__(log_dir, redis, db, full, name=name)
        self.argv = ["unshare", "-m", "sh", "-c",
                     f'mount --bind "{resolv}" /etc/resolv.conf && exec "$0"',
                     str(binary("webhook-broker"))]


def private_resolv(tmp_path, timeout):
    """A resolv.conf for a DnsBroker: the DNS server on 127.0.0.1, each query given up after
    timeout seconds. Skips the test unless this user can bind-mount it over /etc/resolv.conf in
    a mount namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private /etc/resolv.conf")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver 127.0.0.1\noptions timeout:{timeout} attempts:1\n")
    check = subprocess.run(["unshare", "-m", "sh", "-c",
                            f'mount --bind "{resolv}" /etc/resolv.conf && cat /etc/resolv.conf'],
                           capture_output=True)
    if check.returncode != 0 or b"127.0.0.1" not in check.stdout:
        pytest.skip(f"cannot bind-mount a private resolv.conf: {check.stderr!r}")
    return resolv


@pytest.fixture
def dns_broker(binaries, redis, db, broker, tmp_path):
    """dns_broker(**env): a started DnsBroker; stopped (exit 0, clean log) at the end."""
    resolv = private_resolv(tmp_path, 30)
    made = []

    def start(**env):
        b = DnsBroker(tmp_path, redis, db, {k: str(v) for k, v in env.items()},
                      f"dns-broker{len(made) + 1}", resolv)
        made.append(b)
        return b.start()

    yield start
    for b in made:
        if b.alive():
            b.stop()


def register_async(api, url, results):
    def run():
        try:
            results.append(api.post(HOOKS, {"eventName": unique_name("dns"), "webhookUrl": url}))
        except (OSError, http.client.HTTPException) as e:  # closed without an answer
            results.append((None, None, repr(e)))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_lookup_timeout_accepts_and_drops_the_late_answer(dns, dns_broker, db):
    b = dns_broker(RESOLVE_TIMEOUT=0.5)
    url = "http://slow-dns.example.test/hook"
    st, _, sub = b.api.post(HOOKS, {"eventName": unique_name("dns"), "webhookUrl": url})
    assert st == 201, sub
    assert "slow-dns.example.test" in dns.hosts_asked()
    assert "slow-dns.example.test within RESOLVE_TIMEOUT" in b.log_text()
    # The answer comes later (NXDOMAIN): the lookup is freed without a second callback (one
    # would answer a request already answered: a use-after-free under ASan).
    dns.release()
    wait_until(lambda: "lookup of slow-dns.example.test finished after its deadline" in
               b.log_text(), 40, "the late lookup to be dropped")
    assert db.count("subscriptions", f"id = '{sub['id']}' AND status = 'active'") == 1
    # The broker still works.
    st, _, _ = b.api.get(f"{HOOKS}/{sub['eventName']}")
    assert st == 200


def test_lookup_queue_is_capped(dns, dns_broker, db):
    b = dns_broker(RESOLVE_QUEUE_MAX=6, RESOLVE_TIMEOUT=30)
    before = db.count("subscriptions")
    results, threads = [], []
    for i in range(6):
        threads.append(register_async(b.api, f"http://held{i}.example.test/h", results))
    wait_until(lambda: "(6 lookups waiting or under way)" in b.log_text(), 15,
               "six lookups to be waiting or under way")
    # four are with the resolver threads (asked), two wait in the queue
    wait_until(lambda: len({h for h in dns.hosts_asked() if h.startswith("held")}) == 4, 15,
               "the four resolver threads to ask the DNS server")
    resp = b.api.post(HOOKS, {"eventName": unique_name("dns"),
                              "webhookUrl": "http://one-more.example.test/h"})
    assert_error(resp, 503, "unavailable")
    assert resp[1].get("retry-after") == "1"
    assert "RESOLVE_QUEUE_MAX" in resp[2]["error"]["message"]
    assert "one-more.example.test" not in dns.hosts_asked()
    assert db.count("subscriptions") == before

    dns.release()
    for t in threads:
        t.join(40)
    assert len(results) == 6
    for r in results:  # NXDOMAIN: the names do not exist
        assert_error(r, 400, "url_not_allowed")
    # room again: the next one is looked up (and refused: it does not exist either)
    assert_error(b.api.post(HOOKS, {"eventName": unique_name("dns"),
                                    "webhookUrl": "http://one-more.example.test/h"}),
                 400, "url_not_allowed")
    assert db.count("subscriptions") == before


def test_exit_with_lookups_waiting_and_under_way(dns, dns_broker):
    """SIGTERM while four lookups hang in getaddrinfo() and two wait in the queue: the broker
    exits 0 after DRAIN_TIMEOUT, and (under ASan) frees or hands off everything."""
    b = dns_broker(RESOLVE_QUEUE_MAX=16, RESOLVE_TIMEOUT=30, DRAIN_TIMEOUT=0.5)
    results, threads = [], []
    for i in range(6):
        threads.append(register_async(b.api, f"http://exit{i}.example.test/h", results))
    wait_until(lambda: "(6 lookups waiting or under way)" in b.log_text(), 15,
               "six lookups to be waiting or under way")
    wait_until(lambda: len({h for h in dns.hosts_asked() if h.startswith("exit")}) == 4, 15,
               "the four resolver threads to ask the DNS server")
    b.stop(signal.SIGTERM)
    assert b.log_text().count("at exit; abandoned") == 4, b.log_tail()
    for t in threads:
        t.join(15)
    assert len(results) == 6
    for st, _, data in results:  # answered 503, or the connection closed without an answer
        assert st in (503, None), (st, data)
