"""Tenants (issue 13 part A, decision 44): a subscription belongs to one tenant (or none: global),
fixed at registration; its index entries live in the tenant's own hashes
(wh:event:@<tenant>:<name>), so a trigger with ?tenant=<t> reaches that tenant's subscriptions
only and a trigger without one the global ones only; the upsert, the one-subscription-per-URL
rule and the Idempotency-Key are per tenant; the reconciler's repair and the broker's rebuild
after Redis lost its data keep the scoping; keys limited to a tenant (POST /api/v0/keys) see,
change and trigger only their tenant's."""

import json
import subprocess

import harness
from harness import (API_KEY, INDEX_READY, assert_error, event_key, run_reconciler, unique_name,
                     wait_until)

HOOKS = "/api/v0/webhooks"
TRIGGER = "/api/v0/trigger-event"


def register(api, names, url, tenant=None, expect=201, **extra):
    body = {"eventNames": names, "webhookUrl": url, **extra}
    if tenant is not None:
        body["tenant"] = tenant
    st, _, data = api.post(HOOKS, body)
    assert st == expect, data
    return data


def trigger(api, name, tenant=None, payload=b'{"n":1}', headers=None):
    path = f"{TRIGGER}/{name}" + (f"?tenant={tenant}" if tenant is not None else "")
    st, _, data = api.post(path, payload, headers=headers)
    assert st == 202, data
    assert data["tenant"] == tenant, data
    return data


def routed(api, db, name, tenant=None):
    """Triggers name (for tenant); the subscription ids that got a job, sorted."""
    data = trigger(api, name, tenant)
    subs = sorted(j["subscription_id"] for j in db.jobs(data["eventId"]))
    assert data["jobs"] == len(subs), data
    return subs


def ids(*subs):
    return sorted(s["id"] for s in subs)


def paths_of(recv):
    counts = {}
    for req in recv.requests:
        counts[req.path] = counts.get(req.path, 0) + 1
    return counts


def snapshot(db, rc):
    counts = db.sql("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs), "
                    "(SELECT count(*) FROM subscriptions), "
                    "(SELECT count(*) FROM subscription_activity)")[0]
    return counts, sorted(rc.call("KEYS", event_key("*")))


def test_fan_out_reaches_only_the_tenant(api, db, rc, receiver, start_worker):
    recv = receiver()
    n = unique_name("ten.order")
    g = register(api, [n], recv.url("/g"))
    a = register(api, [n], recv.url("/a"), tenant="acme")
    b = register(api, [n], recv.url("/b"), tenant="beta")
    assert (g["tenant"], a["tenant"], b["tenant"]) == (None, "acme", "beta")
    # the index: one hash per tenant, the global one at the key of before tenants
    assert list(rc.hgetall(event_key(n))) == [recv.url("/g")]
    assert list(rc.hgetall(event_key(n, "acme"))) == [recv.url("/a")]
    assert list(rc.hgetall(event_key(n, "beta"))) == [recv.url("/b")]
    assert db.sql(f"SELECT tenant FROM subscriptions WHERE id = '{a['id']}'") == [("acme",)]

    assert routed(api, db, n, "acme") == ids(a)
    assert routed(api, db, n, "acme") == ids(a)
    assert routed(api, db, n) == ids(g)
    for _ in range(3):
        assert routed(api, db, n, "beta") == ids(b)
    assert routed(api, db, n, "nobody") == []
    start_worker()
    recv.wait_for(6)
    wait_until(lambda: db.count("jobs", "status <> 'delivered'") == 0, 30, "every delivery")
    assert paths_of(recv) == {"/a": 2, "/g": 1, "/b": 3}

    # the event carries its tenant
    ev = trigger(api, n, "acme")
    st, _, got = api.get(f"/api/v0/events/{ev['eventId']}")
    assert st == 200 and got["tenant"] == "acme", got
    ev = trigger(api, n)
    st, _, got = api.get(f"/api/v0/events/{ev['eventId']}")
    assert st == 200 and got["tenant"] is None, got
    assert db.scalar(f"SELECT tenant IS NULL FROM events WHERE id = '{ev['eventId']}'") == "t"


