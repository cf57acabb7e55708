"""Deferred fan-out (docs/decisions.md 54): an event with FANOUT_DEFER_JOBS jobs or more is
committed with its job list in its own row and answered; the job rows are written by a second
statement on the broker's fan-out connection, then enqueued. The tests use FANOUT_DEFER_JOBS=5
on a broker of their own and 8 subscriptions.

- Every listed job is delivered exactly once, the lists are emptied, and an event below the
  threshold is written as before.
- The answer does not wait for the job rows: triggers are answered 202 while this test holds
  an ACCESS EXCLUSIVE lock on jobs, with the list (ids in order, subscriptions, partitions) in
  the event's row; the rows follow once the lock is released, except for a subscription
  disabled in between (the rows get a plain commit's subscription check).
- A broker SIGKILLed after its 202 and before the rows: the reconciler writes them (a dry run
  only reports), then requeues them; nothing lost, nothing twice. And an ordered subscription
  among the listed jobs keeps its order: a later event's job for it, written at once by another
  broker, waits for the listed one (the head rule counts listed jobs)."""

import json
import re
import time

from harness import run_reconciler, sql_quote, unique_name, wait_until
from test_pg_timeouts import LockHolder

SUBS = 8
DEFER = dict(FANOUT_DEFER_JOBS=5)
RECON = dict(RECONCILE_GRACE="0", RECONCILE_CONFIRM="0.2")


def register(api, url, **body):
    st, _, data = api.post("/api/v0/webhooks", {"webhookUrl": url, **body})
    assert st == 201, (st, data)
    return data


def register_fan(api, rec, event, n=SUBS):
    return [register(api, rec.url(f"/hook/{i}"), eventName=event) for i in range(n)]


def receipts(rec):
    """(path, seq) -> times received."""
    got = {}
    for r in rec.requests:
        key = (r.path, json.loads(r.body)["seq"])
        got[key] = got.get(key, 0) + 1
    return got


def fanout_waiting(db):
    """Backends running the fan-out statement (SCHEMA_FANOUT_SQL) and waiting for a lock."""
    return db.sql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{db.name}' "
                  "AND wait_event_type = 'Lock' AND query LIKE '%SET fanout = NULL%'")


def listed(db, event_id):
    """The event's waiting job list as [(job id, subscription id, partition)], or None."""
    row = db.sql(f"SELECT encode(fanout, 'hex') FROM events WHERE id = {sql_quote(event_id)}")
    assert row, f"no event {event_id}"
    if row[0][0] is None:
        return None
    raw = bytes.fromhex(row[0][0])
    assert len(raw) % 34 == 0, len(raw)

    def uid(b):
        h = b.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    return [(uid(raw[i:i + 16]), uid(raw[i + 16:i + 32]), int.from_bytes(raw[i + 32:i + 34], "big"))
            for i in range(0, len(raw), 34)]


def test_deferred_events_deliver_every_job_once(api, db, receiver, start_broker, start_worker):
    b = start_broker(QUEUE_PARTITIONS=4, **DEFER)
    plain = start_broker(QUEUE_PARTITIONS=4, FANOUT_DEFER_JOBS=0)
    rec = receiver(body=b"")
    event = unique_name("fan")
    register_fan(b.api, rec, event)
    small = unique_name("fan-small")
    register_fan(b.api, rec, small, 4)
    start_worker(QUEUE_PARTITIONS=4)
    ids = []
    for seq in range(20):
        data = b.api.trigger(event, {"seq": seq})
        assert data["jobs"] == SUBS, data
        ids.append(data["eventId"])
    data = b.api.trigger(small, {"seq": 100})
    assert data["jobs"] == 4, data
    # The same event through a broker that never defers: its jobs' partitions are the ones
    # the lists carried.
    plain_event = plain.api.trigger(event, {"seq": 200})["eventId"]
    want = {(f"/hook/{i}", s): 1 for i in range(SUBS) for s in list(range(20)) + [200]}
    want.update({(f"/hook/{i}", 100): 1 for i in range(4)})
    wait_until(lambda: rec.count() >= len(want), 30, f"{len(want)} deliveries")
    time.sleep(0.5)  # a duplicate would arrive now
    assert receipts(rec) == want
    in_list = ",".join(sql_quote(i) for i in ids)
    assert db.sql(f"SELECT count(*) FROM events WHERE id IN ({in_list}) "
                  f"AND fanout IS NULL")[0][0] == "20"
    wait_until(lambda: dict(db.sql(f"SELECT status, count(*) FROM jobs WHERE event_id IN "
                                   f"({in_list}) GROUP BY 1")) == {"delivered": str(20 * SUBS)},
               15, "every listed job recorded delivered")
    parts = db.sql(f"SELECT subscription_id, array_agg(DISTINCT partition) FROM jobs WHERE "
                   f"event_id IN ({in_list}, {sql_quote(plain_event)}) GROUP BY 1")
    assert len(parts) == SUBS and all(len(p.strip("{}").split(",")) == 1 for _, p in parts), parts
    assert len({p for _, p in parts}) > 1, f"every subscription in one partition: {parts}"
    # the URL of each job is its subscription's
    assert db.sql(f"SELECT count(*) FROM jobs j JOIN subscriptions s ON s.id = j.subscription_id "
                  f"WHERE j.event_id IN ({in_list}) AND j.url = s.url")[0][0] == str(20 * SUBS)


