"""Prometheus metrics (issue 12, decision 37; docs/metrics.md): a real Prometheus scrapes a
broker, two workers and a reconciler (--interval 1) every second; after known traffic (N
triggers delivered, M that go dead after two 500s, rejected triggers) its sums equal exactly what
was sent. promtool accepts every process's exposition, the metric names are exactly those of
docs/metrics.md (per process as its table says), and a worker without METRICS_LISTEN binds
nothing."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import harness
from harness import (REPO, Proc, Worker, binary, free_port, reconciler_env, unique_name,
                     wait_until)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(not PROMETHEUS or not PROMTOOL,
                                reason="prometheus is not installed (bash scripts/deps.sh)")

METRICS_DOC = REPO / "docs" / "metrics.md"
METRICS_AT = re.compile(r"metrics at http://127\.0\.0\.1:(\d+)/metrics")
N_OK, N_DEAD, N_BAD, N_UNAUTH = 12, 4, 3, 2


def scrape(port, path="/metrics"):
    """(status, Content-Type, text) of GET path on 127.0.0.1:port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def metrics_port(proc):
    """The port the process logged for its metrics (METRICS_LISTEN with port 0)."""
    found = []

    def logged():
        found[:] = METRICS_AT.findall(proc.log_text())
        return bool(found)

    wait_until(logged, 10, f"{proc.name} to log its metrics address")
    return int(found[0])


def documented():
    """{name: set of processes} of docs/metrics.md's table."""
    out = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`wh_\w+`", cells[0]):
            procs = {"broker", "worker", "reconciler"} if cells[3] == "all" else \
                {p.strip() for p in cells[3].split(",")}
            out[cells[0].strip("`")] = procs
    return out


def exported(text):
    return set(re.findall(r"^# TYPE (\w+) ", text, re.M))


