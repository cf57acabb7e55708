"""Management API authentication: every /api/v0/* route needs 'Authorization: Bearer <key>'
with a key from WEBHOOK_API_KEYS (401 with a JSON error otherwise); health checks stay open;
the broker refuses to start without keys."""

import pytest

from harness import API_KEY, API_KEY_2, broker_refuses_to_start, unique_name

ROUTES = [("GET", "/api/v0/webhooks"), ("POST", "/api/v0/webhooks"),
          ("GET", "/api/v0/webhooks/a.b"), ("GET", "/api/v0/webhooks/a.b/x"),
          ("DELETE", "/api/v0/webhooks/a.b/x"), ("POST", "/api/v0/trigger-event/a.b"),
          ("GET", "/api/v0/events/x"), ("GET", "/api/v0/nope"), ("PUT", "/api/v0/webhooks")]

BAD = [None, "", "Bearer", "Bearer ", f"Basic {API_KEY}", f"Bearer {API_KEY}x",
       f"Bearer {API_KEY[:-1]}", "Bearer " + "x" * 5000, f"{API_KEY}"]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("auth", BAD)
def test_refused_without_a_valid_key(api, db, method, path, auth):
    events = db.count("events")
    status, headers, data = api.request(method, path, body=b"{}" if method == "POST" else None,
                                        headers={"Authorization": auth})
    assert status == 401, (status, data)
    assert data["error"]["code"] == "unauthorized"
    assert headers.get("WWW-Authenticate") == "Bearer"
    assert db.count("events") == events


def test_every_configured_key_works_and_scheme_is_case_insensitive(api):
    name = unique_name("auth")
    for auth in (f"Bearer {API_KEY}", f"bearer {API_KEY_2}", f"BEARER {API_KEY}"):
        status, _, data = api.post(f"/api/v0/trigger-event/{name}", b"{}",
                                   headers={"Authorization": auth})
        assert status == 202, (auth, data)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_need_no_key(api, path):
    status, _, _ = api.get(path, headers={"Authorization": None})
    assert status == 200


@pytest.mark.parametrize("keys", ["", " , ", "short", "has space-in-the-middle-0123"])
def test_broker_refuses_to_start_without_valid_keys(binaries, redis, db, keys):
    broker_refuses_to_start(redis, db, "WEBHOOK_API_KEYS", WEBHOOK_API_KEYS=keys)
