"""API keys with roles (issue 13, decision 45): POST /api/v0/keys makes a key (shown once, kept
as its SHA-256), GET lists them without the secret, DELETE revokes at once on the broker that
revoked and within a second on the others, GET /api/v0/whoami tells a key what it is; the
router gives each role its routes (403 otherwise); keys are never written to a log or stored in
clear; docs/api.md's table of routes and roles is the router's."""

import hashlib
import json
import re
import time
import uuid

import pytest

import harness
from harness import API_KEY, TIME_RE, UUID_RE, assert_error, unique_name
from test_openapi import router_table

KEY_RE = re.compile(r"^whk_[0-9a-f]{64}$")
KEY_MEMBERS = {"id", "prefix", "name", "roles", "tenant", "createdAt", "revokedAt"}
ROLE_ORDER = ["admin", "producer", "tenant"]


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def make_key(api, roles, tenant=None, name=None):
    body = {"roles": roles}
    if tenant is not None:
        body["tenant"] = tenant
    if name is not None:
        body["name"] = name
    status, _, data = api.post("/api/v0/keys", body)
    assert status == 201, (body, status, data)
    return data


def whoami(api, key):
    return api.get("/api/v0/whoami", headers=bearer(key))


def key_rows(db):
    """The api_keys table as comparable text (to check that a refused request wrote nothing)."""
    return db.sql("SELECT id, encode(sha256, 'hex'), prefix, name, roles::text, tenant, "
                  "created_at, revoked_at FROM api_keys ORDER BY id")


# --- making, listing, whoami -----------------------------------------------------------------

VALID = [
    (["admin"], None),
    (["producer"], None),
    (["producer"], "acme"),
    (["tenant"], "acme"),
    (["tenant", "producer"], "acme-2_B"),
    (["producer", "tenant"], "a" * 64),
]


@pytest.mark.parametrize("roles,tenant", VALID)
def test_create_each_valid_combination(api, db, roles, tenant):
    name = f"svc {unique_name('k')}"
    before = db.count("api_keys")
    k = make_key(api, roles, tenant, name)
    assert set(k) == KEY_MEMBERS | {"key"}, k
    assert KEY_RE.match(k["key"]), k["key"]
    assert UUID_RE.match(k["id"]) and TIME_RE.match(k["createdAt"]), k
    assert k["prefix"] == k["key"][:12]
    assert k["roles"] == [r for r in ROLE_ORDER if r in roles]  # one order, whatever was sent
    assert k["tenant"] == tenant and k["name"] == name and k["revokedAt"] is None
    assert db.count("api_keys") == before + 1

    status, _, me = whoami(api, k["key"])
    assert status == 200, me
    assert me == {"roles": k["roles"], "tenant": tenant, "keyId": k["id"]}

    status, _, listed = api.get("/api/v0/keys")
    assert status == 200 and set(listed) == {"keys"}
    mine = [x for x in listed["keys"] if x["id"] == k["id"]]
    assert len(mine) == 1
    assert set(mine[0]) == KEY_MEMBERS  # never the key itself
    assert mine[0] == {m: k[m] for m in KEY_MEMBERS}
    assert k["key"] not in json.dumps(listed) and k["key"][4:] not in json.dumps(listed)


def test_name_is_optional_and_counted_in_characters(api):
    k = make_key(api, ["producer"])
    assert k["name"] is None and k["tenant"] is None
    assert make_key(api, ["producer"], name=None)["name"] is None
    assert make_key(api, ["producer"], name="x" * 200)["name"] == "x" * 200
    # 200 characters of two bytes each: the limit is in characters, as in docs/openapi.json.
    assert make_key(api, ["producer"], name="é" * 200)["name"] == "é" * 200
    status, _, data = api.post("/api/v0/keys", {"roles": ["producer"], "tenant": None})
    assert status == 201 and data["tenant"] is None, data


def test_whoami_of_an_environment_key(api):
    for key in (API_KEY, harness.API_KEY_2):
        status, _, me = whoami(api, key)
        assert status == 200
        assert me == {"roles": ["admin"], "tenant": None, "keyId": None}