class Prometheus(Proc):
    """prometheus scraping targets {job: [ports]} on 127.0.0.1 every second."""

    def __init__(self, log_dir, targets):
        self.port = free_port()
        data = Path(log_dir) / "prometheus"
        data.mkdir(exist_ok=True)
        jobs = "".join(
            f"  - job_name: {job}\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: [{', '.join(f'127.0.0.1:{p}' for p in ports)}]\n"
            for job, ports in targets.items())
        config = data / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}")
        super().__init__("prometheus", [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, log_dir=log_dir)

    def start(self):
        def ready():
            try:
                return scrape(self.port, "/-/ready")[0] == 200
            except OSError:
                return False

        return self.start_until(ready, 30, "prometheus /-/ready")

    def query(self, q):
        """The instant vector of q as {frozenset(labels): float}."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return {frozenset(s["metric"].items()): float(s["value"][1])
                for s in body["data"]["result"]}

    def value(self, q):
        """The single value of q (None when the vector is empty)."""
        v = self.query(q)
        assert len(v) <= 1, (q, v)
        return next(iter(v.values()), None)


@pytest.fixture(scope="module")
def stack(module_broker, redis, db, module_dir, binaries):
    """A broker sampling every second, two workers and a reconciler serving metrics on ports
    they pick, and a Prometheus scraping all four."""
    harness_needs = ("webhook-worker", "webhook-reconciler")
    for name in harness_needs:
        assert binary(name).exists(), f"{binary(name)} is not built"
    broker = module_broker("metrics-broker", METRICS_SAMPLE_INTERVAL=1)
    procs = []
    try:
        workers = []
        for i in (1, 2):
            w = Worker(module_dir, redis, db, {"METRICS_LISTEN": "127.0.0.1:0",
                                               "BREAKER_FAILURES": "1000",
                                               "LOG_LEVEL": "info"}, name=f"metrics-worker{i}")
            procs.append(w)
            w.start()
            workers.append(w)
        recon = Proc("metrics-reconciler", [binary("webhook-reconciler"), "--interval", "1"],
                     env=reconciler_env(redis, db, {"METRICS_LISTEN": ":0",
                                                    "RECONCILE_GRACE": "3600"}),
                     log_dir=module_dir, sanitized=True)
        procs.append(recon)
        recon.start()
        ports = {"broker": [broker.port], "worker": [metrics_port(w) for w in workers],
                 "reconciler": [metrics_port(recon)]}
        prom = Prometheus(module_dir, ports)
        procs.append(prom)
        prom.start()
        yield {"broker": broker, "workers": workers, "reconciler": recon, "ports": ports,
               "prometheus": prom}
    finally:
        harness.stop_all(procs)


def test_dead_jobs_sampled_before_any_traffic(stack):
    """wh_jobs_dead is a number (0) from the first sample, read through jobs_subscription."""
    wait_until(lambda: re.search(r"^wh_jobs_dead 0$", scrape(stack["broker"].port)[2], re.M),
               10, "wh_jobs_dead 0")


def test_counters_in_prometheus_equal_the_traffic(stack, db, receiver):
    api, prom = stack["broker"].api, stack["prometheus"]
    ok, bad = receiver(statuses=200, name="metrics-ok"), receiver(statuses=500, name="metrics-500")
    ev_ok, ev_dead = unique_name("metrics.ok"), unique_name("metrics.dead")
    api.register(ev_ok, ok.url())
    sub = api.register(ev_dead, bad.url())
    harness.patch_subscription(api, sub, {"retryPolicy": {"strategy": "fixed",
                                                          "intervalSeconds": 0.2,
                                                          "maxAttempts": 2}})
    for i in range(N_OK):
        api.trigger(ev_ok, {"i": i})
    dead_events = [api.trigger(ev_dead, {"i": i})["eventId"] for i in range(N_DEAD)]
    for _ in range(N_BAD):  # 400: not JSON
        api.trigger(ev_ok, b"{nope", expect=400)
    for _ in range(N_UNAUTH):
        api.trigger(ev_ok, {}, headers={"Authorization": "Bearer wrong-key-0123456789"},
                    expect=401)
    ok.wait_for(N_OK)
    for eid in dead_events:
        db.wait_jobs(eid, "dead", timeout=20)

    want = {
        'sum(wh_triggers_total{result="accepted"})': N_OK + N_DEAD,
        'sum(wh_triggers_total{reason="bad_request"})': N_BAD,
        'sum(wh_triggers_total{reason="unauthorized"})': N_UNAUTH,
        'sum(wh_triggers_total{reason=~"too_large|conflict|unavailable"})': 0,
        "sum(wh_jobs_created_total)": N_OK + N_DEAD,
        'sum(wh_jobs_finished_total{result="delivered"})': N_OK,
        'sum(wh_jobs_finished_total{result="dead"})': N_DEAD,
        'sum(wh_jobs_finished_total{result="cancelled"})': 0,
        'sum(wh_attempts_total{outcome="success",status_class="2xx"})': N_OK,
        'sum(wh_attempts_total{outcome="failure",status_class="5xx"})': 2 * N_DEAD,
        "sum(wh_attempts_total)": N_OK + 2 * N_DEAD,
        "sum(wh_retries_scheduled_total)": N_DEAD,
        "sum(wh_attempt_duration_seconds_count)": N_OK + 2 * N_DEAD,
        "sum(wh_delivery_lag_seconds_count)": N_OK,
        "sum(wh_jobs_held_total)": 0,
        "sum(wh_circuit_opened_total)": 0,
        # sampled gauges (METRICS_SAMPLE_INTERVAL=1)
        "wh_jobs_dead": N_DEAD,
        'wh_subscriptions{state="active"}': 2,
        'sum(wh_subscriptions{state=~"paused|disabled|circuit_open"})': 0,
        "sum(wh_queue_stream_length)": 0,
        "sum(wh_queue_pending)": 0,
        "sum(wh_queue_retry)": 0,
        # every process is up and says what it is
        "count(wh_build_info)": 4,
        "count(wh_redis_up == 1)": 4,
        "count(wh_postgres_up == 1)": 4,
        "sum(wh_reconciler_requeued_total)": 0,
    }
    got = {}

    def converged():
        got.clear()
        got.update({q: prom.value(q) for q in want})
        return all(got[q] == v for q, v in want.items())

    try:
        wait_until(converged, 30, "Prometheus's sums to equal the traffic sent", interval=0.5)
    except AssertionError:
        raise AssertionError("not converged: " + ", ".join(
            f"{q} = {got.get(q)} (want {v})" for q, v in want.items() if got.get(q) != v))
    # Histograms and the reconciler's passes: present and plausible.
    assert prom.value('sum(wh_pg_commit_batch_size_count{job="broker"})') >= 1
    assert prom.value('sum(wh_pg_commit_batch_size_count{job="worker"})') >= 1
    # broker commit rows: events + jobs of the accepted triggers (whatever the batching)
    assert prom.value('sum(wh_pg_commit_batch_size_sum{job="broker"})') >= 2 * (N_OK + N_DEAD)
    assert prom.value("sum(wh_pg_commit_duration_seconds_count)") >= 2
    assert prom.value('sum(wh_delivery_lag_seconds_bucket{le="+Inf"})') == N_OK
    assert prom.value('sum(wh_reconciler_passes_total{result="ok"})') >= 1
    assert prom.value("wh_reconciler_last_success_timestamp_seconds") > time.time() - 120
    assert prom.value("sum(wh_reconciler_pass_duration_seconds_count)") >= 1
    versions = prom.query("wh_build_info")
    assert {dict(k)["binary"] for k in versions} == {"broker", "worker", "reconciler"}


def test_promtool_accepts_each_exposition_and_names_match_the_document(stack):
    doc = documented()
    assert len(doc) >= 20, doc
    seen = {}
    for proc, ports in stack["ports"].items():
        for port in ports:
            status, ctype, text = scrape(port)
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (proc, ctype)
            lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                                  capture_output=True, timeout=30)
            assert lint.returncode == 0 and not lint.stdout.strip() and \
                not lint.stderr.strip(), f"promtool on the {proc}'s metrics: " \
                                         f"{lint.stdout.decode()} {lint.stderr.decode()}"
            names = exported(text)
            assert all(n.startswith("wh_") for n in names), names
            want = {n for n, procs in doc.items() if proc in procs}
            assert names == want, f"{proc}: extra {names - want}, missing {want - names}"
            seen.setdefault(proc, set()).update(names)
    assert set().union(*seen.values()) == set(doc)


def test_paths_and_methods(stack):
    """The broker's /metrics needs no key; a worker's listener answers 404 off /metrics."""
    broker, worker_port = stack["broker"], stack["ports"]["worker"][0]
    status, headers, _ = broker.api.request("GET", "/metrics", headers={"Authorization": None})
    assert status == 200 and headers.get("Content-Type").startswith("text/plain")
    assert scrape(worker_port, "/nope")[0] == 404
    assert scrape(worker_port, "/metrics/x")[0] == 404
    assert scrape(stack["ports"]["reconciler"][0], "/")[0] == 404
    status, _, text = scrape(stack["ports"]["reconciler"][0])
    assert status == 200 and "wh_reconciler_passes_total" in text


def listening_inodes():
    """Socket inodes in the LISTEN state (IPv4 and IPv6)."""
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(f).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":
                out.add(cols[9])
    return out


def test_worker_without_metrics_listen_binds_nothing(stack, redis, db, module_dir):
    w = Worker(module_dir, redis, db, {"LOG_LEVEL": "info"}, name="metrics-off-worker")
    try:
        w.start()
        assert "metrics at" not in w.log_text()
        fds = Path(f"/proc/{w.pid}/fd")
        sockets = {os.readlink(fds / fd)[len("socket:["):-1] for fd in os.listdir(fds)
                   if os.readlink(fds / fd).startswith("socket:[")}
        assert sockets, "the worker has no socket at all (Redis, PostgreSQL)?"
        assert not sockets & listening_inodes(), "the worker listens on a port"
    finally:
        w.stop()
