"""GET /api/v0/stats?since= (issue 10, docs/decisions.md 29): triggers, jobs created, delivered,
dead, failed attempts and retries pending, per event name and in total, from the hourly
rollups the broker's and the workers' commits keep; since validation."""

import datetime
import uuid

from harness import assert_error, run_reconciler, unique_name, wait_until


def stats(api, query=""):
    st, _, data = api.get("/api/v0/stats" + query)
    assert st == 200, (st, data)
    return data


def per_event(data, name):
    got = [e for e in data["events"] if e["eventName"] == name]
    return got[0] if got else None


def rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_counts_match_triggers_and_deliveries(api, db, receiver, start_worker):
    ok = receiver(name="ok")
    failing = receiver(statuses=500, name="failing")
    waiting = receiver(statuses=500, name="waiting")
    mixed, lone, slow = unique_name("statsmix"), unique_name("statslone"), unique_name("statsw")
    api.register(mixed, ok.url())
    api.register(mixed, failing.url())
    api.register(lone, ok.url())
    nobody = unique_name("statsnobody")  # triggered without subscribers: no job
    before = stats(api)["total"]

    first = start_worker(RETRY_SCHEDULE="0.2", BREAKER_FAILURES="1000")
    eids = [api.trigger(mixed, {"n": i})["eventId"] for i in range(5)]
    eids += [api.trigger(lone, {"n": i})["eventId"] for i in range(3)]
    api.trigger(nobody, {"n": 0})
    for eid in eids:
        db.wait_jobs(eid, {"delivered", "dead"}, count=None)
    want_mixed = {"eventName": mixed, "triggers": 5, "jobsCreated": 10, "delivered": 5,
                  "dead": 5, "failedAttempts": 10, "retriesPending": 0}
    want_lone = {"eventName": lone, "triggers": 3, "jobsCreated": 3, "delivered": 3, "dead": 0,
                 "failedAttempts": 0, "retriesPending": 0}
    got = wait_until(lambda: (lambda d: d if per_event(d, mixed) == want_mixed else None)(
        stats(api)), 10, "the stats of the mixed event")
    assert per_event(got, lone) == want_lone, got
    assert per_event(got, nobody) == {"eventName": nobody, "triggers": 1, "jobsCreated": 0,
                                      "delivered": 0, "dead": 0, "failedAttempts": 0,
                                      "retriesPending": 0}
    assert failing.count() == 10 and ok.count() == 8
    total = got["total"]
    for k, more in (("triggers", 9), ("jobsCreated", 13), ("delivered", 8), ("dead", 5),
                    ("failedAttempts", 10)):
        assert total[k] >= before[k] + more, (k, before, total)
    sums = {k: sum(e[k] for e in got["events"]) for k in total}
    assert sums == total, "the total is not the sum of the events"
    assert got["since"].endswith(":00:00.000Z") and got["until"].endswith("Z")

    # a job waiting for its retry is a retry pending, under its event name (the first worker,
    # which retries after 0.2 s, is stopped first: it must not take the job and try it again)
    first.stop()
    api.register(slow, waiting.url())
    start_worker(RETRY_SCHEDULE="600", BREAKER_FAILURES="1000")
    eid = api.trigger(slow, {"n": 1})["eventId"]
    db.wait_jobs(eid, "retrying", count=1)
    got = wait_until(lambda: (lambda d: per_event(d, slow) if per_event(d, slow)
                              and per_event(d, slow)["failedAttempts"] == 1 else None)(
        stats(api)), 10, "the waiting event's stats")
    assert got["retriesPending"] == 1 and got["triggers"] == 1 and got["jobsCreated"] == 1


