"""Every route x every kind of key (issue 13, docs/decisions.md 45 and 46), driven by the
router's own table: the operations and their x-roles are read from docs/openapi.json, which
test_openapi.py proves equal to broker/http.c's routes[] (paths and roles), so a route added to
the router without a decision here fails test_every_operation_has_a_decision.

For each operation and each principal (admin keys from the environment and from the table, a
global producer, a producer of tenant A, a tenant A key, a tenant A key that also produces, a
tenant B key) and, for operations on one object, each owner of that object (global, tenant A,
tenant B), a concrete request is sent and:
- a key without one of the operation's roles: 403 forbidden, and nothing written (a digest of
  every table and of every Redis key and value, before and after);
- a tenant key naming an object that is not its tenant's (another tenant's or a global one):
  404 not_found, as a missing object would answer, and nothing written;
- otherwise a 2xx answer.
The scoped contents of the job search and the stats (decision 46) have tests of their own
below."""

import datetime
import hashlib
import json
import time

import pytest

from harness import OPENAPI_DOC, assert_error, sql_quote, unique_name, wait_until

TENANT_A = "ten-a"
TENANT_B = "ten-b"

# name -> the POST /api/v0/keys body (None: the environment's WEBHOOK_API_KEYS key)
PRINCIPALS = {
    "env_admin": None,
    "table_admin": {"roles": ["admin"]},
    "producer": {"roles": ["producer"]},
    "producer_a": {"roles": ["producer"], "tenant": TENANT_A},
    "tenant_a": {"roles": ["tenant"], "tenant": TENANT_A},
    "tenant_producer_a": {"roles": ["tenant", "producer"], "tenant": TENANT_A},
    "tenant_b": {"roles": ["tenant"], "tenant": TENANT_B},
}

OWNERS = ("global", TENANT_A, TENANT_B)

# The decision for each operationId. "object": what the path names, whose owner decides a tenant
# key's answer ("sub", "job", "event", "recovery"; "key": an API key, owned by nobody; None: no
# object); "ok": the answers of an allowed request; "fresh": the request consumes its object, so
# each case gets a new one; "public": no key needed (not in the role matrix).
OPERATIONS = {
    "getHealthz": {"public": True, "ok": {200}},
    "getReadyz": {"public": True, "ok": {200}},
    "getMetrics": {"public": True, "ok": {200}},
    "getOpenApi": {"public": True, "ok": {200}},
    "getConsole": {"public": True, "ok": {200}},
    "getConsoleScript": {"public": True, "ok": {200}},
    "getConsoleStyle": {"public": True, "ok": {200}},
    "listSubscriptions": {"object": None, "ok": {200}},
    "registerSubscription": {"object": None, "ok": {200, 201}},
    "listEventSubscriptions": {"object": None, "ok": {200}},
    "getSubscription": {"object": "sub", "ok": {200}},
    "deleteSubscription": {"object": "sub", "ok": {200}, "fresh": True},
    "patchSubscription": {"object": "sub", "ok": {200}},
    "rotateSecret": {"object": "sub", "ok": {200}},
    "getSubscriptionStatus": {"object": "sub", "ok": {200}},
    "startRecovery": {"object": "sub", "ok": {200, 202}},
    "getRecovery": {"object": "recovery", "ok": {200}},
    "triggerEvent": {"object": None, "ok": {202}},
    "getEvent": {"object": "event", "ok": {200}},
    "replayEvent": {"object": "event", "ok": {202}},
    "listJobs": {"object": None, "ok": {200}},
    "getJob": {"object": "job", "ok": {200}},
    "retryJob": {"object": "job", "ok": {202}},
    "getDelivery": {"object": None, "ok": {200}},
    "putDelivery": {"object": None, "ok": {200}},
    "getStats": {"object": None, "ok": {200}},
    "listKeys": {"object": None, "ok": {200}},
    "createKey": {"object": None, "ok": {201}},
    "revokeKey": {"object": "key", "ok": {200}, "fresh": True},
    "whoAmI": {"object": None, "ok": {200}},
}


