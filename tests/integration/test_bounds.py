"""Bounded work per request: MAX_SUBSCRIPTIONS_PER_EVENT (409, race-free across brokers),
pagination of the per-event listing and of an event's jobs, and the event index rebuilt from
PostgreSQL in pages."""

import json
import threading

import pytest

from harness import assert_error, sql_quote, unique_name, wait_until

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

    # A PATCH that adds the full event to another subscription's names is refused the same way
    # (decision 39); nothing changes.
    other = unique_name("limit.patch")
    sub = api.register(other, "http://127.0.0.1:9/patched")
    resp = api.request("PATCH", f"{HOOKS}/{other}/{sub['id']}", {"eventNames": [other, event]})
    assert_error(resp, 409, "too_many_subscriptions")
    assert state(db, rc, event) == (count, index)
    st, _, got = api.get(f"{HOOKS}/{other}/{sub['id']}")
    assert st == 200 and got["eventNames"] == [other]
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


# --- pagination of the per-event listing and of an event's jobs -----------------------------

MANY = 120


@pytest.fixture(scope="module")
def crowded(broker):
    """An event with MANY subscriptions and one trigger of it (no worker runs in this module:
    its MANY jobs stay queued). -> (event, subscription ids in creation order, event id)."""
    api = broker.api
    event = unique_name("crowded")
    ids = [api.register(event, f"http://127.0.0.1:9/c{i:03d}")["id"] for i in range(MANY)]
    accepted = api.trigger(event, {"n": 1})
    return event, ids, accepted


def walk(api, path, key, page_size):
    """Every item of a paginated listing, page by page: (items, pages)."""
    items, pages, offset = [], 0, 0
    while True:
        st, _, page = api.get(f"{path}?page_size={page_size}&offset={offset}")
        assert st == 200, page
        assert page["page_size"] == page_size and page["offset"] == offset
        assert page["total"] == MANY, page["total"]
        pages += 1
        items += page[key]
        if not page[key]:
            return items, pages
        assert len(page[key]) == min(page_size, MANY - offset)
        offset += len(page[key])


def event_id_of(accepted):
    return accepted["eventId"]