def test_same_url_in_two_tenants(api, db, rc):
    n = unique_name("ten.same")
    url = "http://127.0.0.1:9/same"
    a = register(api, [n], url, tenant="acme")
    b = register(api, [n], url, tenant="beta")
    g = register(api, [n], url)
    assert len({a["id"], b["id"], g["id"]}) == 3
    # the upsert is per tenant: the same names + URL again updates acme's own
    again = register(api, [n], url, tenant="acme", expect=200, description="again")
    assert again["id"] == a["id"] and again["tenant"] == "acme"
    assert routed(api, db, n, "acme") == ids(a)
    assert routed(api, db, n, "beta") == ids(b)
    assert routed(api, db, n) == ids(g)
    # url_in_use only within the tenant, naming only the tenant's own subscription
    n2 = unique_name("ten.more")
    resp = api.post(HOOKS, {"eventNames": [n, n2], "webhookUrl": url, "tenant": "acme"})
    assert_error(resp, 409, "url_in_use")
    err = resp[2]
    assert a["id"] in err["error"]["message"]
    assert b["id"] not in err["error"]["message"] and g["id"] not in err["error"]["message"]
    c = register(api, [n, n2], url, tenant="gamma")  # no other gamma subscription: allowed
    assert c["tenant"] == "gamma"
    assert rc.hgetall(event_key(n2, "gamma")) and not rc.hgetall(event_key(n2))
    # PATCH moves entries within the tenant's hashes
    n3 = unique_name("ten.moved")
    st, _, moved = api.request("PATCH", f"{HOOKS}/{n}/{b['id']}",
                               {"eventNames": [n3], "webhookUrl": "http://127.0.0.1:9/moved"})
    assert st == 200 and moved["tenant"] == "beta", moved
    assert url not in rc.hgetall(event_key(n, "beta"))
    assert list(rc.hgetall(event_key(n3, "beta"))) == ["http://127.0.0.1:9/moved"]
    assert url in rc.hgetall(event_key(n, "acme")) and url in rc.hgetall(event_key(n))
    assert routed(api, db, n3, "beta") == ids(b)
    assert routed(api, db, n3) == []
    # DELETE removes the entries from the tenant's hashes only
    st, _, _ = api.delete(f"{HOOKS}/{n}/{a['id']}")
    assert st == 200
    assert url not in rc.hgetall(event_key(n, "acme"))
    assert url in rc.hgetall(event_key(n))
    assert routed(api, db, n, "acme") == []
    assert routed(api, db, n) == ids(g)


def test_patterns_per_tenant(api, db, rc):
    p = unique_name("ten.pat")
    a = register(api, [f"{p}.*"], "http://127.0.0.1:9/pa", tenant="acme")
    b = register(api, [f"{p}.*"], "http://127.0.0.1:9/pb", tenant="beta")
    g = register(api, [f"{p}.*"], "http://127.0.0.1:9/pg")
    star = register(api, ["*"], "http://127.0.0.1:9/star-acme", tenant="acme")
    try:
        assert list(rc.hgetall(event_key(f"{p}.*", "acme"))) == ["http://127.0.0.1:9/pa"]
        assert "http://127.0.0.1:9/star-acme" in rc.hgetall(event_key("*", "acme"))
        assert "http://127.0.0.1:9/star-acme" not in rc.hgetall(event_key("*"))
        assert routed(api, db, f"{p}.x.y", "acme") == ids(a, star)
        assert routed(api, db, f"{p}.x", "beta") == ids(b)
        assert routed(api, db, f"{p}.x") == ids(g)
        assert routed(api, db, p, "acme") == ids(star)  # "p" itself: not under p.*
    finally:
        api.delete(f"{HOOKS}/*/{star['id']}")


