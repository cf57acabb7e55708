"""Reconnection of the shared connection code (common/pg.c, common/rds.c): a PostgreSQL port
that refuses connections for several reconnect cycles, and a Redis that requires a password
(wrong one, then right one). Under WH_SAN=1 the processes are ASan+UBSan builds and their logs
are scanned for sanitizer reports when they stop."""

import re

import pytest

from harness import Broker, RedisServer, Proc, Worker, free_port, unique_name, wait_until
from conftest import need

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
        errors = []
        for p in procs:
            try:
                if p.alive():
                    p.stop()
                else:
                    p.kill()
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "\n".join(errors)