def test_keys_list_is_oldest_first(api):
    a = make_key(api, ["producer"], name="first")
    b = make_key(api, ["producer"], name="second")
    ids = [k["id"] for k in api.get("/api/v0/keys")[2]["keys"]]
    assert ids.index(a["id"]) < ids.index(b["id"])
    assert all(KEY_MEMBERS == set(k) for k in api.get("/api/v0/keys")[2]["keys"])


# --- refusals --------------------------------------------------------------------------------

INVALID = [
    ({}, "missing_field"),
    ({"tenant": "acme"}, "missing_field"),
    ({"roles": []}, "invalid_field"),
    ({"roles": "admin"}, "invalid_field"),
    ({"roles": None}, "invalid_field"),
    ({"roles": {"admin": True}}, "invalid_field"),
    ({"roles": ["root"]}, "invalid_field"),
    ({"roles": ["Admin"]}, "invalid_field"),
    ({"roles": ["producer "]}, "invalid_field"),
    ({"roles": [1]}, "invalid_field"),
    ({"roles": [None]}, "invalid_field"),
    ({"roles": [["producer"]]}, "invalid_field"),
    ({"roles": ["producer", "producer"]}, "invalid_field"),
    ({"roles": ["tenant", "producer", "tenant"], "tenant": "acme"}, "invalid_field"),
    ({"roles": ["admin"], "tenant": "acme"}, "invalid_field"),
    ({"roles": ["admin", "producer"]}, "invalid_field"),
    ({"roles": ["admin", "tenant"], "tenant": "acme"}, "invalid_field"),
    ({"roles": ["tenant"]}, "missing_field"),
    ({"roles": ["tenant"], "tenant": None}, "missing_field"),
    ({"roles": ["tenant", "producer"]}, "missing_field"),
    ({"roles": ["producer"], "tenant": ""}, "invalid_field"),
    ({"roles": ["producer"], "tenant": "a b"}, "invalid_field"),
    ({"roles": ["producer"], "tenant": "a/b"}, "invalid_field"),
    ({"roles": ["producer"], "tenant": "acmé"}, "invalid_field"),
    ({"roles": ["producer"], "tenant": "a" * 65}, "invalid_field"),
    ({"roles": ["tenant"], "tenant": 42}, "invalid_field"),
    ({"roles": ["tenant"], "tenant": ["acme"]}, "invalid_field"),
    ({"roles": ["producer"], "name": ""}, "invalid_field"),
    ({"roles": ["producer"], "name": "x" * 201}, "invalid_field"),
    ({"roles": ["producer"], "name": "a\nb"}, "invalid_field"),
    ({"roles": ["producer"], "name": "tab\there"}, "invalid_field"),
    ({"roles": ["producer"], "name": "del\x7f"}, "invalid_field"),
    ({"roles": ["producer"], "name": 7}, "invalid_field"),
    ({"roles": ["producer"], "name": True}, "invalid_field"),
    ({"roles": ["producer"], "role": "tenant"}, "invalid_field"),
    ({"roles": ["producer"], "key": "whk_" + "0" * 64}, "invalid_field"),
    ({"roles": ["producer"], "id": str(uuid.uuid4())}, "invalid_field"),
]


@pytest.mark.parametrize("body,code", INVALID, ids=[json.dumps(b)[:60] for b, _ in INVALID])
def test_invalid_bodies_are_refused_and_write_nothing(api, db, body, code):
    before = key_rows(db)
    err = assert_error(api.post("/api/v0/keys", body), 400, code)
    assert len(err["message"]) > 10, err
    assert key_rows(db) == before