def test_since(api, db, receiver):
    name = unique_name("statssince")
    api.trigger(name, {"n": 1})
    now = datetime.datetime.now(datetime.timezone.utc)
    recent = stats(api, "?since=" + rfc3339(now - datetime.timedelta(minutes=1)))
    assert per_event(recent, name)["triggers"] == 1
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert recent["since"] == hour.strftime("%Y-%m-%dT%H:00:00.000Z"), recent
    # an offset and a fraction are RFC 3339 too
    local = (now - datetime.timedelta(hours=2)).astimezone(
        datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
    st, _, _ = api.get("/api/v0/stats?since=" + local.strftime("%Y-%m-%dT%H:%M:%S.123+05:30")
                       .replace("+", "%2B"))
    assert st == 200
    assert per_event(stats(api, "?since=" + rfc3339(now - datetime.timedelta(days=29))),
                     name)["triggers"] == 1


def test_since_validation(api, db):
    name = unique_name("statsbad")
    api.trigger(name, {"n": 1})
    rows = db.scalar("SELECT count(*) FROM stats_hourly")
    now = datetime.datetime.now(datetime.timezone.utc)
    bad = ["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-12-01",
           "2026-12-01T10:00:00", "2026-12-01T25:00:00Z", "2026-12-01T10:00:00Zjunk",
           "1700000000", "", rfc3339(now - datetime.timedelta(days=31)),
           rfc3339(now + datetime.timedelta(days=1))]
    for v in bad:
        err = assert_error(api.get("/api/v0/stats?since=" + v), 400, "invalid_field")
        assert "since" in err["message"], (v, err)
    assert db.scalar("SELECT count(*) FROM stats_hourly") == rows, "a refused request wrote"
    assert_error(api.post("/api/v0/stats", {}), 405)


def test_reconciler_purges_old_rollups(api, db, redis, broker):
    """Rollup rows older than 31 days (per event name) and 2 days (per subscription) go with the
    reconciler's purge; newer ones stay."""
    sub = str(uuid.uuid4())
    db.sql("INSERT INTO stats_hourly (hour, event_name, backend, triggers) VALUES "
           "(date_trunc('hour', now() - interval '40 days'), 'purge.old', 1, 1), "
           "(date_trunc('hour', now() - interval '20 days'), 'purge.new', 1, 1)")
    db.sql("INSERT INTO subscription_stats (subscription_id, bucket, backend, delivered) VALUES "
           f"('{sub}', now() - interval '3 days', 1, 1), ('{sub}', now() - interval '1 day', 1, 1)")
    run_reconciler(redis, db)
    assert [r[0] for r in db.sql("SELECT event_name FROM stats_hourly WHERE event_name "
                                 "LIKE 'purge.%'")] == ["purge.new"]
    assert db.scalar(f"SELECT count(*) FROM subscription_stats WHERE subscription_id = '{sub}' "
                     "AND bucket > now() - interval '2 days'") == "1"
    assert db.scalar(f"SELECT count(*) FROM subscription_stats WHERE subscription_id = '{sub}'") \
        == "1"


def test_reconciler_merges_past_hours(api, db, redis, broker):
    """The rows of each writer for an hour that is over are merged into one row per event name
    (backend 0); the stats answer the same before and after; the current hour is left alone."""
    name = unique_name("statsmerge")
    db.sql("INSERT INTO stats_hourly (hour, event_name, backend, triggers, jobs, delivered, dead, "
           "failed_attempts) SELECT date_trunc('hour', now() - interval '3 hours'), "
           f"'{name}', b, 1, 2, 3, 4, 5 FROM generate_series(1, 7) b "
           "UNION ALL SELECT date_trunc('hour', now() - interval '3 hours'), "
           f"'{name}', 0, 10, 10, 10, 10, 10 "
           f"UNION ALL SELECT date_trunc('hour', now()), '{name}', 99, 1, 1, 1, 1, 1")
    since = "?since=" + rfc3339(datetime.datetime.now(datetime.timezone.utc)
                                - datetime.timedelta(hours=4))
    before = per_event(stats(api, since), name)
    assert before["triggers"] == 7 + 10 + 1 and before["failedAttempts"] == 35 + 10 + 1
    run_reconciler(redis, db)
    rows = db.sql(f"SELECT backend, triggers, jobs, delivered, dead, failed_attempts FROM "
                  f"stats_hourly WHERE event_name = '{name}' ORDER BY hour, backend")
    assert [list(r) for r in rows] == [["0", "17", "24", "31", "38", "45"],
                                       ["99", "1", "1", "1", "1", "1"]], rows
    assert per_event(stats(api, since), name) == before


def test_reconciler_merges_old_subscription_buckets(api, db, redis, broker):
    """5-minute rows older than 2 hours become one row per subscription and hour (backend 0),
    with the sums and the latest times; the status's counts do not change."""
    sub = str(uuid.uuid4())
    db.sql("INSERT INTO subscription_stats (subscription_id, bucket, backend, delivered, "
           "failed_attempts, dead, last_success_at, last_failure_at) "
           f"SELECT '{sub}'::uuid, date_trunc('hour', now() - interval '5 hours') + m * interval "
           "'5 minutes', b, 1, 2, 3, date_trunc('hour', now() - interval '5 hours') + m * interval "
           "'5 minutes', NULL::timestamptz FROM generate_series(0, 11) m, generate_series(1, 3) b "
           f"UNION ALL SELECT '{sub}', date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00Z'),"
           " 7, 1, 1, 1, now(), now()")
    run_reconciler(redis, db)
    rows = db.sql("SELECT backend, delivered, failed_attempts, dead, last_success_at = "
                  "date_trunc('hour', now() - interval '5 hours') + interval '55 minutes', "
                  "last_failure_at IS NULL FROM subscription_stats "
                  f"WHERE subscription_id = '{sub}' ORDER BY bucket")
    assert [list(r) for r in rows] == [["0", "36", "72", "108", "t", "t"],
                                       ["7", "1", "1", "1", "f", "f"]], rows


def test_reconciler_merges_old_hours_by_day(api, db, redis, broker):
    """Hours before the day that started 2 days ago become one row per day (UTC); a since
    within such a day counts from the day's start, before and after the merge."""
    name = unique_name("statsday")
    day = "(date_trunc('day', now() AT TIME ZONE 'UTC') - interval '5 days') AT TIME ZONE 'UTC'"
    db.sql("INSERT INTO stats_hourly (hour, event_name, backend, triggers) "
           f"SELECT {day} + h * interval '1 hour', '{name}', b, 1 "
           "FROM generate_series(0, 23, 5) h, generate_series(0, 2) b")
    start = datetime.datetime.now(datetime.timezone.utc).replace(
        hour=0, minute=0, second=0, microsecond=0) - datetime.timedelta(days=5)
    since = "?since=" + rfc3339(start + datetime.timedelta(hours=12))
    before = stats(api, since)
    assert before["since"] == start.strftime("%Y-%m-%dT00:00:00.000Z"), before
    assert per_event(before, name)["triggers"] == 15
    run_reconciler(redis, db)
    rows = db.sql(f"SELECT hour = {day}, backend, triggers FROM stats_hourly "
                  f"WHERE event_name = '{name}'")
    assert [list(r) for r in rows] == [["t", "0", "15"]], rows
    assert per_event(stats(api, since), name)["triggers"] == 15