@pytest.mark.parametrize("what", ["webhooks", "jobs"])
def test_pagination(api, crowded, what):
    event, ids, accepted = crowded
    if what == "webhooks":
        path, key = f"{HOOKS}/{event}", "webhooks"
        want = ids
    else:
        path, key = f"/api/v0/events/{event_id_of(accepted)}", "jobs"
        want = None

    st, _, page = api.get(path)
    assert st == 200, page
    assert len(page[key]) == 50 and page["total"] == MANY
    assert page["offset"] == 0 and page["page_size"] == 50
    if what == "webhooks":
        assert page["eventName"] == event and all("secret" not in w for w in page[key])
        assert [w["id"] for w in page[key]] == ids[:50]
    else:
        assert page["id"] == event_id_of(accepted) and page["payload"] == {"n": 1}

    st, _, full = api.get(f"{path}?page_size=500")
    assert st == 200 and len(full[key]) == MANY and full["page_size"] == 500
    if want is None:  # jobs: one per subscription
        want = [j["id"] for j in full[key]]
        assert sorted(j["subscriptionId"] for j in full[key]) == sorted(ids)
    else:
        assert [w["id"] for w in full[key]] == want

    for size in (7, 50, MANY):
        items, pages = walk(api, path, key, size)
        assert [i["id"] for i in items] == want, f"page_size={size}: gaps, duplicates or order"
        assert pages == -(-MANY // size) + 1

    st, _, past = api.get(f"{path}?offset=1000")
    assert st == 200 and past[key] == [] and past["total"] == MANY


@pytest.mark.parametrize("query", ["page_size=0", "page_size=501", "page_size=abc", "offset=-1",
                                   "page_size=", "offset=x", "page_size=3.5", "offset=+1",
                                   "page_size=%205", "offset=1000000001"])
@pytest.mark.parametrize("what", ["webhooks", "jobs"])
def test_pagination_bad_values(api, crowded, what, query):
    event, _, accepted = crowded
    path = f"{HOOKS}/{event}" if what == "webhooks" else f"/api/v0/events/{event_id_of(accepted)}"
    assert_error(api.get(f"{path}?{query}"), 400, "invalid_field")


# --- the event index rebuilt in pages (decision 4) ------------------------------------------
# These run last in the module: they FLUSHALL its Redis.

READY = "wh:index-ready"
TOKEN = "{wh:index-ready}:rebuild"
EVENTS, PER_EVENT = 40, 30


@pytest.fixture(scope="module")
def many(db):
    """EVENTS events of PER_EVENT subscriptions each, written straight to PostgreSQL (the
    truth the index is rebuilt from). -> the event names."""
    tag = unique_name("rb").split(".")[1]
    db.sql(f"INSERT INTO subscriptions (id, event_name, url, secret) "
           f"SELECT gen_random_uuid(), 'rb.{tag}.' || e, 'http://127.0.0.1:9/s' || s, 'whsec_x' "
           f"FROM generate_series(1, {EVENTS}) e, generate_series(1, {PER_EVENT}) s")
    return [f"rb.{tag}.{e}" for e in range(1, EVENTS + 1)]


def index_matches_db(db, rc):
    """Every active subscription is in the index with its id, and nothing else is."""
    want = {}
    for sid, name, url in db.sql("SELECT id, event_name, url FROM subscriptions "
                                 "WHERE status = 'active'"):
        want.setdefault(f"wh:event:{name}", {})[url] = sid
    keys = index_keys(rc)
    got = {k: {u: json.loads(v)["id"] for u, v in rc.hgetall(k).items()} for k in keys}
    if got != want:
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        differ = [k for k in want if k in got and got[k] != want[k]][:3]
        print("index differs: missing keys", missing, "extra keys", extra,
              "differing", [(k, len(got[k]), len(want[k])) for k in differ])
    return got == want


def index_keys(rc):
    return [k.decode() if isinstance(k, bytes) else k for k in rc.call("KEYS", "wh:event:*")]


def rebuilds(broker, what):
    return broker.log_text().count(what)


def test_index_rebuilt_in_pages_after_flushall(module_broker, db, rc, many):
    b = module_broker("broker-rebuild", INDEX_REBUILD_PAGE=7)
    total = db.count("subscriptions", "status = 'active'")
    assert rc.call("FLUSHALL") == "OK"
    done = rebuilds(b, "event index rebuilt")
    # The trigger fans out fully from PostgreSQL while the index is rebuilt.
    assert b.api.trigger(many[3], {"x": 1})["jobs"] == PER_EVENT
    wait_until(lambda: rebuilds(b, "event index rebuilt") > done, 30, "the rebuild to finish")
    assert rc.call("EXISTS", READY) == 1 and rc.call("EXISTS", TOKEN) == 0
    assert index_matches_db(db, rc), "the rebuilt index differs from PostgreSQL"
    pages = rebuilds(b, "event index rebuild: page")
    assert pages >= total // 7 + 1, f"{pages} pages for {total} subscriptions of 7"
    # Fan-out from the rebuilt index.
    assert b.api.trigger(many[5], {"x": 2})["jobs"] == PER_EVENT


def test_flushall_during_rebuild_leaves_no_mark(module_broker, db, rc, many):
    """A FLUSHALL between pages: the entries written before it are gone and the ones after it
    are there, so the index is partial; the ready mark must not be set over it. The broker is
    stopped (SIGSTOP) in the middle of a rebuild of one subscription per page, the FLUSHALL
    happens, and it is continued."""
    import signal

    # The module's broker may still be rebuilding the index it found unmarked at its start (a
    # busy machine): a second broker started then would begin its own start-up rebuild, which
    # the FLUSHALL below would cut short before the trigger's rebuild this test stops.
    wait_until(lambda: rc.call("EXISTS", READY) == 1, 60, "the index marked complete")
    b = module_broker("broker-rebuild-slow", INDEX_REBUILD_PAGE=1)
    total = db.count("subscriptions", "status = 'active'")
    assert rc.call("FLUSHALL") == "OK"
    refused = rebuilds(b, "ended without the ready mark")
    done = rebuilds(b, "event index rebuilt")
    pages0 = rebuilds(b, "event index rebuild: page")
    assert b.api.trigger(many[0])["jobs"] == PER_EVENT
    wait_until(lambda: rebuilds(b, "event index rebuild: page") >= pages0 + 20, 30,
               "20 pages of the rebuild", interval=0.002)
    b.send(signal.SIGSTOP)
    try:
        partial = sum(rc.call("HLEN", k) for k in index_keys(rc))
        assert rc.call("EXISTS", READY) == 0, \
            f"the rebuild of {total} pages finished before it could be stopped"
        assert rc.call("EXISTS", TOKEN) == 1 and 0 < partial < total, partial
        assert rc.call("FLUSHALL") == "OK"
    finally:
        b.send(signal.SIGCONT)
    wait_until(lambda: rebuilds(b, "ended without the ready mark") > refused, 60,
               "the rebuild to end without the mark")
    assert rebuilds(b, "event index rebuilt") == done
    assert rc.call("EXISTS", READY) == 0, "the ready mark covers a partial index"
    left = sum(rc.call("HLEN", k) for k in index_keys(rc))
    assert 0 < left < total, f"{left} entries after the FLUSHALL of {total}"

    # The next trigger still fans out fully (from PostgreSQL) and starts a complete rebuild.
    assert b.api.trigger(many[1])["jobs"] == PER_EVENT
    wait_until(lambda: rebuilds(b, "event index rebuilt") > done, 60, "a complete rebuild")
    assert rc.call("EXISTS", READY) == 1 and rc.call("EXISTS", TOKEN) == 0
    assert index_matches_db(db, rc)


def test_rebuild_ends_unmarked_when_redis_connection_drops(module_broker, db, rc, many):
    """Redis may come back from a snapshot that holds the rebuild's token but not the entries
    written after it, so a rebuild whose connection dropped must not set the mark."""
    import signal

    b = module_broker("broker-rebuild-drop", INDEX_REBUILD_PAGE=1)
    assert rc.call("FLUSHALL") == "OK"
    failed = rebuilds(b, "rebuilding the event index failed")
    done = rebuilds(b, "event index rebuilt")
    pages0 = rebuilds(b, "event index rebuild: page")
    assert b.api.trigger(many[2])["jobs"] == PER_EVENT
    wait_until(lambda: rebuilds(b, "event index rebuild: page") >= pages0 + 20, 30,
               "20 pages of the rebuild", interval=0.002)
    b.send(signal.SIGSTOP)
    try:
        assert rc.call("EXISTS", READY) == 0, "the rebuild finished before it could be stopped"
        # every client but this one: the stopped broker's connections too
        assert rc.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
    finally:
        b.send(signal.SIGCONT)
    wait_until(lambda: rebuilds(b, "rebuilding the event index failed") > failed, 30,
               "the rebuild to fail with its connection")
    assert rebuilds(b, "event index rebuilt") == done
    # A later rebuild (this broker's or another's: every broker of the module lost its
    # connection and rebuilds on reconnect; the last one started marks) completes and marks.
    wait_until(lambda: b.api.get("/readyz")[0] == 200, 30, "the broker back on Redis")
    assert b.api.trigger(many[4])["jobs"] == PER_EVENT
    wait_until(lambda: rc.call("EXISTS", READY) == 1, 60, "a complete rebuild to set the mark")
    assert index_matches_db(db, rc)