def test_idempotency_key_per_tenant(api, db):
    n = unique_name("ten.idem")
    register(api, [n], "http://127.0.0.1:9/ia", tenant="acme")
    key = {"Idempotency-Key": "order-42"}
    ea = trigger(api, n, "acme", headers=key)
    eb = trigger(api, n, "beta", headers=key)
    eg = trigger(api, n, headers=key)
    assert len({ea["eventId"], eb["eventId"], eg["eventId"]}) == 3
    assert ea["jobs"] == 1 and eb["jobs"] == 0 and eg["jobs"] == 0
    # within one tenant it deduplicates, answering the first event
    st, h, again = api.post(f"{TRIGGER}/{n}?tenant=acme", b'{"n":1}', headers=key)
    assert st == 202 and h.get("Idempotent-Replayed") == "true", again
    assert again == {"eventId": ea["eventId"], "eventName": n, "tenant": "acme", "jobs": 1}
    st, h, again = api.post(f"{TRIGGER}/{n}", b'{"n":1}', headers=key)
    assert st == 202 and again["eventId"] == eg["eventId"] and again["tenant"] is None
    assert db.count("events", f"event_name = '{n}'") == 3


def test_listings_by_tenant(api, db):
    n = unique_name("ten.list")
    a = register(api, [n], "http://127.0.0.1:9/la", tenant="lista")
    b = register(api, [n], "http://127.0.0.1:9/lb", tenant="listb")
    g = register(api, [n], "http://127.0.0.1:9/lg")

    def listed(path):
        st, _, data = api.get(path)
        assert st == 200, data
        return sorted(s["id"] for s in data["webhooks"]), data["total"]

    assert listed(f"{HOOKS}/{n}") == (ids(a, b, g), 3)
    assert listed(f"{HOOKS}/{n}?tenant=lista") == (ids(a), 1)
    assert listed(f"{HOOKS}/{n}?tenant=") == (ids(g), 1)
    assert listed(f"{HOOKS}?tenant=listb&page_size=500") == (ids(b), 1)
    got, total = listed(f"{HOOKS}?page_size=500")
    assert {a["id"], b["id"], g["id"]} <= set(got)
    got, total = listed(f"{HOOKS}?tenant=&page_size=500")
    assert g["id"] in got and a["id"] not in got and b["id"] not in got
    assert_error(api.get(f"{HOOKS}?tenant=a:b"), 400, "invalid_field")
    assert_error(api.get(f"{HOOKS}/{n}?tenant=a%20b"), 400, "invalid_field")


def test_invalid_tenants_write_nothing(api, db, rc):
    n = unique_name("ten.bad")
    sub = register(api, [n], "http://127.0.0.1:9/bad", tenant="acme")
    before = snapshot(db, rc)
    for bad in ["", "a:b", "a.b", "x" * 65, "é", 5, True, ["acme"]]:
        resp = api.post(HOOKS, {"eventNames": [n], "webhookUrl": "http://127.0.0.1:9/b2",
                                "tenant": bad})
        assert_error(resp, 400, "invalid_field")
        assert "tenant" in resp[2]["error"]["message"]
    # the operational events stay global
    assert_error(api.post(HOOKS, {"eventNames": ["broker.endpoint.disabled"],
                                  "webhookUrl": "http://127.0.0.1:9/ops", "tenant": "acme"}),
                 400, "invalid_field")
    # the tenant is fixed at registration
    path = f"{HOOKS}/{n}/{sub['id']}"
    for other in ["beta", None]:
        resp = api.request("PATCH", path, {"tenant": other, "description": "x"})
        assert_error(resp, 400, "invalid_field")
        assert "tenant" in resp[2]["error"]["message"]
    assert_error(api.request("PATCH", path, {"tenant": "a:b"}), 400, "invalid_field")
    # triggers: a malformed tenant
    for bad in ["", "a:b", "x" * 65, "a%2Fb"]:
        assert_error(api.post(f"{TRIGGER}/{n}?tenant={bad}", b"{}"), 400, "invalid_field")
    assert snapshot(db, rc) == before
    # the same tenant again is accepted (and changes what else was given)
    st, _, same = api.request("PATCH", path, {"tenant": "acme", "description": "kept"})
    assert st == 200 and same["tenant"] == "acme" and same["description"] == "kept", same
    g = register(api, [n], "http://127.0.0.1:9/bad-g")
    st, _, same = api.request("PATCH", f"{HOOKS}/{n}/{g['id']}", {"tenant": None})
    assert st == 200 and same["tenant"] is None, same
    assert_error(api.request("PATCH", f"{HOOKS}/{n}/{g['id']}", {"tenant": "acme"}), 400,
                 "invalid_field")


