"""Fixtures of the integration suite: one PostgreSQL per session (one database per module), one
redis-server per module, the broker per module, workers and HTTP receivers per test."""

import os
import re
import signal
import time
import types

import pytest

import harness
from harness import Broker, PgServer, Receiver, RedisCluster, RedisServer, Worker

TEST_TIMEOUT = float(os.environ.get("WH_TEST_TIMEOUT", "180"))


def _module_name(request):
    return re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())


# --- binaries ---------------------------------------------------------------------------------


def need(*names):
    """Skips when a binary is not built, unless WH_BUILD_DIR was given (make sets it): then a
    missing binary is a failure."""
    missing = harness.binaries_missing(names)
    if missing:
        msg = f"not built in {harness.BUILD_DIR}: {', '.join(missing)}"
        if os.environ.get("WH_BUILD_DIR"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def binaries():
    need("webhook-broker")
    return harness.BUILD_DIR


@pytest.fixture(scope="session")
def need_binaries():
    """need(*names) for modules that use more binaries than the broker and the worker."""
    return need


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg():
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.cleanup()


@pytest.fixture(scope="module")
def db(pg, request):
    """A fresh database wh_<module> on the session's PostgreSQL."""
    return pg.create_database("wh_" + _module_name(request))


@pytest.fixture(scope="module")
def redis(tmp_path_factory, request):
    server = RedisServer(tmp_path_factory.mktemp("redis-" + _module_name(request)))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    """A module's real Redis Cluster: 3 masters, 3 replicas (harness.RedisCluster)."""
    c = RedisCluster(tmp_path_factory.mktemp("cluster-" + _module_name(request)))
    c.start()
    try:
        yield c
    finally:
        c.stop()
    assert not any(n.alive() for n in c.nodes)


@pytest.fixture(scope="module")
def cluster_target(cluster):
    """What Broker, Worker and run_reconciler read the Redis URL from: the cluster's seeds."""
    return types.SimpleNamespace(url=f"redis-cluster://{cluster.seeds}")


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request):
    """Log directory of the module's long-lived processes."""
    return tmp_path_factory.mktemp("logs-" + _module_name(request))


@pytest.fixture(scope="module")
def broker(binaries, redis, db, module_dir):
    """The module's broker (default configuration). Stopped with SIGTERM: must exit 0."""
    b = Broker(module_dir, redis, db)
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture
def api(broker):
    return broker.api


@pytest.fixture
def rc(redis):
    """A RESP connection to the module's Redis."""
    client = redis.client()
    yield client
    client.close()


def _factory(cls, log_dir, redis, db, prefix, first=1):
    """start(name=None, **env) making ready cls processes (Broker, Worker) on the module's
    Redis and database, and the list of those made."""
    made = []

    def start(name=None, **env):
        p = cls(log_dir, redis, db, {k: str(v) for k, v in env.items()},
                name=name or f"{prefix}{len(made) + first}")
        made.append(p)
        return p.start()

    return start, made


@pytest.fixture
def start_worker(binaries, redis, db, broker, tmp_path):
    """Factory: start_worker(NAME=value, ...) -> a ready Worker on the module's Redis and
    database. Every worker still running at the end is stopped with SIGTERM and must exit 0.
    Depends on broker so the schema is migrated first."""
    need("webhook-worker")
    start, made = _factory(Worker, tmp_path, redis, db, "worker")
    yield start
    harness.stop_all(made)


@pytest.fixture
def start_broker(binaries, redis, db, tmp_path):
    """Factory for extra brokers with overrides: start_broker(MAX_BODY_BYTES=1024)."""
    start, made = _factory(Broker, tmp_path, redis, db, "broker", first=2)
    yield start
    harness.stop_all(made)


@pytest.fixture(scope="module")
def module_broker(binaries, redis, db, module_dir, broker):
    """Factory for extra brokers that live as long as the module:
    module_broker("name", REQUEST_DEADLINE=2). Depends on broker so the schema is migrated
    first."""
    start, made = _factory(Broker, module_dir, redis, db, "module-broker")
    yield start
    harness.stop_all(made)


@pytest.fixture
def unchanged(db, rc, subscribed):
    """Asserts at the end of the test that nothing was written (the module defines
    subscribed: an event with a subscriber, so an accepted trigger would write a job)."""

    def snapshot():
        counts = db.sql("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs), "
                        "(SELECT count(*) FROM subscriptions)")[0]
        return {"events/jobs/subscriptions": counts, "xlen": rc.xlen(harness.JOBS),
                "live": rc.call("SCARD", harness.LIVE),
                "index": sorted(rc.call("KEYS", harness.event_key("*")))}

    before = snapshot()
    yield
    assert snapshot() == before, "a refused request wrote something"


@pytest.fixture
def receiver():
    """Factory: receiver(statuses=[500, 200], delay=0, headers=None, body=None) -> a running
    Receiver, closed at the end of the test."""
    made = []

    def make(statuses=200, delay=0.0, headers=None, responder=None, name=None, body=None):
        r = Receiver(statuses, delay, headers, responder, name=name or f"receiver{len(made) + 1}",
                     body=body)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# --- observations printed at the end of the run (shown even with -q and without -s) ----------

_REPORT = []


@pytest.fixture
def report(request):
    """report(text): a line for the run's summary, e.g. a duplicate count."""

    def add(text):
        print(text)
        _REPORT.append(f"{request.node.nodeid}: {text}")

    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("webhook integration observations")
        for line in _REPORT:
            terminalreporter.write_line(line)


# --- per-test guard rails and failure reports ---------------------------------------------------


def _on_alarm(signum, frame):
    raise TimeoutError(f"test ran longer than {TEST_TIMEOUT}s (WH_TEST_TIMEOUT)")


@pytest.fixture(autouse=True)
def _deadline():
    """Turns a hung test into a failure (waits are bounded anyway; this is the backstop)."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._wh_started = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, append the log tails of the processes that ran during the test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for p in harness.recent_processes(getattr(item, "_wh_started", 0)):
            rep.sections.append((f"{p.name} (pid {p.pid}) log", p.log_tail(80)))