def test_answer_does_not_wait_for_job_rows(api, db, receiver, start_broker, start_worker):
    b = start_broker(**DEFER)
    rec = receiver(body=b"")
    event = unique_name("fan-lock")
    subs = register_fan(b.api, rec, event)
    start_worker()
    holder = LockHolder(db, "jobs")
    try:
        # Answered while nothing can write a job row: the rows are not part of the answer.
        answers = [b.api.trigger(event, {"seq": s}) for s in range(3)]
        assert all(a["jobs"] == SUBS for a in answers), answers
        for a in answers:
            entries = listed(db, a["eventId"])
            jobs = [j for j, _, _ in entries]
            assert len(jobs) == SUBS and jobs == sorted(jobs), entries
            assert {s for _, s, _ in entries} == {s["id"] for s in subs}
            assert {p for _, _, p in entries} == {0}, entries  # one partition here
        time.sleep(0.5)
        assert rec.count() == 0, "delivered before its job row was written"
        assert fanout_waiting(db), "the fan-out statement is not waiting for the lock"
        # A subscription disabled before the rows are written gets none: the rows get the
        # check a plain commit makes (written straight into the table: the API's disable
        # would wait for the lock too).
        db.sql(f"UPDATE subscriptions SET disabled_at = now(), disabled_reason = 'test' "
               f"WHERE id = {sql_quote(subs[SUBS - 1]['id'])}")
    finally:
        holder.release()
    wait_until(lambda: rec.count() >= 3 * (SUBS - 1), 30, "the listed jobs delivered")
    time.sleep(0.5)
    assert receipts(rec) == {(f"/hook/{i}", s): 1 for i in range(SUBS - 1) for s in range(3)}
    for a in answers:
        assert listed(db, a["eventId"]) is None
        assert db.sql(f"SELECT count(*) FROM jobs WHERE event_id = "
                      f"{sql_quote(a['eventId'])}")[0][0] == str(SUBS - 1)


def test_broker_killed_before_the_rows_and_ordered_head(api, db, redis, receiver, start_broker,
                                                       start_worker):
    b = start_broker(**DEFER)
    rec = receiver(body=b"")
    ordered_rec = receiver(body=b"")
    base = unique_name("fan-kill")
    big, small = f"{base}.big", f"{base}.small"
    register_fan(b.api, rec, big, SUBS - 1)
    ordered = register(b.api, ordered_rec.url("/ordered"), eventName=f"{base}.*", ordered=True)
    assert ordered["ordered"] is True
    holder = LockHolder(db, "jobs")
    try:
        first = b.api.trigger(big, {"seq": 0})
        assert first["jobs"] == SUBS, first
        wait_until(lambda: fanout_waiting(db), 10, "the fan-out waiting for the lock")
        b.kill()
        # The killed broker's backend stops within client_connection_check_interval (5 s).
        wait_until(lambda: not fanout_waiting(db), 15, "the dead broker's statement gone")
    finally:
        holder.release()
    entries = listed(db, first["eventId"])
    assert entries is not None and len(entries) == SUBS, entries
    assert ordered["id"] in {s for _, s, _ in entries}
    assert db.sql(f"SELECT count(*) FROM jobs WHERE event_id = "
                  f"{sql_quote(first['eventId'])}")[0][0] == "0"
    # A later event for the ordered subscription alone, written at once by the module's broker
    # (default threshold): its job must wait for the listed one.
    second = api.trigger(small, {"seq": 1})
    assert second["jobs"] == 1, second
    start_worker()
    time.sleep(2)
    assert ordered_rec.count() == 0, "the later job went before the listed one"
    # A dry run reports and writes nothing.
    _, out = run_reconciler(redis, db, "--dry-run", **RECON)
    assert "would write the rows of 8 jobs listed by 1 events" in out, out
    assert listed(db, first["eventId"]) == entries
    _, out = run_reconciler(redis, db, **RECON)
    assert re.search(r"wrote the rows of 8 of the 8 jobs listed by 1 events", out), out
    assert re.search(r"fan-outs finished 1\b", out), out
    assert listed(db, first["eventId"]) is None

    def delivered():
        run_reconciler(redis, db, **RECON)
        return rec.count() >= SUBS - 1 and ordered_rec.count() >= 2

    wait_until(delivered, 60, "every job delivered after the reconciler", 0.5)
    time.sleep(0.5)
    assert receipts(rec) == {(f"/hook/{i}", 0): 1 for i in range(SUBS - 1)}
    assert [json.loads(r.body)["seq"] for r in ordered_rec.requests] == [0, 1]