def operations():
    """[(operationId, METHOD, path template, x-roles or None for a public one)] of the
    document."""
    doc = json.loads(OPENAPI_DOC.read_text())
    out = []
    for tmpl, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            roles = None if op.get("security") == [] else op["x-roles"]
            out.append((op["operationId"], method.upper(), tmpl, roles))
    return out


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class World:
    """The fixtures every case refers to: per owner a subscription with a job (dead, so that
    it can be retried), its event and a recovery; the keys of every principal."""

    def __init__(self, api, db, rc):
        self.api, self.db, self.rc = api, db, rc
        self.keys = {}
        for name, body in PRINCIPALS.items():
            if body is None:
                self.keys[name] = None  # the harness's default Authorization header
                continue
            st, _, data = api.post("/api/v0/keys", dict(body, name=f"roles {name}"))
            assert st == 201, (st, data)
            self.keys[name] = data["key"]
        self.sub, self.event, self.job, self.recovery = {}, {}, {}, {}
        for owner in OWNERS:
            sub = self.make_sub(owner)
            ev = self.trigger(sub["eventName"], owner)
            wait_until(lambda: db.count("jobs", f"event_id = {sql_quote(ev)}") == 1, 20,
                       "the fixture's job")
            job = db.scalar(f"SELECT id FROM jobs WHERE event_id = {sql_quote(ev)}")
            self.sub[owner], self.event[owner], self.job[owner] = sub, ev, job
            self.make_dead(owner)
            st, _, rec = api.post(self.sub_path(owner, "/recover"), {"since": iso(time.time() - 3600)})
            assert st in (200, 202), (st, rec)
            self.recovery[owner] = rec["id"]
        self.quiet()

    def auth(self, principal):
        key = self.keys[principal]
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    def make_sub(self, owner, event=None):
        """A subscription of owner (a tenant, or "global"), registered by the admin key."""
        body = {"eventName": event or unique_name("roles"),
                "webhookUrl": f"http://127.0.0.1:9/{owner}/{unique_name('u')}"}
        if owner != "global":
            body["tenant"] = owner
        st, _, sub = self.api.post("/api/v0/webhooks", body)
        assert st == 201 and sub["tenant"] == (None if owner == "global" else owner), (st, sub)
        return sub

    def trigger(self, event, owner):
        """An event of owner's, triggered by the admin key; its id."""
        path = f"/api/v0/trigger-event/{event}"
        if owner != "global":
            path += f"?tenant={owner}"
        st, _, data = self.api.post(path, {"n": 1})
        assert st == 202, (st, data)
        return data["eventId"]

    def make_dead(self, owner):
        self.db.sql("UPDATE jobs SET status = 'dead', updated_at = now() - interval '1 second' "
                    f"WHERE id = {sql_quote(self.job[owner])}")

    def sub_path(self, owner, suffix="", sub=None):
        sub = sub or self.sub[owner]
        return f"/api/v0/webhooks/{sub['eventName']}/{sub['id']}{suffix}"

    def quiet(self):
        """Waits until no recovery is running (their runners write in the background)."""
        wait_until(lambda: self.db.count("recoveries", "status = 'running'") == 0, 30,
                   "the recoveries to finish")

    def digest(self):
        """A digest of every table's rows and every Redis key's value."""
        tables = [t for (t,) in self.db.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        assert "jobs" in tables and "api_keys" in tables, tables
        q = " UNION ALL ".join(
            f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
            f" FROM \"{t}\" x" for t in tables)
        pg = self.db.sql(q)
        red = []
        cursor = b"0"
        while True:
            cursor, keys = self.rc.call("SCAN", cursor, "COUNT", 1000)
            for k in keys:
                red.append((k, self.rc.call("DUMP", k)))
            if cursor in (b"0", "0"):
                break
        red.sort()
        return pg, hashlib.sha256(repr(red).encode()).hexdigest()

    def prepare(self, op_id, tmpl, owner):
        """The concrete path of a case (a new object made first when the request consumes
        it)."""
        spec = OPERATIONS[op_id]
        obj = spec.get("object")
        sub = self.sub.get(owner)
        if obj == "sub" and spec.get("fresh"):
            sub = self.make_sub(owner)
        if obj in ("sub", "recovery"):
            params = {"eventName": sub["eventName"], "id": sub["id"],
                      "recoveryId": self.recovery.get(owner)}
        elif obj == "job":
            params = {"jobId": self.job[owner]}
        elif obj == "event":
            params = {"eventId": self.event[owner]}
        elif obj == "key":
            st, _, k = self.api.post("/api/v0/keys", {"roles": ["tenant"], "tenant": "ten-z"})
            assert st == 201, (st, k)
            params = {"keyId": k["id"]}
        else:
            params = {"eventName": unique_name("roles")}
        path = tmpl
        for name, value in params.items():
            path = path.replace("{" + name + "}", str(value))
        assert "{" not in path, (op_id, path)
        return path

    def request(self, op_id, method, path, principal):
        """Sends a case's request with a body valid for the route; the answer."""
        bodies = {
            "registerSubscription": {"eventName": unique_name("roles"),
                                     "webhookUrl": f"http://127.0.0.1:9/{unique_name('r')}"},
            "patchSubscription": {"description": f"patched by {principal}"},
            "rotateSecret": {"gracePeriodSeconds": 60},
            "startRecovery": {"since": iso(time.time() - 3600)},
            "triggerEvent": {"n": 2},
            "putDelivery": {"status": "online"},
            "createKey": {"roles": ["tenant"], "tenant": "ten-z"},
        }
        return self.api.request(method, path, bodies.get(op_id), headers=self.auth(principal))


@pytest.fixture(scope="module")
def world(broker, db, redis):
    rc = redis.client()
    try:
        yield World(broker.api, db, rc)
    finally:
        rc.close()


def test_every_operation_has_a_decision():
    ops = {op_id for op_id, *_ in operations()}
    assert len(ops) == len(operations()), "operationIds must be unique"
    missing = ops - set(OPERATIONS)
    assert not missing, f"operations without an entry in test_roles.OPERATIONS: {sorted(missing)}"
    stale = set(OPERATIONS) - ops
    assert not stale, f"entries of test_roles.OPERATIONS the document lacks: {sorted(stale)}"
    for op_id, _, _, roles in operations():
        assert OPERATIONS[op_id].get("public", False) == (roles is None), op_id


def cases():
    out = []
    for op_id, method, tmpl, roles in operations():
        spec = OPERATIONS.get(op_id, {})
        if roles is None:
            continue
        for principal in PRINCIPALS:
            for owner in (OWNERS if spec.get("object") in ("sub", "job", "event", "recovery")
                          else (None,)):
                out.append(pytest.param(op_id, method, tmpl, tuple(roles), principal, owner,
                                        id=f"{op_id}-{principal}-{owner or 'none'}"))
    return out


def expected(roles, principal, owner):
    """"forbidden", "not_found" or "ok" for a principal on an object of owner."""
    body = PRINCIPALS[principal]
    have = ["admin"] if body is None else body["roles"]
    if not set(have) & set(roles):
        return "forbidden"
    if "admin" in have or owner is None:
        return "ok"
    return "ok" if owner == body["tenant"] else "not_found"


@pytest.mark.parametrize("op_id,method,tmpl,roles,principal,owner", cases())
def test_route_x_role(world, op_id, method, tmpl, roles, principal, owner):
    want = expected(roles, principal, owner)
    spec = OPERATIONS[op_id]
    if op_id == "retryJob":
        world.make_dead(owner)
    path = world.prepare(op_id, tmpl, owner)
    world.quiet()
    before = world.digest() if want != "ok" else None
    resp = world.request(op_id, method, path, principal)
    st, _, data = resp
    if want == "forbidden":
        assert_error(resp, 403, "forbidden")
    elif want == "not_found":
        assert_error(resp, 404, "not_found")
    else:
        assert st in spec["ok"], f"{op_id} by {principal} on {owner}'s: {st} {data!r}"
    if want != "ok":
        world.quiet()
        assert world.digest() == before, f"{op_id} by {principal} wrote something ({st})"


def test_public_routes_need_no_key(world):
    for op_id, method, tmpl, roles in operations():
        if roles is not None:
            continue
        st, _, data = world.api.request(method, tmpl, headers={"Authorization": None})
        assert st in OPERATIONS[op_id]["ok"], (op_id, st)


# ---- the scoped contents of the job search and the stats (decision 46) --------------------


def job_ids(world, principal, query=""):
    st, _, data = world.api.get(f"/api/v0/jobs{query}", headers=world.auth(principal))
    assert st == 200, (st, data)
    return {j["id"] for j in data["jobs"]}, data


def test_job_search_is_confined_to_the_tenant(world):
    a, b, g = world.job[TENANT_A], world.job[TENANT_B], world.job["global"]
    sub_a, sub_b = world.sub[TENANT_A]["id"], world.sub[TENANT_B]["id"]
    seen, _ = job_ids(world, "tenant_a", "?limit=500")
    assert a in seen and b not in seen and g not in seen, seen
    assert all(j for j in seen)
    # Every job it sees is of a subscription of its tenant.
    tenants = {t for (t,) in world.db.sql(
        "SELECT DISTINCT s.tenant FROM jobs j JOIN subscriptions s ON s.id = j.subscription_id "
        "WHERE j.id IN (" + ", ".join(sql_quote(x) for x in seen) + ")")}
    assert tenants == {TENANT_A}, tenants
    # The admin sees every job, and one tenant's with ?tenant=.
    every, _ = job_ids(world, "env_admin", "?limit=500")
    assert {a, b, g} <= every
    only_b, _ = job_ids(world, "table_admin", f"?tenant={TENANT_B}&limit=500")
    assert b in only_b and a not in only_b and g not in only_b
    # Another tenant's subscription as a filter: an empty page (as for an unknown one).
    assert job_ids(world, "tenant_a", f"?subscription={sub_b}")[0] == set()
    assert a in job_ids(world, "tenant_a", f"?subscription={sub_a}")[0]
    # With the other filters: status, event name, both with the subscription.
    ev_a, ev_b = world.sub[TENANT_A]["eventName"], world.sub[TENANT_B]["eventName"]
    assert job_ids(world, "tenant_a", f"?event={ev_b}")[0] == set()
    assert a in job_ids(world, "tenant_a", f"?event={ev_a}")[0]
    assert a in job_ids(world, "tenant_a", f"?event={ev_a}&subscription={sub_a}")[0]
    st = world.db.scalar(f"SELECT status FROM jobs WHERE id = {sql_quote(a)}")
    assert a in job_ids(world, "tenant_a", f"?status={st}")[0]
    assert b not in job_ids(world, "tenant_a", "?status=" + world.db.scalar(
        f"SELECT status FROM jobs WHERE id = {sql_quote(b)}"))[0]
    # Its own tenant named explicitly is fine; another one is outside the key's scope.
    assert a in job_ids(world, "tenant_a", f"?tenant={TENANT_A}")[0]
    assert_error(world.api.get(f"/api/v0/jobs?tenant={TENANT_B}", headers=world.auth("tenant_a")),
                 403, "forbidden")
    assert_error(world.api.get("/api/v0/jobs?tenant=no/pe"), 400, "invalid_field")


def test_job_search_pages_through_a_tenant(world):
    """The tenant's merged per-subscription ranges page with the cursor like any search."""
    sub = world.make_sub(TENANT_A)
    made = [world.trigger(sub["eventName"], TENANT_A) for _ in range(5)]
    wait_until(lambda: world.db.count("jobs", f"subscription_id = {sql_quote(sub['id'])}") == 5,
               20, "the jobs")
    want = sorted((x for (x,) in world.db.sql(
        "SELECT j.id FROM jobs j JOIN subscriptions s ON s.id = j.subscription_id "
        f"WHERE s.tenant = {sql_quote(TENANT_A)}")), reverse=True)
    assert len(want) >= 6 and made
    got, query = [], "?limit=2"
    while True:
        st, _, page = world.api.get(f"/api/v0/jobs{query}", headers=world.auth("tenant_a"))
        assert st == 200, page
        got += [j["id"] for j in page["jobs"]]
        if not page["next"]:
            break
        query = f"?limit=2&cursor={page['next']}"
    assert got == want


def test_stats_of_a_tenant_key_are_its_own(world):
    sub_a, sub_b = world.sub[TENANT_A], world.sub[TENANT_B]
    world.db.sql(
        "INSERT INTO subscription_stats (subscription_id, bucket, backend, delivered, "
        "failed_attempts, dead) VALUES "
        f"({sql_quote(sub_a['id'])}, date_trunc('hour', now()), 99, 7, 3, 1), "
        f"({sql_quote(sub_b['id'])}, date_trunc('hour', now()), 99, 50, 40, 30) "
        "ON CONFLICT DO NOTHING")
    st, _, a = world.api.get("/api/v0/stats", headers=world.auth("tenant_a"))
    assert st == 200, a
    names = {e["eventName"] for e in a["events"]}
    assert sub_a["eventName"] in names and sub_b["eventName"] not in names
    assert world.sub["global"]["eventName"] not in names
    row = next(e for e in a["events"] if e["eventName"] == sub_a["eventName"])
    assert (row["delivered"], row["failedAttempts"], row["dead"]) == (7, 3, 1), row
    assert row["triggers"] >= 1 and row["jobsCreated"] >= 1, row
    assert a["total"]["delivered"] == sum(e["delivered"] for e in a["events"])
    # The admin's ?tenant= gives the same answer; a tenant key may not ask for another tenant.
    st, _, same = world.api.get(f"/api/v0/stats?tenant={TENANT_A}")
    assert st == 200 and same["events"] == a["events"], (a, same)
    assert_error(world.api.get(f"/api/v0/stats?tenant={TENANT_B}", headers=world.auth("tenant_a")),
                 403, "forbidden")
    st, _, b = world.api.get("/api/v0/stats", headers=world.auth("tenant_b"))
    assert st == 200 and b["total"]["delivered"] == 50 and b["total"]["dead"] == 30, b


def test_replay_reaches_only_the_events_tenant(world):
    """Three subscriptions of one name (global, tenant A, tenant B): an event of tenant A is
    replayed to A's subscription only, whoever asks; B's key cannot replay it."""
    event = unique_name("roles.replay")
    subs = {owner: world.make_sub(owner, event) for owner in OWNERS}
    ev = world.trigger(event, TENANT_A)
    for principal in ("tenant_a", "env_admin"):
        st, _, data = world.api.post(f"/api/v0/events/{ev}/replay", headers=world.auth(principal))
        assert st == 202, data
        assert [j["subscriptionId"] for j in data["jobs"]] == [subs[TENANT_A]["id"]], data
    # Naming another tenant's (or a global) subscription: refused as not a subscriber.
    for owner in ("global", TENANT_B):
        resp = world.api.post(f"/api/v0/events/{ev}/replay",
                              {"subscriptionIds": [subs[owner]["id"]]})
        assert_error(resp, 400, "invalid_field")
    world.quiet()
    before = world.digest()
    assert_error(world.api.post(f"/api/v0/events/{ev}/replay", headers=world.auth("tenant_b")),
                 404, "not_found")
    assert world.digest() == before
