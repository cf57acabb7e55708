"""Reconnection of the shared connection code (common/pg.c, common/rds.c): a PostgreSQL port
that refuses connections for several reconnect cycles, and a Redis that requires a password
(wrong one, then right one). Under WH_SAN=1 the processes are ASan+UBSan builds and their logs
are scanned for sanitizer reports when they stop."""

import subprocess
import uuid

import pytest

from conftest import need
from harness import (_NOT_READY_RE, _READY_RE, API_KEY, SANITIZER_MARKERS, START_TIMEOUT, Broker, Proc,
                     RedisClient, RedisError, RedisServer, Worker, base_env, binary, free_port,
                     stop_all, unique_name, wait_until)

PG_FAILED = "PostgreSQL connection failed"


def count_lines(proc, text):
    return sum(text in line for line in proc.log_text().splitlines())


class _DeadDb:
    """A database nobody serves: a loopback port with nothing listening (the refusal comes
    while libpq polls the connect), or a socket directory without a server (connect() fails
    inside PQconnectStart itself)."""

    def __init__(self, kind, tmp_path):
        if kind == "tcp":
            self.url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
        else:
            sockdir = tmp_path / "nopg"
            sockdir.mkdir()
            self.url = f"host={sockdir} port={free_port()} dbname=nothing user=postgres"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_refused_postgres_reconnects_cleanly(binaries, redis, tmp_path, kind):
    """A refused PostgreSQL for several reconnect cycles. When PQconnectStart fails at once,
    the error message must be copied before the connection is finished (it was logged after
    PQfinish freed it: a use-after-free under ASan). Broker and worker retry with backoff,
    never report ready, and stop cleanly."""
    need("webhook-worker")
    dead = _DeadDb(kind, tmp_path)
    procs = [Broker(tmp_path, redis, dead, name="broker-nopg"),
             Worker(tmp_path, redis, dead, name="worker-nopg")]
    try:
        for p in procs:
            Proc.start(p)
        for p in procs:
            wait_until(lambda p=p: count_lines(p, PG_FAILED) >= 3 or not p.alive(), 30,
                       f"{p.name} to log {PG_FAILED!r} three times")
            assert p.alive(), f"{p.name} exited\n{p.log_tail()}"
            failed = [l for l in p.log_text().splitlines() if PG_FAILED in l]
            assert all(("refused" in l or "No such file" in l) and "retrying in" in l
                       for l in failed), p.log_tail()
        broker = procs[0]
        assert broker.api.get("/readyz", timeout=5)[0] == 503
    finally:
        stop_all(procs)


# --- Redis with a password --------------------------------------------------------------------

PASSWORD = "right-" + uuid.uuid4().hex
WRONG = "wrong-" + uuid.uuid4().hex


class _AuthRedis(RedisServer):
    """redis-server with --requirepass PASSWORD; url() gives the URL with any password."""

    def __init__(self, tmpdir):
        super().__init__(tmpdir, name="redis-auth")
        self.proc.argv += ["--requirepass", PASSWORD]

    def client(self):
        c = RedisClient(self.port)
        c.call("AUTH", PASSWORD)
        return c

    def start(self, timeout=START_TIMEOUT):
        self.proc.start()

        def pong():
            assert self.proc.alive(), self.proc.log_tail()
            try:
                with self.client() as c:
                    return c.call("PING") == "PONG"
            except (OSError, RedisError):
                return False

        wait_until(pong, timeout, f"redis-server on port {self.port} to answer PING")
        return self


