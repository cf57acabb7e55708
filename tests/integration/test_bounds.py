"""Bounded work per request: MAX_SUBSCRIPTIONS_PER_EVENT (409, race-free across brokers),
pagination of the per-event listing and of an event's jobs, and the event index rebuilt from
PostgreSQL in pages."""

import json
import threading

import pytest

from harness import assert_error, sql_quote, unique_name

HOOKS = "/api/v0/webhooks"
LIMIT = 3


@pytest.fixture(scope="module")
def limited(module_broker):
    """Two brokers on the same Redis and database with MAX_SUBSCRIPTIONS_PER_EVENT=3."""
    return (module_broker("broker-limit-a", MAX_SUBSCRIPTIONS_PER_EVENT=LIMIT),
            module_broker("broker-limit-b", MAX_SUBSCRIPTIONS_PER_EVENT=LIMIT))


def state(db, rc, event):
    return (db.count("subscriptions", f"event_name = {sql_quote(event)} AND status = 'active'"),
            rc.hgetall(f"wh:event:{event}"))


# --- MAX_SUBSCRIPTIONS_PER_EVENT -------------------------------------------------------------


def test_subscription_limit_per_event(limited, db, rc):
    api = limited[0].api
    event = unique_name("limit")
    subs = [api.register(event, f"http://127.0.0.1:9/l{i}") for i in range(LIMIT)]
    before = state(db, rc, event)
    assert before[0] == LIMIT and len(before[1]) == LIMIT

    resp = api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/one-more"})
    assert_error(resp, 409, "too_many_subscriptions")
    msg = resp[2]["error"]["message"]
    assert event in msg and str(LIMIT) in msg, msg
    assert state(db, rc, event) == before, "a refused registration wrote something"
    assert db.count("subscriptions", "url = 'http://127.0.0.1:9/one-more'") == 0

    # Re-registering an existing pair at the limit is an update, not a new subscription.
    st, _, again = api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/l1",
                                    "headers": {"X-Again": "1"}})
    assert st == 200 and again["id"] == subs[1]["id"] and again["headers"] == {"X-Again": "1"}
    assert state(db, rc, event) == before

    # Other events are not affected by this one being full.
    api.register(unique_name("limit.other"), "http://127.0.0.1:9/one-more")

    # A delete makes room again.
    st, _, _ = api.delete(f"{HOOKS}/{event}/{subs[0]['id']}")
    assert st == 200
    new = api.register(event, "http://127.0.0.1:9/one-more")
    count, index = state(db, rc, event)
    assert count == LIMIT and set(index) == {"http://127.0.0.1:9/l1", "http://127.0.0.1:9/l2",
                                             "http://127.0.0.1:9/one-more"}
    assert json.loads(index["http://127.0.0.1:9/one-more"])["id"] == new["id"]
    assert_error(api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/l0"}),
                 409, "too_many_subscriptions")


def test_subscription_limit_holds_under_concurrent_registrations(limited, db, rc):
    """Twenty registrations of one event sent at once through two brokers (two PostgreSQL
    sessions): exactly LIMIT are created, whatever the interleaving."""
    event = unique_name("limit.race")
    results = []
    lock = threading.Lock()

    def one(i):
        api = limited[i % 2].api
        st, _, data = api.post(HOOKS, {"eventName": event, "webhookUrl": f"http://127.0.0.1:9/r{i}"})
        with lock:
            results.append((st, data))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(st for st, _ in results)
    assert statuses == [201] * LIMIT + [409] * (20 - LIMIT), results
    count, index = state(db, rc, event)
    assert count == LIMIT and len(index) == LIMIT, (count, index)


def test_subscription_limit_waits_for_a_registration_in_progress(limited, db, rc, redis):
    """Deterministic interleaving: another session registers the way a broker does (takes the
    event's registration lock, inserts, and has not committed yet) while the broker registers
    the last free place. The broker's statement must wait for that commit and then see the
    event full (without the lock it would count the uncommitted row as absent: LIMIT + 1)."""
    import subprocess

    from harness import wait_until

    api = limited[0].api
    event = unique_name("limit.lock")
    for i in range(LIMIT - 1):
        api.register(event, f"http://127.0.0.1:9/k{i}")
    pg = db.pg
    other = subprocess.Popen(
        [str(pg.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
         "-p", str(pg.port), "-U", "postgres", "-d", db.name, "-f", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=pg.env)
    try:
        other.stdin.write(
            f"SELECT pg_advisory_lock(7231002, hashtext({sql_quote(event)}));\n"
            f"BEGIN;\nINSERT INTO subscriptions (id, event_name, url, secret) VALUES "
            f"(gen_random_uuid(), {sql_quote(event)}, 'http://127.0.0.1:9/other-session', "
            f"'whsec_x');\n".encode())
        other.stdin.flush()
        wait_until(lambda: db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND query LIKE 'INSERT INTO subscriptions%'") == "1", 10,
            "the other session to hold the lock with its insert uncommitted")
        result = []
        t = threading.Thread(target=lambda: result.append(api.post(
            HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/last-place"})))
        t.start()
        wait_until(lambda: result or db.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == "1",
            10, "the broker's registration to wait for the lock (or to answer)")
        assert not result, f"the broker did not wait for the registration in progress: {result}"
        other.stdin.write(b"COMMIT;\n")
        other.stdin.close()
        t.join(15)
        assert result, "no answer after the other session committed"
        assert_error(result[0], 409, "too_many_subscriptions")
    finally:
        if other.poll() is None:
            other.wait(15)
    assert db.count("subscriptions",
                    f"event_name = {sql_quote(event)} AND status = 'active'") == LIMIT
    assert "http://127.0.0.1:9/last-place" not in rc.hgetall(f"wh:event:{event}")
