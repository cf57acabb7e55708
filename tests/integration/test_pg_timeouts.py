"""The daemons' PostgreSQL sessions (docs/decisions.md 51): a statement has 25 s
(statement_timeout, under the 30 s after which common/pg.c gives up on a connection), so a slow
one fails alone with a 503 and the connection goes on serving the requests behind it; and a
backend whose client has gone stops within client_connection_check_interval (5 s) instead of
running on for nobody. The slow statement is a read of delivery_switch while this test holds
an ACCESS EXCLUSIVE lock on it."""

import re
import signal
import subprocess
import threading
import time

from harness import wait_until


class LockHolder:
    """A psql session holding ACCESS EXCLUSIVE on a table until release()."""

    def __init__(self, db, table):
        pg = db.pg
        self.proc = subprocess.Popen(
            [str(pg.bindir / "psql"), "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(pg.port),
             "-U", "postgres", "-d", db.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pg.env)
        self.proc.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; "
                              f"SELECT 'locked';\n".encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode().strip()
        assert line == "locked", f"psql did not take the lock: {line!r}"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(b"ROLLBACK;\n")
            self.proc.stdin.close()
            self.proc.wait(10)


def lock_waiters(db):
    """Backends of this database waiting for a lock (pids as str)."""
    return [r[0] for r in db.sql("SELECT pid::text FROM pg_stat_activity WHERE datname = "
                                 f"'{db.name}' AND wait_event_type = 'Lock'")]


def test_slow_statement_fails_alone_and_the_connection_serves_on(api, broker, db):
    holder = LockHolder(db, "delivery_switch")
    try:
        t0 = time.monotonic()
        status, _, body = api.get("/api/v0/admin/delivery", timeout=45)
        took = time.monotonic() - t0
        assert status == 503, (status, body)
        assert body["error"]["code"] == "unavailable"
        assert "did not finish this request within 25 s" in body["error"]["message"], body
        assert 24 <= took < 30, f"answered after {took:.1f} s"
        # The same connection answers the next request at once: it was not dropped.
        t1 = time.monotonic()
        status, _, _ = api.get("/api/v0/webhooks?limit=1")
        assert status == 200 and time.monotonic() - t1 < 5
        assert not lock_waiters(db), "the cancelled statement still waits"
    finally:
        holder.release()
    assert api.get("/api/v0/admin/delivery")[0] == 200
    assert "PostgreSQL connection lost" not in broker.log_text()


def test_backend_of_a_killed_broker_stops(start_broker, db):
    extra = start_broker()
    holder = LockHolder(db, "delivery_switch")
    try:
        answers = []
        t = threading.Thread(target=lambda: answers.append(
            _get_or_error(extra, "/api/v0/admin/delivery")), daemon=True)
        t.start()
        waiting = wait_until(lambda: lock_waiters(db), 10, "the broker's statement to wait")
        extra.send(signal.SIGKILL)
        t_kill = time.monotonic()
        wait_until(lambda: not set(waiting) & set(lock_waiters(db)), 15,
                   "the killed broker's backend to stop while the lock is still held", 0.2)
        gone = time.monotonic() - t_kill
        t.join(10)
        assert answers and answers[0] is None, answers  # the broker died: no answer
        assert gone < 12, f"the backend stopped {gone:.1f} s after its client was killed"
    finally:
        holder.release()


def _get_or_error(broker, path):
    try:
        return broker.api.get(path, timeout=40)[0]
    except OSError:
        return None


def test_slow_metrics_sample_spaces_the_next_ones(start_broker, db):
    """The database gauges (broker/sample.c, docs/decisions.md 53) cost at most about 2 % of a
    PostgreSQL core: a sample that took T makes the next one wait 50 T. Here a sample waits
    2 s on a lock held on jobs, so the next is due 100 s or more later, not in 1 s."""
    extra = start_broker(METRICS_SAMPLE_INTERVAL="1")
    wait_until(lambda: "wh_jobs_dead 0" in extra.api.get("/metrics")[2].decode(), 10,
               "a first sample")
    holder = LockHolder(db, "jobs")
    try:
        wait_until(lambda: lock_waiters(db), 10, "the metrics sample to wait on the lock")
        time.sleep(2)
    finally:
        holder.release()
    line = wait_until(lambda: re.search(r"the database gauges took (\d+) ms: the next sample in "
                                        r"(\d+) s", extra.log_text()), 10, "the spacing log line")
    took, wait = int(line.group(1)), int(line.group(2))
    assert took >= 2000 and wait >= 100 and wait * 1000 >= 50 * took - 1000, (took, wait)
