"""Subscriptions with several event names and prefix patterns (issue 11 part 1, decision 39):
exact names, "<prefix>.*" and "*" route through their own index hashes, one job per
subscription whatever the number of entries that match, "eventName" keeps working, the upsert
is keyed by (names, URL) and a URL gets each name from one subscription, every invalid input is
a 400 with nothing written, PATCH and DELETE move and remove the entries of every hash, the job
search's event filter finds jobs made through a pattern, the reconciler repairs pattern hashes,
and routing survives Redis losing everything (the PostgreSQL fallback, then the rebuild)."""

import json

import pytest

from harness import (INDEX_READY, assert_error, event_key, run_reconciler, sql_quote,
                     unique_name, wait_until)

HOOKS = "/api/v0/webhooks"


def register(api, names, url, expect=201, **extra):
    body = {"eventNames": names, "webhookUrl": url, **extra}
    st, _, data = api.post(HOOKS, body)
    assert st == expect, data
    return data


def sub_path(sub, name=None):
    return f"{HOOKS}/{name or sub['eventNames'][0]}/{sub['id']}"


def routed(api, db, event):
    """Triggers event; returns the subscription ids that got a job, sorted (one per job)."""
    data = api.trigger(event, {"n": 1})
    subs = sorted(j["subscription_id"] for j in db.jobs(data["eventId"]))
    assert data["jobs"] == len(subs), data
    return subs


def ids(*subs):
    return sorted(s["id"] for s in subs)


def nsubs(db):
    return db.count("subscriptions")


@pytest.fixture
def star(api):
    """A '*' subscription for the test's duration: it matches every event of the module."""
    made = []

    def make(url):
        sub = register(api, ["*"], url)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        st, _, _ = api.delete(sub_path(sub))
        assert st in (200, 404)


def test_exact_prefix_and_star_routing(api, db, rc, star):
    p = unique_name("ord")
    a = register(api, [f"{p}.*"], "http://127.0.0.1:9/a")
    b = register(api, [f"{p}.paid"], "http://127.0.0.1:9/b")
    # two entries that both match p.item.added: one job
    d = register(api, [f"{p}.item.*", f"{p}.*", "zz.other"], "http://127.0.0.1:9/d")
    assert d["eventNames"] == sorted([f"{p}.item.*", f"{p}.*", "zz.other"])
    assert d["eventName"] == d["eventNames"][0]
    c = star("http://127.0.0.1:9/c")
    assert c["eventNames"] == ["*"] and c["eventName"] == "*"
    # the index: one hash per entry, keyed by the entry itself
    assert set(rc.hgetall(event_key(f"{p}.*"))) == {"http://127.0.0.1:9/a",
                                                   "http://127.0.0.1:9/d"}
    assert a["id"] in rc.hgetall(event_key(f"{p}.*"))["http://127.0.0.1:9/a"]
    assert set(rc.hgetall(event_key(f"{p}.item.*"))) == {"http://127.0.0.1:9/d"}
    assert "http://127.0.0.1:9/c" in rc.hgetall(event_key("*"))

    assert routed(api, db, f"{p}.paid") == ids(a, b, c, d)
    assert routed(api, db, f"{p}.item.added") == ids(a, c, d)  # d once, through two entries
    assert routed(api, db, p) == ids(c)  # "order.*" does not match "order"
    assert routed(api, db, f"{p}s.x") == ids(c)  # nor "orders.x"
    assert routed(api, db, "zz.other") == ids(c, d)
    assert routed(api, db, f"x{p}.paid") == ids(c)


