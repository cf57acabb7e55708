"""Idempotent triggers: an Idempotency-Key on POST /api/v0/trigger-event/<name> makes a repeat
within 24 hours answer the first event (same eventId and job count, 202) and create nothing,
whether it comes later, in the same group commit, while the first one's commit is in flight,
or through another broker; a key reused with another event name or payload answers 422; a key
older than 24 hours is free again, and the reconciler clears such keys in batches.

Batches are built deterministically as in test_commit_bounds: a psql session holds a lock on
`events`, so the first keyed commit waits (in flight) and the triggers after it wait in the
keyed queue; each keyed trigger logs a line when it joins that queue."""

import hashlib
import http.client
import json
import threading

import pytest

from harness import (AUTH, Headers, OpenTransaction, TableLock, assert_error, lock_waiters,
                     run_reconciler, sql_quote, unique_name, wait_until)

QUEUED = "goes to the keyed commit"


def post(api, event, payload, key=None, headers=None):
    """A trigger with the Idempotency-Key key (None: no header); (status, headers, body)."""
    if isinstance(payload, str):
        payload = payload.encode()
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Idempotency-Key"] = key
    return api.post(f"/api/v0/trigger-event/{event}", payload, headers=hdrs, timeout=60)


def raw_post(port, event, payload, header_lines):
    """A trigger sent with http.client's putheader, so a header can repeat or carry any byte
    (values given as bytes go out as they are)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest("POST", f"/api/v0/trigger-event/{event}")
        conn.putheader("Authorization", AUTH["Authorization"])
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(payload)))
        for name, value in header_lines:
            conn.putheader(name, value)
        conn.endheaders(payload)
        resp = conn.getresponse()
        return resp.status, Headers(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


def fire(api, event, payload, key, results):
    """post() in a thread; its result is appended to results."""
    t = threading.Thread(target=lambda: results.append(post(api, event, payload, key)))
    t.start()
    return t


def register(api, event, n):
    for i in range(n):
        api.register(event, f"http://127.0.0.1:9/idem/{event}/{i}")


def events_named(db, event):
    return db.count("events", f"event_name = {sql_quote(event)}")


def enqueued(rc, event):
    """Job stream entries of an event name (no worker runs in this module: nothing is read)."""
    return [e for e in rc.stream_jobs() if e["n"] == event]


def key_row(db, key):
    """(event id, idempotency_jobs, hex SHA-256) of the event holding key, or None."""
    rows = db.sql("SELECT id, idempotency_jobs, encode(idempotency_sha256, 'hex') FROM events "
                  f"WHERE idempotency_key = {sql_quote(key)}")
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def queued_lines(broker):
    return broker.log_text().count(QUEUED)


def test_repeats_answer_the_first_event(api, db, rc):
    event = unique_name("idem.seq")
    register(api, event, 2)
    key = unique_name("key-seq")
    payload = '{"order":42}'
    st, h, first = post(api, event, payload, key)
    assert st == 202, first
    assert first["jobs"] == 2 and first["eventName"] == event, first
    assert "Idempotent-Replayed" not in h
    for _ in range(3):
        st, h, again = post(api, event, payload, key)
        assert st == 202, again
        assert again == first
        assert h.get("Idempotent-Replayed") == "true"
    # One event, its two jobs, enqueued once; the key's row holds the payload's digest.
    assert events_named(db, event) == 1
    assert len(db.jobs(first["eventId"])) == 2
    assert sorted(e["e"] for e in enqueued(rc, event)) == [first["eventId"]] * 2
    assert key_row(db, key) == (first["eventId"], "2",
                                hashlib.sha256(payload.encode()).hexdigest())


def test_repeat_answers_the_original_job_count(api, db, rc):
    """The job count answered is what the first event created, not what a new one would."""
    event = unique_name("idem.count")
    key = unique_name("key-count")
    first = api.trigger(event, b"[]", headers={"Idempotency-Key": key})
    assert first["jobs"] == 0
    register(api, event, 3)
    st, _, again = post(api, event, "[]", key)
    assert (st, again) == (202, first)
    assert events_named(db, event) == 1 and enqueued(rc, event) == []
    # Another key creates a new event, with the jobs of now.
    other = api.trigger(event, b"[]", headers={"Idempotency-Key": key + "-2"})
    assert other["jobs"] == 3 and other["eventId"] != first["eventId"]


def test_without_key_every_trigger_is_new(broker, api, db):
    """Without a key every trigger creates an event, through the plain commit (the keyed
    commit's log line never appears)."""
    event = unique_name("idem.none")
    register(api, event, 1)
    before = queued_lines(broker)
    a = api.trigger(event, b"{}")
    b = api.trigger(event, b"{}")
    assert a["eventId"] != b["eventId"]
    assert queued_lines(broker) == before
    assert db.count("events", f"event_name = {sql_quote(event)} AND idempotency_key IS NULL "
                              "AND idempotency_at IS NULL AND idempotency_sha256 IS NULL "
                              "AND idempotency_jobs IS NULL") == 2


def test_twenty_concurrent_duplicates_in_one_batch(broker, api, db, rc):
    """20 triggers with one key in one group commit (queued behind a held commit): one event;
    a 21st with the same key and another payload in that batch gets 422."""
    event = unique_name("idem.batch")
    register(api, event, 2)
    key = unique_name("key-batch")
    results, threads = [], []
    odd = []
    lock = TableLock(db)
    try:
        before = queued_lines(broker)
        blocker = fire(api, unique_name("idem.blocker"), "{}", unique_name("key-blocker"), [])
        wait_until(lambda: lock_waiters(db) == 1, 15, "the blocker's commit to wait for the lock")
        for _ in range(20):
            threads.append(fire(api, event, '{"n":1}', key, results))
        wait_until(lambda: queued_lines(broker) == before + 21, 15,
                   "20 keyed triggers to wait in the keyed queue")
        threads.append(fire(api, event, '{"n":2}', key, odd))  # last in the batch
        wait_until(lambda: queued_lines(broker) == before + 22, 15,
                   "the odd one to wait in the keyed queue")
        assert events_named(db, event) == 0
    finally:
        lock.release()
        blocker.join(60)
        for t in threads:
            t.join(60)
    assert len(results) == 20
    assert all(st == 202 for st, _, _ in results), results
    ids = {data["eventId"] for _, _, data in results}
    assert len(ids) == 1, results
    assert all(data["jobs"] == 2 for _, _, data in results), results
    assert sum(h.get("Idempotent-Replayed") == "true" for _, h, _ in results) == 19
    assert len(odd) == 1
    err = assert_error(odd[0], 422, "idempotency_key_reused")
    assert "payload" in err["message"] and "event name" not in err["message"], err
    eid = ids.pop()
    assert events_named(db, event) == 1
    assert len(db.jobs(eid)) == 2
    assert sorted(e["e"] for e in enqueued(rc, event)) == [eid] * 2


def test_duplicates_while_the_first_commit_is_in_flight(broker, api, db, rc):
    event = unique_name("idem.flight")
    register(api, event, 1)
    key = unique_name("key-flight")
    first, later, threads = [], [], []
    lock = TableLock(db)
    try:
        before = queued_lines(broker)
        threads.append(fire(api, event, "{}", key, first))
        wait_until(lambda: lock_waiters(db) == 1, 15, "the first commit to wait for the lock")
        for _ in range(5):
            threads.append(fire(api, event, "{}", key, later))
        wait_until(lambda: queued_lines(broker) == before + 6, 15,
                   "the repeats to wait in the keyed queue")
    finally:
        lock.release()
        for t in threads:
            t.join(60)
    st, h, orig = first[0]
    assert st == 202 and orig["jobs"] == 1 and "Idempotent-Replayed" not in h, first
    for st, h, data in later:
        assert (st, data, h.get("Idempotent-Replayed")) == (202, orig, "true")
    assert events_named(db, event) == 1
    assert [e["e"] for e in enqueued(rc, event)] == [orig["eventId"]]


def test_duplicate_of_a_transaction_in_flight_elsewhere(broker, api, db, rc):
    """Another broker's commit is played by a psql transaction that has inserted the key's
    event and not committed: the trigger waits on the unique index, and once that commits
    answers with its event, which committed after the trigger's statement began (a SELECT in
    that statement could not see it)."""
    event = unique_name("idem.elsewhere")
    register(api, event, 1)
    key = unique_name("key-elsewhere")
    payload = '{"from":"elsewhere"}'
    theirs = "01a23456-0000-7000-8000-0000000000e1"
    digest = hashlib.sha256(payload.encode()).hexdigest()
    other = OpenTransaction(db, (
        "INSERT INTO events (id, event_name, payload, idempotency_key, idempotency_at, "
        f"idempotency_sha256, idempotency_jobs) VALUES ('{theirs}', {sql_quote(event)}, "
        f"convert_to({sql_quote(payload)}, 'UTF8'), {sql_quote(key)}, now(), "
        f"decode('{digest}', 'hex'), 4);"))
    results = []
    try:
        t = fire(api, event, payload, key, results)
        wait_until(lambda: lock_waiters(db) == 1, 15, "the commit to wait for the other's key")
        assert results == []
    finally:
        other.release()
        t.join(60)
    st, h, data = results[0]
    assert (st, data, h.get("Idempotent-Replayed")) == (
        202, {"eventId": theirs, "eventName": event, "tenant": None, "jobs": 4}, "true")
    assert events_named(db, event) == 1 and enqueued(rc, event) == []


def test_duplicates_through_two_brokers(broker, start_broker, api, db, rc):
    """Both brokers' commits wait on the lock with the same key; once it is released one
    inserts and the other answers the winner's event."""
    other = start_broker(name="broker-idem-2")
    # Its keyed statement is prepared before the lock, as the module broker's is.
    other.api.trigger(unique_name("idem.warm"), b"{}", headers={"Idempotency-Key": unique_name("w")})
    event = unique_name("idem.two")
    register(api, event, 2)
    key = unique_name("key-two")
    results, threads = [], []
    lock = TableLock(db)
    try:
        b1, b2 = queued_lines(broker), queued_lines(other)
        for i in range(20):
            threads.append(fire(api if i % 2 else other.api, event, '{"x":[1,2]}', key, results))
        wait_until(lambda: queued_lines(broker) == b1 + 10 and queued_lines(other) == b2 + 10,
                   15, "10 keyed triggers queued in each broker")
        wait_until(lambda: lock_waiters(db) == 2, 15, "both brokers' commits to wait")
    finally:
        lock.release()
        for t in threads:
            t.join(60)
    assert len(results) == 20 and all(st == 202 for st, _, _ in results), results
    ids = {data["eventId"] for _, _, data in results}
    assert len(ids) == 1 and all(data["jobs"] == 2 for _, _, data in results), results
    eid = ids.pop()
    assert events_named(db, event) == 1 and len(db.jobs(eid)) == 2
    assert sorted(e["e"] for e in enqueued(rc, event)) == [eid] * 2


def test_key_reused_differently_is_refused(api, db, rc):
    event, other = unique_name("idem.reuse"), unique_name("idem.reuse-other")
    register(api, event, 1)
    register(api, other, 1)
    key = unique_name("key-reuse")
    first = api.trigger(event, b'{"a":1}', headers={"Idempotency-Key": key})
    cases = [
        (event, '{"a": 1}', "payload"),  # the same JSON, other bytes: bytes count
        (other, '{"a":1}', "event name"),
        (other, '{"a":2}', "event name and payload"),
    ]
    for name, payload, what in cases:
        err = assert_error(post(api, name, payload, key), 422, "idempotency_key_reused")
        assert err["message"].endswith("nothing was written") and f"different {what};" in \
            err["message"], err
    assert events_named(db, event) == 1 and events_named(db, other) == 0
    assert [e["e"] for e in enqueued(rc, event)] == [first["eventId"]]
    assert enqueued(rc, other) == []
    st, _, again = post(api, event, '{"a":1}', key)
    assert (st, again) == (202, first)


BAD_KEYS = {
    "empty": "",
    "too_long": "k" * 256,
    "latin1": "caf\xe9",
    "utf8": "caf\xc3\xa9".encode("latin-1"),
    "control": "a\x01b",
    "tab": "a\tb",
    "delete": "a\x7fb",
    "nul": b"ab\x00cd",  # refused by the connection layer before evhttp cuts it to "ab"
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_invalid_key_is_refused(broker, db, case):
    event = unique_name("idem.bad")
    resp = raw_post(broker.port, event, b"{}", [("Idempotency-Key", BAD_KEYS[case])])
    err = assert_error(resp, 400, "invalid_field")
    assert "Idempotency-Key" in err["message"], err
    assert events_named(db, event) == 0


def test_repeated_header_is_refused(broker, db):
    event = unique_name("idem.twice")
    resp = raw_post(broker.port, event, b"{}", [("Idempotency-Key", "a"), ("idempotency-key", "a")])
    err = assert_error(resp, 400, "invalid_field")
    assert "Idempotency-Key" in err["message"], err
    assert events_named(db, event) == 0


def test_key_edges_are_accepted(api, db):
    """255 bytes, spaces and characters that need quoting in an SQL array literal."""
    event = unique_name("idem.edge")
    for i, key in enumerate(("~" * 255, 'a b/c:d"e\\f{g},h', "NULL", "x y")):
        first = api.trigger(event, str(i).encode(), headers={"Idempotency-Key": key})
        assert post(api, event, str(i), key)[2] == first
        assert key_row(db, key)[0] == first["eventId"]


def age(db, key, interval):
    db.sql(f"UPDATE events SET idempotency_at = idempotency_at - interval '{interval}' "
           f"WHERE idempotency_key = {sql_quote(key)}")


def test_key_expires_after_24_hours(api, db, rc):
    """A key first used 23 h ago still holds its event; once 24 h old (the reconciler has not
    run) it is free: a new event, even with another payload, which then holds the key."""
    event = unique_name("idem.expiry")
    register(api, event, 1)
    key = unique_name("key-expiry")
    first = api.trigger(event, b'{"v":1}', headers={"Idempotency-Key": key})
    age(db, key, "23 hours")
    assert post(api, event, '{"v":1}', key)[2] == first
    age(db, key, "1 hour")
    st, h, second = post(api, event, '{"v":2}', key)
    assert st == 202 and "Idempotent-Replayed" not in h, second
    assert second["eventId"] != first["eventId"] and second["jobs"] == 1
    assert key_row(db, key)[0] == second["eventId"]
    # The old event lost the key, not its data.
    assert db.sql(f"SELECT idempotency_key, idempotency_at FROM events WHERE id = "
                  f"{sql_quote(first['eventId'])}") == [(None, None)]
    assert len(db.jobs(first["eventId"])) == 1
    assert post(api, event, '{"v":2}', key)[2] == second
    assert sorted(e["e"] for e in enqueued(rc, event)) == sorted(
        [first["eventId"], second["eventId"]])


def test_reconciler_clears_expired_keys_in_batches(api, db, redis):
    event = unique_name("idem.purge")
    old = [unique_name(f"key-old{i}") for i in range(25)]
    fresh = unique_name("key-fresh")
    for k in old + [fresh]:
        api.trigger(event, b"{}", headers={"Idempotency-Key": k})
    for k in old:
        age(db, k, "25 hours")
    _, text = run_reconciler(redis, db, "--dry-run", RECONCILE_BATCH=10)
    assert "would clear at least" in text and "Idempotency-Keys" in text, text
    assert all(key_row(db, k) for k in old)
    _, text = run_reconciler(redis, db, RECONCILE_BATCH=10)
    assert "cleared 25 Idempotency-Keys older than 24 hours" in text, text
    assert not any(key_row(db, k) for k in old)
    assert db.count("events", f"event_name = {sql_quote(event)} AND idempotency_key IS NULL AND "
                              "idempotency_at IS NULL AND idempotency_sha256 IS NULL AND "
                              "idempotency_jobs IS NULL") == 25
    assert key_row(db, fresh) is not None
    assert events_named(db, event) == 26