class _Url:
    def __init__(self, url):
        self.url = url


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory):
    server = _AuthRedis(tmp_path_factory.mktemp("redis-auth"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _no_secret(proc):
    text = proc.log_text()
    assert PASSWORD not in text and WRONG not in text, f"a password is in {proc.log_path}"


@pytest.mark.parametrize("url_tail, refused", [(f":{WRONG}@", "AUTH"), (f"u:{PASSWORD}@", None)],
                         ids=["wrong-password", "unknown-db"])
def test_redis_refusals_are_clear_and_never_ready(binaries, auth_redis, db, tmp_path, url_tail,
                                                  refused):
    """A wrong password (AUTH refused) or a database Redis does not have (SELECT refused):
    broker and worker log one clear line per attempt, retry with backoff, never report ready,
    and no password reaches a log."""
    need("webhook-worker")
    db_index = "" if refused else "/40"  # redis-server has 16 databases by default
    refused = refused or "SELECT"
    url = f"redis://{url_tail}127.0.0.1:{auth_redis.port}{db_index}"
    line = f"refused {refused}:"
    procs = [Broker(tmp_path, _Url(url), db, name="broker-badredis"),
             Worker(tmp_path, _Url(url), db, name="worker-badredis")]
    try:
        for p in procs:
            Proc.start(p)
        for p in procs:
            wait_until(lambda p=p: count_lines(p, line) >= 3 or not p.alive(), 30,
                       f"{p.name} to log {line!r} three times")
            assert p.alive(), p.log_tail()
            text = p.log_text()
            assert "connected to Redis" not in text, p.log_tail()
            expect = "WRONGPASS" if refused == "AUTH" else "DB index is out of range"
            assert all(expect in l for l in text.splitlines() if line in l), p.log_tail()
        broker, worker = procs
        st, _, data = broker.api.get("/readyz", timeout=5)
        assert st == 503 and data.get("redis") == "down", (st, data)
        assert not any(_READY_RE.search(l) and not _NOT_READY_RE.search(l)
                       for l in worker.log_text().splitlines()), worker.log_tail()
    finally:
        stop_all(procs)
    for p in procs:
        _no_secret(p)


def test_redis_right_password_works(binaries, auth_redis, db, tmp_path, receiver):
    """The right password and a database number: ready, and a triggered event is delivered
    through database 3 of the password-protected Redis."""
    need("webhook-worker")
    url = f"redis://user:{PASSWORD}@127.0.0.1:{auth_redis.port}/3"
    broker = Broker(tmp_path, _Url(url), db, name="broker-auth")
    worker = Worker(tmp_path, _Url(url), db, name="worker-auth")
    procs = [broker, worker]
    try:
        broker.start()
        worker.start()
        r = receiver()
        event = unique_name("auth")
        broker.api.register(event, r.url())
        data = broker.api.trigger(event, b'{"a": 1}')
        assert data["jobs"] == 1, data
        r.wait_for(1)
        with auth_redis.client() as c:
            c.call("SELECT", "3")
            assert c.call("EXISTS", f"wh:event:{event}") == 1
            c.call("SELECT", "0")
            assert c.call("EXISTS", f"wh:event:{event}") == 0
    finally:
        stop_all(procs)
    for p in procs:
        _no_secret(p)


def test_reconciler_checks_auth(binaries, auth_redis, db):
    """The reconciler (sync hiredis) stops a pass on a refused AUTH with a clear message and
    no password; with the right one the pass runs."""
    env = dict(base_env({"DATABASE_URL": db.url, "LOG_LEVEL": "info"}))

    def run(url):
        out = subprocess.run([str(binary("webhook-reconciler")), "--once"],
                             env={**env, "REDIS_URL": url}, capture_output=True, timeout=60)
        text = (out.stdout + out.stderr).decode(errors="replace")
        assert not any(m in text for m in SANITIZER_MARKERS), text
        assert PASSWORD not in text and WRONG not in text, text
        return out.returncode, text

    rc, text = run(f"redis://:{WRONG}@127.0.0.1:{auth_redis.port}")
    assert rc != 0 and "refused AUTH: WRONGPASS" in text, text
    rc, text = run(f"redis://:{PASSWORD}@127.0.0.1:{auth_redis.port}/40")
    assert rc != 0 and "refused SELECT" in text, text
    rc, text = run(f"redis://:{PASSWORD}@127.0.0.1:{auth_redis.port}")
    assert rc == 0 and "pass done" in text, text


def test_config_error_masks_password(binaries):
    """A malformed REDIS_URL is refused at start-up with the URL shown, password masked."""
    need("webhook-worker")
    env = {"BROKER_LISTEN": "127.0.0.1:0", "WEBHOOK_API_KEYS": API_KEY}
    for url in (f"redis://:{WRONG}@127.0.0.1:99999", f"rediss://u:{WRONG}@127.0.0.1"):
        for name in ("webhook-broker", "webhook-worker"):
            out = subprocess.run([str(binary(name))], env=base_env({**env, "REDIS_URL": url}),
                                 capture_output=True, timeout=30)
            text = (out.stdout + out.stderr).decode(errors="replace")
            assert out.returncode != 0, text
            assert "REDIS_URL" in text and ":****@127.0.0.1" in text, text
            assert WRONG not in text, text
