"""Fixtures of the integration suite: one PostgreSQL per session (one database per module), one
redis-server per module, the broker per module, workers and HTTP receivers per test."""

import os
import re
import signal
import time

import pytest

import harness
from harness import Broker, PgServer, Receiver, RedisServer, Worker

TEST_TIMEOUT = float(os.environ.get("WH_TEST_TIMEOUT", "180"))


def _module_name(request):
    return re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())


# --- binaries ---------------------------------------------------------------------------------


def need(*names):
    """Skips when a binary is not built, unless WH_BUILD_DIR was given (make sets it): then a
    missing binary is a failure."""
    missing = [n for n in harness.binaries_missing() if n in names]
    if missing:
        msg = f"not built in {harness.BUILD_DIR}: {', '.join(missing)}"
        if os.environ.get("WH_BUILD_DIR"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def binaries():
    need("webhook-broker")
    return harness.BUILD_DIR


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


@pytest.fixture
def start_worker(binaries, redis, db, broker, tmp_path):
    """Factory: start_worker(NAME=value, ...) -> a ready Worker on the module's Redis and
    database. Every worker still running at the end is stopped with SIGTERM and must exit 0.
    Depends on broker so the schema is migrated first."""
    need("webhook-worker")
    workers = []

    def start(name=None, **env):
        w = Worker(tmp_path, redis, db, {k: str(v) for k, v in env.items()},
                   name=name or f"worker{len(workers) + 1}")
        workers.append(w)
        return w.start()

    yield start
    errors = []
    for w in workers:
        try:
            if w.alive():
                w.stop()
            else:
                w.kill()  # reaps and scans the log
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def start_broker(binaries, redis, db, tmp_path):
    """Factory for extra brokers with overrides: start_broker(MAX_BODY_BYTES=1024)."""
    brokers = []

    def start(name=None, **env):
        b = Broker(tmp_path, redis, db, {k: str(v) for k, v in env.items()},
                   name=name or f"broker{len(brokers) + 2}")
        brokers.append(b)
        return b.start()

    yield start
    errors = []
    for b in brokers:
        try:
            if b.alive():
                b.stop()
            else:
                b.kill()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


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
