"""Group commit bounds by jobs and bytes: a batch never passes COMMIT_MAX_JOBS /
COMMIT_MAX_BYTES (an event larger than that goes alone), and once the triggers waiting for a
commit would pass MAX_PENDING_JOBS / MAX_PENDING_BYTES, a trigger gets 503 with Retry-After and
writes nothing, while every accepted one is committed.

The queue is made to build up deterministically: a test session holds an EXCLUSIVE lock on
`events`, so the first commit waits on it (in flight) and the next triggers wait in the queue."""

import re
import threading

import pytest

from harness import TableLock, lock_waiters, unique_name, wait_until

COMMITTED_RE = re.compile(r"commit: committed (\d+) events, (\d+) jobs, (\d+) bytes")


def commit_waiting(db):
    """True once a session (the broker's commit) waits for the lock on events."""
    return lock_waiters(db) > 0


def fire(api, event, payload, results):
    """A trigger in a thread; (status, Retry-After, body) appended to results."""

    def run():
        st, h, data = api.post(f"/api/v0/trigger-event/{event}", payload, timeout=60)
        results.append((st, h.get("Retry-After"), data))

    t = threading.Thread(target=run)
    t.start()
    return t


def batches(broker):
    return [tuple(map(int, m.groups())) for m in COMMITTED_RE.finditer(broker.log_text())]


# Per case: broker settings, subscribers per event, payload size, triggers queued behind the
# one in flight, how many of them fit in the queue, and the bound named in the 503.
CASES = {
    # ~40 kB per event (payload hex-encoded): 2 per batch under 100 000 bytes, 6 waiting under
    # 262 144 bytes.
    "bytes": (dict(COMMIT_MAX_BYTES=100000, MAX_PENDING_BYTES=262144), 1, 20000, 9, 6,
              "MAX_PENDING_BYTES"),
    # 3 jobs per event: 1 per batch under 5 jobs, 3 waiting under 10 jobs.
    "jobs": (dict(COMMIT_MAX_JOBS=5, MAX_PENDING_JOBS=10), 3, 10, 5, 3, "MAX_PENDING_JOBS"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batches_and_queue_bounded(start_broker, db, case):
    env, subs, size, queued, fit, bound = CASES[case]
    broker = start_broker(name=f"broker-{case}", **env)
    api = broker.api
    event = unique_name(f"bounds.{case}")
    for i in range(subs):
        api.register(event, f"http://127.0.0.1:9/{case}/{i}")
    payload = b'{"pad":"' + b"x" * size + b'"}'
    batch_bytes = env.get("COMMIT_MAX_BYTES")
    batch_jobs = env.get("COMMIT_MAX_JOBS")

    results, threads = [], []
    lock = TableLock(db)
    try:
        threads.append(fire(api, event, payload, results))
        wait_until(lambda: commit_waiting(db), 15, "the first commit to wait for the lock")
        for _ in range(queued):
            threads.append(fire(api, event, payload, results))
        # The refused ones are answered at once, while the others wait.
        wait_until(lambda: len(results) == queued - fit, 15,
                   f"{queued - fit} triggers to be refused")
        for st, retry_after, data in results:
            assert st == 503 and retry_after == "1", (st, retry_after, data)
            assert data["error"]["code"] == "unavailable" and bound in data["error"]["message"], \
                data
        assert db.count("events", f"event_name = '{event}'") == 0
    finally:
        lock.release()
        for t in threads:
            t.join(60)

    accepted = [r for r in results if r[0] == 202]
    assert len(accepted) == 1 + fit, results
    assert len(results) == 1 + queued
    # Nothing lost, nothing extra: every 202 is in PostgreSQL with its jobs, the 503s are not.
    assert db.count("events", f"event_name = '{event}'") == 1 + fit
    for _, _, data in accepted:
        assert data["jobs"] == subs, data
        assert len(db.jobs(data["eventId"])) == subs

    got = batches(broker)
    assert sum(n for n, _, _ in got) == 1 + fit, got
    for n, jobs, nbytes in got:
        if batch_bytes:
            assert n == 1 or nbytes <= batch_bytes, got
        if batch_jobs:
            assert n == 1 or jobs <= batch_jobs, got
    # The first event went alone (the queue was empty); the waiting ones were split.
    assert got[0][0] == 1, got
    expect_per_batch = 2 if case == "bytes" else 1
    assert all(n == expect_per_batch for n, _, _ in got[1:]), got


def test_event_larger_than_batch_goes_alone(start_broker, db):
    """An event alone past COMMIT_MAX_BYTES is committed on its own, not refused."""
    broker = start_broker(name="broker-large", COMMIT_MAX_BYTES=10000)
    event = unique_name("bounds.large")
    broker.api.register(event, "http://127.0.0.1:9/large")
    data = broker.api.trigger(event, b'{"pad":"' + b"y" * 30000 + b'"}')
    assert data["jobs"] == 1
    assert db.count("events", f"event_name = '{event}'") == 1
    n, jobs, nbytes = batches(broker)[-1]
    assert (n, jobs) == (1, 1) and nbytes > 10000
