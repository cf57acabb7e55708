"""The tenant portal (issue 13, decision 47): the web console opened with a tenant key shows that
tenant's endpoints, deliveries and dead letters only, and nothing the key may not use; end to end
in headless Chromium (portal_e2e.mjs, with the tools and runner of test_console.py).

Two tenants A and B and the global scope each have an endpoint that answers 200 and one that
answers 500 (two attempts, so its job dies fast), all for the same event name. In the page the
admin makes A's key (shown once, copied), sees B's in the Keys list and revokes a spare one;
A's key then shows only A's endpoints and deliveries (B's and the global URLs are nowhere in the
page), registers an endpoint that lands in A, retries A's dead letter and rotates a secret
(both checked through the API); B's key shows only B's and recovers B's dead letter; a
producer-only key gets a message and no pages. No answer of 400 or more (other than the refused keys' 401) may happen: what a key
cannot use is hidden, not tried."""

import time
import uuid

import pytest

from harness import API_KEY, assert_error, unique_name, wait_until
from test_console import REPO, browser_tools, run_e2e  # noqa: F401 (browser_tools: a fixture)

E2E_SCRIPT = REPO / "tests" / "integration" / "portal_e2e.mjs"
E2E_TIMEOUT = 240  # seconds for the whole browser scenario (about 50 on the shared machine)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_portal_end_to_end(browser_tools, broker, api, db, receiver, start_worker,  # noqa: F811
                           report):
    tenants = {"a": f"acme-{uuid.uuid4().hex[:8]}", "b": f"globex-{uuid.uuid4().hex[:8]}"}
    event = unique_name("portal.e2e")
    fixed = set()  # paths of the failing endpoints that answer 200 again

    def respond(index, req):
        path = req.path.split("?")[0]
        return (500 if path.endswith("-fail") and path not in fixed else 200), 0, None

    recv = receiver(responder=respond, name="portal-receiver")
    start_worker()
    # a, b: the tenants' endpoints; g: the global ones; a-new: registered by A in the page.
    urls = {f"{t}-{kind}": recv.url(f"/portal/{t}-{kind}") for t in "abg" for kind in ("ok", "fail")}
    urls["a-new"] = recv.url("/portal/a-new")
    state = {"keys": {}, "subs": {}, "dead": {}}

    def create_key(body):
        status, _, data = api.post("/api/v0/keys", body)
        assert status == 201, data
        return data

    def whoami(key):
        return api.get("/api/v0/whoami", headers=bearer(key))

    def sub(event_name, sub_id, key=API_KEY):
        return api.get(f"/api/v0/webhooks/{event_name}/{sub_id}", headers=bearer(key))

    def setup(msg):
        """A's key came from the page: B's, a producer's and a spare key through the API; the
        six endpoints; one trigger per scope, each ending in one delivered and one dead job."""
        status, _, who = whoami(msg["keyA"])
        assert status == 200 and who["roles"] == ["tenant"] and who["tenant"] == tenants["a"], who
        state["keys"]["a"] = msg["keyA"]
        state["keys"]["b"] = create_key({"roles": ["tenant"], "tenant": tenants["b"],
                                         "name": "portal B"})["key"]
        state["keys"]["producer"] = create_key({"roles": ["producer"], "name": "portal producer"})["key"]
        spare = create_key({"roles": ["tenant"], "tenant": tenants["a"], "name": "portal spare"})
        state["keys"]["spare"] = spare["key"]
        for t in "abg":
            for kind in ("ok", "fail"):
                body = {"eventName": event, "webhookUrl": urls[f"{t}-{kind}"],
                        "retryPolicy": {"schedule": [0.2]}}
                if t != "g":
                    body["tenant"] = tenants[t]
                status, _, data = api.post("/api/v0/webhooks", body)
                assert status == 201, data
                assert data["tenant"] == tenants.get(t), data
                state["subs"][f"{t}-{kind}"] = data["id"]
        for t in "abg":
            query = f"?tenant={tenants[t]}" if t != "g" else ""
            status, _, data = api.post(f"/api/v0/trigger-event/{event}{query}", b'{"n": 1}')
            assert status == 202, data
            jobs = db.wait_jobs(data["eventId"], {"delivered", "dead"}, timeout=30, count=2)
            # The fan-out reached this scope's two endpoints, and only them.
            assert {j["url"]: j["status"] for j in jobs} == \
                {urls[f"{t}-ok"]: "delivered", urls[f"{t}-fail"]: "dead"}, jobs
            state["dead"][t] = next(j["id"] for j in jobs if j["status"] == "dead")
        return {"keyB": state["keys"]["b"], "keyProducer": state["keys"]["producer"],
                "spare": spare["id"], "urls": urls, "subs": state["subs"], "dead": state["dead"],
                "tenants": tenants}

    def handle(msg):
        """The answer to one step the page asks for (see portal_e2e.mjs)."""
        step = msg["do"]
        if step == "setup":
            return setup(msg)
        if step == "revoked":
            status, _, data = api.get("/api/v0/keys")
            assert status == 200
            revoked, = [k for k in data["keys"] if k["id"] == msg["id"]]
            assert revoked["revokedAt"] is not None, revoked
            wait_until(lambda: whoami(state["keys"]["spare"])[0] == 401, 5,
                       "the revoked key to be refused")
            assert whoami(state["keys"]["a"])[0] == 200
            return {}
        if step == "tenant-created":
            status, _, data = sub(msg["event"], msg["id"])
            assert status == 200, data
            assert data["tenant"] == tenants["a"] and data["webhookUrl"] == urls["a-new"], data
            assert data["secret"] == msg["secret"], data
            # B cannot see it (404, as if it did not exist); A can.
            assert_error(sub(msg["event"], msg["id"], state["keys"]["b"]), 404, "not_found")
            assert sub(msg["event"], msg["id"], state["keys"]["a"])[0] == 200
            return {}
        if step == "fix":
            fixed.add(f"/portal/{msg['endpoint']}")
            return {}
        if step == "delivered":
            def delivered():
                job = api.get(f"/api/v0/jobs/{msg['job']}")[2]
                return job if job["status"] == "delivered" else None

            job = wait_until(delivered, 20, f"job {msg['job']} delivered", interval=0.2)
            assert [a["statusCode"] for a in job["attemptLog"]] == [500, 500, 200], job
            return {}
        if step == "rotated":
            status, _, data = sub(event, msg["id"])
            assert status == 200, data
            assert data["secret"] == msg["secret"] and data["previousSecretExpiresAt"], data
            return {}
        raise AssertionError(f"unknown step {msg!r}")

    env = {"BROKER_URL": f"http://127.0.0.1:{broker.port}", "API_KEY": API_KEY,
           "EVENT_NAME": event, "TENANT_A": tenants["a"], "TENANT_B": tenants["b"]}
    started = time.monotonic()
    logs = run_e2e(browser_tools, E2E_SCRIPT, env, handle, timeout=E2E_TIMEOUT)
    for line in ("admin made A's key in the page", "tenant A sees only its own",
                 "A retried its dead letter from the page", "A rotated a secret from the page",
                 "tenant B sees only its own", "B recovered its dead letter from the page",
                 "a producer key gets the message"):
        assert line in logs, logs
    # What the page did reached the receivers: two failed attempts, then the page's retry (A) or
    # recovery (B); the global failing endpoint was not sent again.
    for name, count in (("a-fail", 3), ("b-fail", 3), ("g-fail", 2)):
        assert sum(1 for r in recv.requests if r.path == f"/portal/{name}") == count, name
    report(f"portal end to end in {time.monotonic() - started:.1f} s: {'; '.join(logs)}")


@pytest.mark.parametrize("roles", [["tenant"], ["tenant", "producer"], ["producer"]])
def test_whoami_drives_the_console(api, roles):
    """The answer the console decides with (GET /api/v0/whoami) for each kind of key it tells
    apart, and the calls a tenant key's portal never makes being refused (so hiding them is
    needed, not cosmetic)."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    status, _, made = api.post("/api/v0/keys", {"roles": roles, "tenant": tenant})
    assert status == 201, made
    status, _, who = api.get("/api/v0/whoami", headers=bearer(made["key"]))
    assert status == 200 and sorted(who["roles"]) == sorted(roles) and who["tenant"] == tenant
    assert who["keyId"] == made["id"]
    for method, path in (("GET", "/api/v0/admin/delivery"), ("GET", "/api/v0/keys")):
        assert_error(api.request(method, path, headers=bearer(made["key"])), 403, "forbidden")