def make_key(api, roles, tenant=None):
    body = {"roles": roles, "name": f"test {'+'.join(roles)} {tenant}"}
    if tenant is not None:
        body["tenant"] = tenant
    st, _, data = api.post("/api/v0/keys", body)
    assert st == 201, data
    return {"Authorization": f"Bearer {data['key']}"}


def test_keys_limited_to_a_tenant(api, db, rc):
    n = unique_name("ten.key")
    ka = make_key(api, ["tenant"], "kacme")
    pa = make_key(api, ["producer"], "kacme")
    p0 = make_key(api, ["producer"])
    # a tenant key registers in its own tenant; naming another is 403 and writes nothing
    st, _, a = api.post(HOOKS, {"eventNames": [n], "webhookUrl": "http://127.0.0.1:9/ka"},
                        headers=ka)
    assert st == 201 and a["tenant"] == "kacme", a
    assert list(rc.hgetall(event_key(n, "kacme"))) == ["http://127.0.0.1:9/ka"]
    before = snapshot(db, rc)
    for other in ["kbeta", None]:
        assert_error(api.post(HOOKS, {"eventNames": [n], "webhookUrl": "http://127.0.0.1:9/kx",
                                      "tenant": other}, headers=ka), 403, "forbidden")
    assert snapshot(db, rc) == before
    st, _, again = api.post(HOOKS, {"eventNames": [n], "webhookUrl": "http://127.0.0.1:9/ka",
                                    "tenant": "kacme"}, headers=ka)
    assert st == 200 and again["id"] == a["id"], again
    b = register(api, [n], "http://127.0.0.1:9/kb", tenant="kbeta")
    g = register(api, [n], "http://127.0.0.1:9/kg")

    # another tenant's subscription, or a global one, answers exactly like a missing one
    missing = "0190a8a5-0000-7000-8000-0000000000ff"

    def same_404(sub_id, method, suffix="", body=None):
        got = api.request(method, f"{HOOKS}/{n}/{sub_id}{suffix}", body, headers=ka)
        ref = api.request(method, f"{HOOKS}/{n}/{missing}{suffix}", body, headers=ka)
        assert_error(got, 404, "not_found")
        assert_error(ref, 404, "not_found")
        assert got[2]["error"]["message"] == ref[2]["error"]["message"].replace(missing, sub_id)

    before = snapshot(db, rc)
    for other in (b, g):
        same_404(other["id"], "GET")
        same_404(other["id"], "PATCH", body={"description": "taken over"})
        same_404(other["id"], "DELETE")
        same_404(other["id"], "POST", "/rotate-secret")
    assert snapshot(db, rc) == before
    st, _, mine = api.request("GET", f"{HOOKS}/{n}/{a['id']}", headers=ka)
    assert st == 200 and mine["id"] == a["id"] and mine["secret"].startswith("whsec_")
    st, _, mine = api.request("PATCH", f"{HOOKS}/{n}/{a['id']}", {"description": "mine"},
                              headers=ka)
    assert st == 200 and mine["description"] == "mine"
    assert_error(api.request("PATCH", f"{HOOKS}/{n}/{a['id']}", {"tenant": "kbeta"},
                             headers=ka), 400, "invalid_field")
    # listings: its own only
    st, _, listed = api.request("GET", f"{HOOKS}?page_size=500", headers=ka)
    assert st == 200 and [w["id"] for w in listed["webhooks"]] == [a["id"]], listed
    assert listed["total"] == 1
    st, _, listed = api.request("GET", f"{HOOKS}/{n}", headers=ka)
    assert st == 200 and [w["id"] for w in listed["webhooks"]] == [a["id"]], listed
    st, _, listed = api.request("GET", f"{HOOKS}?tenant=kacme", headers=ka)
    assert st == 200 and [w["id"] for w in listed["webhooks"]] == [a["id"]], listed
    assert_error(api.request("GET", f"{HOOKS}?tenant=kbeta", headers=ka), 403, "forbidden")
    assert_error(api.request("GET", f"{HOOKS}/{n}?tenant=", headers=ka), 403, "forbidden")

    # a producer limited to kacme triggers for kacme only
    st, _, ev = api.post(f"{TRIGGER}/{n}", b"{}", headers=pa)
    assert st == 202 and ev["tenant"] == "kacme" and ev["jobs"] == 1, ev
    assert [j["subscription_id"] for j in db.jobs(ev["eventId"])] == [a["id"]]
    st, _, ev2 = api.post(f"{TRIGGER}/{n}?tenant=kacme", b"{}", headers=pa)
    assert st == 202 and ev2["tenant"] == "kacme", ev2
    before = snapshot(db, rc)
    assert_error(api.post(f"{TRIGGER}/{n}?tenant=kbeta", b"{}", headers=pa), 403, "forbidden")
    assert snapshot(db, rc) == before
    # a producer without a tenant names any tenant, or none
    st, _, evb = api.post(f"{TRIGGER}/{n}?tenant=kbeta", b"{}", headers=p0)
    assert st == 202 and evb["tenant"] == "kbeta", evb
    assert [j["subscription_id"] for j in db.jobs(evb["eventId"])] == [b["id"]]
    st, _, evg = api.post(f"{TRIGGER}/{n}", b"{}", headers=p0)
    assert st == 202 and evg["tenant"] is None, evg
    assert [j["subscription_id"] for j in db.jobs(evg["eventId"])] == [g["id"]]
    # events: the tenant key sees its tenant's only; another's or a global one is a 404
    st, _, got = api.request("GET", f"/api/v0/events/{ev['eventId']}", headers=ka)
    assert st == 200 and got["tenant"] == "kacme" and len(got["jobs"]) == 1, got
    for other in (evb, evg):
        got = api.request("GET", f"/api/v0/events/{other['eventId']}", headers=ka)
        ref = api.request("GET", f"/api/v0/events/{missing}", headers=ka)
        assert_error(got, 404, "not_found")
        assert got[2]["error"]["message"] == \
            ref[2]["error"]["message"].replace(missing, other["eventId"])
    st, _, got = api.get(f"/api/v0/events/{evb['eventId']}")  # the admin sees every one
    assert st == 200 and got["tenant"] == "kbeta"