def test_event_name_still_works_and_stays_plain(api, db, star):
    event = unique_name("plain")
    st, _, sub = api.post(HOOKS, {"eventName": event, "webhookUrl": "http://127.0.0.1:9/p"})
    assert st == 201, sub
    assert sub["eventName"] == event and sub["eventNames"] == [event]
    # the same row a pre-migration subscription becomes (migration 15: event_names =
    # ARRAY[event_name], plain_until NULL)
    row = db.sql(f"SELECT event_name, event_names::text, plain_until FROM subscriptions "
                 f"WHERE id = {sql_quote(sub['id'])}")[0]
    assert row == (event, "{" + event + "}", None), row
    assert int(db.scalar("SELECT max(version) FROM schema_migrations")) >= 15
    # both fields, when equal, are one
    st, _, same = api.post(HOOKS, {"eventName": event, "eventNames": [event],
                                   "webhookUrl": "http://127.0.0.1:9/p"})
    assert st == 200 and same["id"] == sub["id"], same
    data = api.trigger(event, {"n": 1})
    jobs = db.jobs(data["eventId"])
    assert [j["subscription_id"] for j in jobs] == [sub["id"]]
    # a plain subscription's job carries no name (the job search knows it from the row)
    assert db.scalar(f"SELECT count(*) FROM jobs WHERE id = {sql_quote(jobs[0]['id'])} "
                     f"AND event_name IS NULL") == "1"
    st, _, got = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and got["eventNames"] == [event]
    # a "*" subscription does not change which job the plain one gets
    c = star("http://127.0.0.1:9/c2")
    assert routed(api, db, event) == ids(sub, c)