RAW_INVALID = [
    (b"roles=producer", "application/json", 400, "invalid_json"),
    (b"{", "application/json", 400, "invalid_json"),
    (b"", "application/json", 400, "invalid_json"),
    (b"[\"producer\"]", "application/json", 400, "invalid_json"),
    (b"null", "application/json", 400, "invalid_json"),
    (b'{"roles":["producer"]} {}', "application/json", 400, "invalid_json"),
    (b'{"roles":["producer"],"roles":["admin"]}', "application/json", 400, "invalid_json"),
    (b'{"roles":["producer"],"name":"a\\u0000b"}', "application/json", 400, "invalid_json"),
    (b'{"roles":["producer"],"name":"\xff"}', "application/json", 400, "invalid_json"),
    (b'{"roles":["producer"]}', "text/plain", 415, "unsupported_media_type"),
    (b'{"roles":["producer"]}', "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    (b'{"roles":["producer"]}', None, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("raw,ctype,status,code", RAW_INVALID)
def test_malformed_requests_are_refused_and_write_nothing(api, db, raw, ctype, status, code):
    before = key_rows(db)
    assert_error(api.post("/api/v0/keys", raw, headers={"Content-Type": ctype}), status, code)
    assert key_rows(db) == before


def test_other_methods_and_paths(api, db):
    before = key_rows(db)
    resp = api.request("PUT", "/api/v0/keys", {"roles": ["producer"]})
    assert_error(resp, 405, "method_not_allowed")
    assert resp[1].get("Allow") == "GET, POST"
    assert_error(api.request("GET", f"/api/v0/keys/{uuid.uuid4()}"), 405, "method_not_allowed")
    assert_error(api.request("POST", "/api/v0/whoami", {}), 405, "method_not_allowed")
    assert key_rows(db) == before


# --- roles -----------------------------------------------------------------------------------


def test_table_admin_key_does_what_an_environment_key_does(api, receiver):
    admin = make_key(api, ["admin"], name="ops")["key"]
    h = bearer(admin)
    event = unique_name("keys.admin")
    status, _, sub = api.post("/api/v0/webhooks",
                              {"eventName": event, "webhookUrl": receiver().url()}, headers=h)
    assert status == 201, sub
    status, _, ev = api.post(f"/api/v0/trigger-event/{event}", b"{}", headers=h)
    assert status == 202, ev
    status, _, got = api.get(f"/api/v0/events/{ev['eventId']}", headers=h)
    assert status == 200, got
    status, _, listed = api.get("/api/v0/keys", headers=h)
    assert status == 200 and listed["keys"]
    status, _, other = api.post("/api/v0/keys", {"roles": ["producer"]}, headers=h)
    assert status == 201, other
    status, _, _ = api.delete(f"/api/v0/keys/{other['id']}", headers=h)
    assert status == 200
    status, _, sw = api.get("/api/v0/admin/delivery", headers=h)
    assert status == 200, sw
    assert whoami(api, admin)[2]["roles"] == ["admin"]


def test_producer_key_triggers_only(api, db):
    for tenant in (None, "acme"):
        key = make_key(api, ["producer"], tenant)["key"]
        h = bearer(key)
        status, _, ev = api.post(f"/api/v0/trigger-event/{unique_name('keys.prod')}", b"{}",
                                 headers=h)
        assert status == 202, ev
        assert_error(api.get("/api/v0/webhooks", headers=h), 403, "forbidden")
        before = key_rows(db)
        err = assert_error(api.post("/api/v0/keys", {"roles": ["admin"]}, headers=h), 403,
                           "forbidden")
        assert "producer" in err["message"] and "admin" in err["message"], err
        assert_error(api.get("/api/v0/keys", headers=h), 403, "forbidden")
        assert_error(api.get("/api/v0/admin/delivery", headers=h), 403, "forbidden")
        assert key_rows(db) == before
        assert whoami(api, key)[0] == 200


def test_tenant_key_cannot_manage_keys_switch_delivery_or_trigger(api, db):
    k = make_key(api, ["tenant"], "acme")
    h = bearer(k["key"])
    keys_before, events_before = key_rows(db), db.count("events")
    for method, path, body in [
        ("GET", "/api/v0/keys", None),
        ("POST", "/api/v0/keys", {"roles": ["admin"]}),
        ("POST", "/api/v0/keys", {"roles": ["tenant"], "tenant": "acme"}),
        ("DELETE", f"/api/v0/keys/{k['id']}", None),
        ("GET", "/api/v0/admin/delivery", None),
        ("PUT", "/api/v0/admin/delivery", {"status": "offline"}),
        ("POST", f"/api/v0/trigger-event/{unique_name('keys.ten')}", b"{}"),
    ]:
        assert_error(api.request(method, path, body, headers=h), 403, "forbidden")
    assert key_rows(db) == keys_before
    assert db.count("events") == events_before
    assert api.get("/api/v0/admin/delivery")[2]["status"] == "online"
    # Its own routes are open to it (what it sees there is test_roles.py's and the tenant
    # scoping's business).
    assert api.get("/api/v0/webhooks", headers=h)[0] == 200
    assert whoami(api, k["key"])[2] == {"roles": ["tenant"], "tenant": "acme", "keyId": k["id"]}


def test_tenant_and_producer_key_can_trigger(api):
    key = make_key(api, ["tenant", "producer"], "acme")["key"]
    status, _, ev = api.post(f"/api/v0/trigger-event/{unique_name('keys.tp')}", b"{}",
                             headers=bearer(key))
    assert status == 202, ev
    assert api.get("/api/v0/webhooks", headers=bearer(key))[0] == 200


# --- revocation ------------------------------------------------------------------------------


def test_revoke_takes_effect_at_once_on_the_same_broker(api):
    for _ in range(5):  # repeated: an answer before the revocation applies would show here
        k = make_key(api, ["producer"], name="to revoke")
        assert whoami(api, k["key"])[0] == 200
        status, _, gone = api.delete(f"/api/v0/keys/{k['id']}")
        assert status == 200, gone
        assert_error(whoami(api, k["key"]), 401, "unauthorized")
        assert_error(api.post(f"/api/v0/trigger-event/{unique_name('keys.rv')}", b"{}",
                              headers=bearer(k["key"])), 401, "unauthorized")
        assert set(gone) == KEY_MEMBERS and TIME_RE.match(gone["revokedAt"]), gone
        assert gone["id"] == k["id"] and gone["createdAt"] == k["createdAt"]


def first_time(pred, timeout=10.0, interval=0.02):
    """Seconds until pred() is first true, polling every interval; None after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def test_keys_made_and_revoked_on_one_broker_reach_another_within_a_second(
        api, start_broker, report):
    b2 = start_broker()
    made_times, revoke_times = [], []
    for i in range(3):
        k = make_key(api, ["producer"], name=f"cross {i}")
        # Made on broker 1: works on broker 2 within a second.
        t = first_time(lambda: whoami(b2.api, k["key"])[0] == 200)
        assert t is not None and t < 1.0, f"key made on broker 1 usable on broker 2 after {t} s"
        made_times.append(t)
        # Revoked on broker 1: 401 at once there, and within a second on broker 2.
        status, _, _ = api.delete(f"/api/v0/keys/{k['id']}")
        assert status == 200
        start = time.monotonic()
        assert whoami(api, k["key"])[0] == 401
        t = first_time(lambda: whoami(b2.api, k["key"])[0] == 401)
        assert t is not None, "the revoked key still works on broker 2 after 10 s"
        t = time.monotonic() - start
        assert t < 1.0, f"revocation reached broker 2 after {t:.3f} s"
        revoke_times.append(t)
    report("key made on broker 1 usable on broker 2 after "
           + ", ".join(f"{t * 1000:.0f}" for t in made_times) + " ms; revoked there after "
           + ", ".join(f"{t * 1000:.0f}" for t in revoke_times) + " ms (from the DELETE answer)")


def test_revoke_answers(api, db):
    k = make_key(api, ["producer"], name="twice")
    status, _, first = api.delete(f"/api/v0/keys/{k['id']}")
    assert status == 200 and first["revokedAt"]
    status, _, second = api.delete(f"/api/v0/keys/{k['id'].upper()}")
    assert status == 200
    assert second == first  # the same revokedAt: revoking again changes nothing
    row = [x for x in api.get("/api/v0/keys")[2]["keys"] if x["id"] == k["id"]]
    assert row == [first]
    before = key_rows(db)
    assert_error(api.delete(f"/api/v0/keys/{uuid.uuid4()}"), 404, "not_found")
    for bad in ("nope", "123", k["key"][:36], k["id"] + "0", k["id"][:-1], "%20" + k["id"]):
        assert_error(api.delete(f"/api/v0/keys/{bad}"), 404, "not_found")
    # A key pasted where its id belongs is not echoed back.
    err = assert_error(api.delete(f"/api/v0/keys/{k['key']}"), 404, "not_found")
    assert k["key"][4:12] not in err["message"] and "not a key id" in err["message"]
    assert key_rows(db) == before


# --- storage and logs ------------------------------------------------------------------------


def needles(key):
    """The key, its 64 hex digits, and both as the hex of their bytes (a bytea printed)."""
    tail = key[4:]
    return [key, tail, key.encode().hex(), tail.encode().hex()]


def test_stored_only_as_sha256(api, db):
    k = make_key(api, ["tenant", "producer"], "acme", name="hashed")
    key = k["key"]
    sha = db.scalar(f"SELECT encode(sha256, 'hex') FROM api_keys WHERE id = '{k['id']}'")
    assert sha == hashlib.sha256(key.encode()).hexdigest()
    # Every text, array and bytea column of api_keys, one by one.
    cols = db.sql("SELECT column_name, data_type FROM information_schema.columns "
                  "WHERE table_schema = 'public' AND table_name = 'api_keys'")
    checked = 0
    for col, typ in cols:
        if typ == "bytea":
            hits = db.scalar(f"SELECT count(*) FROM api_keys WHERE position("
                             f"convert_to('{key[4:]}', 'UTF8') IN {col}) > 0")
        elif typ in ("text", "ARRAY", "character varying"):
            hits = db.scalar(f"SELECT count(*) FROM api_keys WHERE strpos({col}::text, "
                             f"'{key[4:]}') > 0")
        else:
            continue
        checked += 1
        assert hits == "0", (col, typ)
    assert checked >= 5, cols
    # pg_dump-style: every row of every table, as text.
    tables = [t for (t,) in db.sql("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    assert "api_keys" in tables
    dump = "\n".join(r[0] for r in db.sql("SELECT row_to_json(k)::text FROM api_keys k"))
    assert k["id"] in dump
    for needle in needles(key):
        assert needle not in dump
        for t in tables:
            assert db.scalar(f'SELECT count(*) FROM "{t}" x '
                             f"WHERE strpos(x::text, '{needle}') > 0") == "0", (t, needle)


def test_never_logged(api, start_broker, broker, pg):
    b = start_broker(LOG_LEVEL="debug")
    k = make_key(b.api, ["tenant", "producer"], "acme", name="logged?")
    key = k["key"]
    h = bearer(key)
    assert whoami(b.api, key)[0] == 200
    assert b.api.post(f"/api/v0/trigger-event/{unique_name('keys.log')}", b"{}",
                      headers=h)[0] == 202
    assert b.api.get("/api/v0/webhooks", headers=h)[0] == 200
    assert b.api.get("/api/v0/keys", headers=h)[0] == 403
    assert b.api.get("/api/v0/whoami", headers=bearer(key + "0"))[0] == 401
    assert b.api.post("/api/v0/trigger-event/x", b"{}", headers=bearer(key[:-1]))[0] == 401
    assert b.api.delete(f"/api/v0/keys/{k['id']}")[0] == 200
    assert whoami(b.api, key)[0] == 401
    b.stop()
    text = b.log_text()
    # The broker did log at debug level, the key's id and its shown prefix included.
    assert "-> 201" in text and "-> 403" in text and "-> 401" in text, text[-2000:]
    assert k["id"] in text and k["prefix"] in text
    for needle in needles(key) + [key[4:40], key[30:]]:
        assert needle not in text
        assert needle not in broker.log_text()
        assert needle not in pg.proc.log_text()


# --- docs ------------------------------------------------------------------------------------


def test_api_md_table_of_roles_is_the_routers():
    """docs/api.md's "Routes and roles" table lists every route of broker/http.c with exactly
    the roles the router allows it."""
    text = (harness.REPO / "docs" / "api.md").read_text()
    section = text[text.index("### Routes and roles"):]
    section = section[:section.index("\n#")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*`(GET|POST|PUT|PATCH|DELETE) ([^`]+)`\s*\|\s*([^|]*)\|", line)
        if m:
            path = re.sub(r"<[^>]+>", "{}", m.group(2))
            roles = re.findall(r"admin|producer|tenant", m.group(3))
            if "no key" in m.group(3):
                roles = []
            assert (m.group(1), path) not in rows, f"listed twice: {line}"
            rows[(m.group(1), path)] = roles
    assert rows == router_table()