def test_webhookctl_tenant_flags(api, db, broker, need_binaries):
    need_binaries("webhookctl")

    def ctl(*args):
        env = {"WEBHOOK_API_URL": f"http://127.0.0.1:{broker.port}", "WEBHOOK_API_KEY": API_KEY}
        out = subprocess.run([str(harness.binary("webhookctl")), *args],
                             env=harness.base_env(env), capture_output=True, text=True,
                             timeout=60)
        harness.assert_no_sanitizer_report(out.stderr, "webhookctl")
        assert out.returncode == 0, f"exit {out.returncode}: {out.stdout} {out.stderr}"
        return out.stdout

    n = unique_name("ten.ctl")
    made = json.loads(ctl("subs", "create", "--event", n, "--url", "http://127.0.0.1:9/ctl",
                          "--tenant", "ctlten", "--json"))
    assert made["tenant"] == "ctlten", made
    g = json.loads(ctl("subs", "create", "--event", n, "--url", "http://127.0.0.1:9/ctl",
                       "--json"))
    assert g["tenant"] is None and g["id"] != made["id"]
    listed = json.loads(ctl("subs", "list", "--tenant", "ctlten", "--json"))
    assert [w["id"] for w in listed["webhooks"]] == [made["id"]]
    table = ctl("subs", "list", "--event", n)
    assert "TENANT" in table.splitlines()[0] and "ctlten" in table, table
    ev = json.loads(ctl("trigger", n, "--tenant", "ctlten", "--json"))
    assert ev["tenant"] == "ctlten" and ev["jobs"] == 1, ev
    assert [j["subscription_id"] for j in db.jobs(ev["eventId"])] == [made["id"]]