BAD_BODIES = [
    ({"webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": [], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": "a.b", "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": ["a.b", "a.b"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": ["a.b", 3], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[1]"),
    ({"eventNames": ["a*"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[0]"),
    ({"eventNames": ["a.*.b"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[0]"),
    ({"eventNames": [".*"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[0]"),
    ({"eventNames": ["**"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[0]"),
    ({"eventNames": ["a.b.c.d.e.f.g.h.i.*"], "webhookUrl": "http://127.0.0.1:9/x"},
     "eventNames[0]"),
    ({"eventNames": ["x" * 129], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames[0]"),
    ({"eventNames": ["*", "a.b"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": [f"n{i}" for i in range(101)], "webhookUrl": "http://127.0.0.1:9/x"},
     "eventNames"),
    ({"eventName": "a.b", "eventNames": ["a.c"], "webhookUrl": "http://127.0.0.1:9/x"},
     "eventName"),
    ({"eventName": "a.b", "eventNames": ["a.b", "a.c"], "webhookUrl": "http://127.0.0.1:9/x"},
     "eventName"),
    ({"eventName": ["a.b"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventName"),
    ({"eventNames": ["broker.*", "a.b"], "webhookUrl": "http://127.0.0.1:9/x"}, "eventNames"),
    ({"eventNames": ["a.*"], "webhookUrl": "mailto:ops@example.com"}, "mailto"),
]


def test_invalid_input_is_a_400_with_nothing_written(api, db, rc):
    before = nsubs(db)
    keys = rc.call("DBSIZE")
    for body, field in BAD_BODIES:
        err = assert_error(api.post(HOOKS, body), 400, "invalid_field")
        assert field in err["message"], (body, err)
    sub = register(api, [unique_name("v") + ".*"], "http://127.0.0.1:9/v")
    for body, field in BAD_BODIES:
        patch = {k: v for k, v in body.items() if k != "webhookUrl"}
        if not patch or "mailto" in field:
            continue
        err = assert_error(api.request("PATCH", sub_path(sub), patch), 400, "invalid_field")
        assert field in err["message"], (patch, err)
    # a path name that is neither a name nor a pattern
    assert_error(api.get(f"{HOOKS}/a*b/{sub['id']}"), 400, "invalid_field")
    assert nsubs(db) == before + 1
    st, _, got = api.get(sub_path(sub))
    assert st == 200 and got["eventNames"] == sub["eventNames"]
    assert rc.call("DBSIZE") == keys + 1  # only the valid one's hash


def test_upsert_by_names_and_url_and_one_subscription_per_name_and_url(api, db):
    p = unique_name("up")
    url = "http://127.0.0.1:9/u"
    first = register(api, [f"{p}.b", f"{p}.a"], url)
    assert first["eventNames"] == [f"{p}.a", f"{p}.b"]
    again = register(api, [f"{p}.a", f"{p}.b"], url, expect=200, description="again")
    assert again["id"] == first["id"] and again["description"] == "again"
    before = nsubs(db)
    # sharing a name with another subscription of the same URL: refused
    err = assert_error(api.post(HOOKS, {"eventNames": [f"{p}.a", f"{p}.c"], "webhookUrl": url}),
                       409, "url_in_use")
    assert first["id"] in err["message"]
    assert_error(api.post(HOOKS, {"eventName": f"{p}.b", "webhookUrl": url}), 409, "url_in_use")
    assert nsubs(db) == before
    # a pattern that overlaps in what it matches is another entry: allowed, and one job each
    pat = register(api, [f"{p}.*"], url)
    other = register(api, [f"{p}.a"], "http://127.0.0.1:9/other")
    assert routed(api, db, f"{p}.a") == ids(first, pat, other)
    # PATCH into an overlap: refused, nothing changed
    assert_error(api.request("PATCH", sub_path(pat), {"eventNames": [f"{p}.b"]}), 409,
                 "url_in_use")
    assert_error(api.request("PATCH", sub_path(other), {"webhookUrl": url}), 409, "url_in_use")
    st, _, got = api.get(sub_path(pat))
    assert got["eventNames"] == [f"{p}.*"]


def test_patch_moves_entries_and_delete_removes_them_all(api, db, rc):
    p = unique_name("mv")
    url = "http://127.0.0.1:9/m"
    sub = register(api, [f"{p}.a", f"{p}.b.*"], url)
    assert set(rc.hgetall(event_key(f"{p}.a"))) == {url}
    assert set(rc.hgetall(event_key(f"{p}.b.*"))) == {url}
    assert routed(api, db, f"{p}.b.x") == ids(sub)
    st, _, got = api.request("PATCH", sub_path(sub, f"{p}.b.*"),
                             {"eventNames": [f"{p}.c", f"{p}.a"], "webhookUrl": url + "2"})
    assert st == 200 and got["eventNames"] == [f"{p}.a", f"{p}.c"], got
    assert got["eventName"] == f"{p}.a"
    assert rc.hgetall(event_key(f"{p}.b.*")) == {}
    assert set(rc.hgetall(event_key(f"{p}.a"))) == {url + "2"}
    assert set(rc.hgetall(event_key(f"{p}.c"))) == {url + "2"}
    assert routed(api, db, f"{p}.b.x") == []
    assert routed(api, db, f"{p}.c") == ids(sub)
    # the old path name is no longer one of its names
    assert_error(api.get(sub_path(sub, f"{p}.b.*")), 404, "not_found")
    # a plain subscription PATCHed to several names stops being plain
    plain = register(api, [f"{p}.plain"], url)
    assert db.scalar(f"SELECT plain_until FROM subscriptions WHERE id = "
                     f"{sql_quote(plain['id'])}") is None
    st, _, _ = api.request("PATCH", sub_path(plain), {"eventNames": [f"{p}.plain", f"{p}.more"]})
    assert st == 200
    assert db.scalar(f"SELECT plain_until FROM subscriptions WHERE id = "
                     f"{sql_quote(plain['id'])}") is not None
    data = api.trigger(f"{p}.plain", {})
    assert db.scalar(f"SELECT event_name FROM jobs WHERE event_id = "
                     f"{sql_quote(data['eventId'])}") == f"{p}.plain"
    # DELETE through any of its names removes it from every hash
    st, _, _ = api.delete(sub_path(sub, f"{p}.c"))
    assert st == 200
    assert rc.hgetall(event_key(f"{p}.a")) == {}
    assert rc.hgetall(event_key(f"{p}.c")) == {}
    assert routed(api, db, f"{p}.a") == []


def test_list_by_name_and_by_pattern(api):
    p = unique_name("ls")
    exact = register(api, [f"{p}.x"], "http://127.0.0.1:9/l1")
    pat = register(api, [f"{p}.*"], "http://127.0.0.1:9/l2")
    register(api, [f"{p}.y"], "http://127.0.0.1:9/l3")
    st, _, lst = api.get(f"{HOOKS}/{p}.x")
    assert st == 200 and lst["eventName"] == f"{p}.x"
    mine = {w["id"] for w in lst["webhooks"]} & {exact["id"], pat["id"]}
    assert mine == {exact["id"], pat["id"]}  # the subscriptions that receive it
    st, _, lst = api.get(f"{HOOKS}/{p}.*")
    assert st == 200 and [w["id"] for w in lst["webhooks"]] == [pat["id"]]
    assert lst["total"] == 1


def test_jobs_search_event_finds_jobs_made_through_a_pattern(api, db):
    p = unique_name("js")
    pat = register(api, [f"{p}.*"], "http://127.0.0.1:9/j1")
    plain = register(api, [f"{p}.x"], "http://127.0.0.1:9/j2")
    multi = register(api, [f"{p}.x", f"{p}.y"], "http://127.0.0.1:9/j3")
    x1 = api.trigger(f"{p}.x", {})["eventId"]
    x2 = api.trigger(f"{p}.x", {})["eventId"]
    y = api.trigger(f"{p}.y", {})["eventId"]
    st, _, data = api.get(f"/api/v0/jobs?event={p}.x")
    assert st == 200, data
    got = {(j["eventId"], j["subscriptionId"]) for j in data["jobs"]}
    want = {(e, s["id"]) for e in (x1, x2) for s in (pat, plain, multi)}
    assert got == want and len(data["jobs"]) == 6
    assert all(j["eventName"] == f"{p}.x" for j in data["jobs"])
    st, _, data = api.get(f"/api/v0/jobs?event={p}.y")
    assert {(j["eventId"], j["subscriptionId"]) for j in data["jobs"]} == \
        {(y, pat["id"]), (y, multi["id"])}
    # with a subscription and a page size: still only that name's jobs, newest first, paged
    st, _, data = api.get(f"/api/v0/jobs?event={p}.x&subscription={multi['id']}&limit=1")
    assert st == 200 and len(data["jobs"]) == 1 and data["jobs"][0]["eventId"] == x2
    st, _, data = api.get(f"/api/v0/jobs?event={p}.x&subscription={multi['id']}&limit=1"
                          f"&cursor={data['next']}")
    assert [j["eventId"] for j in data["jobs"]] == [x1] and data["next"] is None
    # a plain subscription PATCHed to a pattern: its older jobs (no name) still found
    st, _, _ = api.request("PATCH", sub_path(plain), {"eventNames": [f"{p}.x", f"{p}.z.*"]})
    assert st == 200
    x3 = api.trigger(f"{p}.x", {})["eventId"]
    api.trigger(f"{p}.z.q", {})
    st, _, data = api.get(f"/api/v0/jobs?event={p}.x&subscription={plain['id']}")
    assert [j["eventId"] for j in data["jobs"]] == [x3, x2, x1]


def test_reconciler_repairs_pattern_hashes(api, rc, redis, db):
    p = unique_name("rp")
    sub = register(api, [f"{p}.*", f"{p}.exact"], "http://127.0.0.1:9/r")
    rc.call("HDEL", event_key(f"{p}.*"), "http://127.0.0.1:9/r")  # missing
    rc.call("HSET", event_key(f"{p}.x.*"), "http://127.0.0.1:9/stale",
            '{"id":"0190a8a5-0000-7000-8000-00000000abcd","status":"active"}')  # stale
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] >= 2
    assert sub["id"] in rc.hgetall(event_key(f"{p}.*"))["http://127.0.0.1:9/r"]
    assert rc.call("EXISTS", event_key(f"{p}.x.*")) == 0
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] == 0
    # a row written the pre-migration way (event_name only) is a plain subscription of that
    # name: indexed by the reconciler, routed, its job without a name
    old = unique_name("old")
    sid = "0190a8a5-0000-7000-8000-%012x" % (abs(hash(old)) % (1 << 48))
    db.sql(f"INSERT INTO subscriptions (id, event_name, url, secret) VALUES ({sql_quote(sid)}, "
           f"{sql_quote(old)}, 'http://127.0.0.1:9/old', 'x')")
    assert db.sql(f"SELECT event_names::text, plain_until FROM subscriptions "
                  f"WHERE id = {sql_quote(sid)}") == [("{" + old + "}", None)]
    run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert sid in rc.hgetall(event_key(old))["http://127.0.0.1:9/old"]
    assert routed(api, db, old) == [sid]
    st, _, data = api.get(f"/api/v0/jobs?event={old}")
    assert st == 200 and [j["subscriptionId"] for j in data["jobs"]] == [sid]


def test_routing_survives_redis_losing_everything(api, db, redis, star):
    p = unique_name("wipe")
    pat = register(api, [f"{p}.*"], "http://127.0.0.1:9/w1")
    multi = register(api, [f"{p}.a", f"{p}.b.*"], "http://127.0.0.1:9/w2")
    c = star("http://127.0.0.1:9/w3")
    redis.kill()
    redis.wipe_files()
    redis.start()

    def trigger_ok():
        st, _, data = api.post(f"/api/v0/trigger-event/{p}.b.c", b"{}")
        return data if st == 202 else None

    def rebuilt():
        return redis.call("EXISTS", INDEX_READY) == 1

    # the broker rebuilds the index when it reconnects (or fans out from PostgreSQL until then)
    data = wait_until(trigger_ok, 20, "the broker to accept triggers again")
    assert sorted(j["subscription_id"] for j in db.jobs(data["eventId"])) == ids(pat, multi, c)
    wait_until(rebuilt, 20, "the index rebuild")
    with redis.client() as rc:
        assert set(rc.hgetall(event_key(f"{p}.*"))) == {"http://127.0.0.1:9/w1"}
        assert set(rc.hgetall(event_key(f"{p}.b.*"))) == {"http://127.0.0.1:9/w2"}
        assert "http://127.0.0.1:9/w3" in rc.hgetall(event_key("*"))
    assert routed(api, db, f"{p}.b.c") == ids(pat, multi, c)
    # emptied without a restart: the next trigger finds no mark and fans out from PostgreSQL
    # (the GIN index on event_names), then the broker rebuilds
    redis.call("FLUSHALL")
    assert routed(api, db, f"{p}.a") == ids(pat, multi, c)
    assert routed(api, db, f"{p}") == ids(c)
    wait_until(rebuilt, 20, "the index rebuild after FLUSHALL")
    assert routed(api, db, f"{p}.b.c") == ids(pat, multi, c)
    with redis.client() as rc:
        assert set(rc.hgetall(event_key(f"{p}.b.*"))) == {"http://127.0.0.1:9/w2"}


def name_keys(name):
    """common/evnames.c's evname_keys in Python: the name, "<prefix>.*" per dot among its first
    8 (none for a leading dot), "*" unless it is an operational event."""
    keys, dots = [name], 0
    for i, c in enumerate(name):
        if c != "." or dots == 8:
            continue
        dots += 1
        if i > 0:
            keys.append(name[:i] + ".*")
    if not name.startswith("broker."):
        keys.append("*")
    return keys


def test_sql_name_keys_agree_with_the_broker(api, db):
    """wh_name_keys (migration 15; the commit, the operational events, the replay) and the
    broker's evname_keys (the trigger, the fallback, the listings) must match the same way."""
    for name in ["x", "a.b.c", "a..b.c", ".x", "x.", "broker.endpoint.disabled",
                 "a.b.c.d.e.f.g.h.i.j.k.l", "order:v2.paid-late_x"]:
        got = db.scalar(f"SELECT array_to_json(wh_name_keys({sql_quote(name)}::text))::text")
        assert json.loads(got) == name_keys(name), (name, got)