def test_reconciler_repairs_tenant_hashes(api, db, rc, redis):
    n = unique_name("ten.rec")
    a = register(api, [n, f"{n}.*"], "http://127.0.0.1:9/ra", tenant="acme")
    b = register(api, [n], "http://127.0.0.1:9/rb", tenant="beta")
    g = register(api, [n], "http://127.0.0.1:9/rg")
    # a pass over a correct index changes nothing (tenant hashes recognised, not deleted)
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] == 0, counts
    assert list(rc.hgetall(event_key(n, "beta"))) == ["http://127.0.0.1:9/rb"]
    # acme's hashes lost, a stale entry planted in beta's
    rc.call("DEL", event_key(n, "acme"), event_key(f"{n}.*", "acme"))
    rc.call("HSET", event_key(n, "beta"), "http://127.0.0.1:9/stale",
            '{"id":"0190a8a5-0000-7000-8000-00000000dead","status":"active"}')
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] == 3, counts
    assert list(rc.hgetall(event_key(n, "acme"))) == ["http://127.0.0.1:9/ra"]
    assert list(rc.hgetall(event_key(f"{n}.*", "acme"))) == ["http://127.0.0.1:9/ra"]
    assert list(rc.hgetall(event_key(n, "beta"))) == ["http://127.0.0.1:9/rb"]
    assert list(rc.hgetall(event_key(n))) == ["http://127.0.0.1:9/rg"]
    assert rc.call("EXISTS", event_key(n, "acme")) == 1
    assert routed(api, db, n, "acme") == ids(a)
    assert routed(api, db, f"{n}.x", "acme") == ids(a)
    assert routed(api, db, n, "beta") == ids(b)
    assert routed(api, db, n) == ids(g)
    counts, _ = run_reconciler(redis, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.1)
    assert counts["index"] == 0, counts


def test_scoping_survives_redis_losing_everything(api, db, redis):
    """Last in the module: Redis is killed and wiped, then FLUSHALLed."""
    n = unique_name("ten.wipe")
    a = register(api, [n, f"{n}.*"], "http://127.0.0.1:9/wa", tenant="acme")
    b = register(api, [f"{n}.*"], "http://127.0.0.1:9/wb", tenant="beta")
    g = register(api, [n], "http://127.0.0.1:9/wg")
    redis.kill()
    redis.wipe_files()
    redis.start()

    def trigger_ok():
        st, _, data = api.post(f"{TRIGGER}/{n}.x?tenant=acme", b"{}")
        return data if st == 202 else None

    def rebuilt():
        return redis.call("EXISTS", INDEX_READY) == 1

    # the PostgreSQL fallback keeps the scoping, then the rebuild writes the tenant hashes
    data = wait_until(trigger_ok, 20, "the broker to accept triggers again")
    assert sorted(j["subscription_id"] for j in db.jobs(data["eventId"])) == ids(a)
    wait_until(rebuilt, 20, "the index rebuild")
    with redis.client() as rc:
        assert list(rc.hgetall(event_key(n, "acme"))) == ["http://127.0.0.1:9/wa"]
        assert list(rc.hgetall(event_key(f"{n}.*", "beta"))) == ["http://127.0.0.1:9/wb"]
        assert list(rc.hgetall(event_key(n))) == ["http://127.0.0.1:9/wg"]
    assert routed(api, db, f"{n}.x", "acme") == ids(a)
    assert routed(api, db, f"{n}.x", "beta") == ids(b)
    assert routed(api, db, f"{n}.x") == []
    assert routed(api, db, n) == ids(g)
    redis.call("FLUSHALL")
    assert routed(api, db, n, "acme") == ids(a)  # from PostgreSQL
    assert routed(api, db, n) == ids(g)
    wait_until(rebuilt, 20, "the index rebuild after FLUSHALL")
    assert routed(api, db, f"{n}.y", "beta") == ids(b)
    assert routed(api, db, n, "acme") == ids(a)
    with redis.client() as rc:
        assert list(rc.hgetall(event_key(f"{n}.*", "acme"))) == ["http://127.0.0.1:9/wa"]
