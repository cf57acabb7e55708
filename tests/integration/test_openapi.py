"""The OpenAPI document (docs/openapi.json, decision 36): the broker serves its exact bytes
without an API key, it lists exactly the routes of broker/http.c's table, Redocly CLI lints it
clean, and the harness's answer check (OpenApiCheck, used on every Api answer of the suite)
refuses what the document does not say."""

import json
import os
import re
import shutil
import subprocess

import pytest

from harness import REPO, OPENAPI_DOC, Headers, OpenApiCheck, assert_error

REDOCLY = "@redocly/cli@2.77.0"  # pinned: the rules (and their verdicts) change between versions
NPM_CACHE = REPO / "build" / "npm-cache"  # npx installs the CLI here, once


def test_served_exactly_without_a_key(api):
    raw = OPENAPI_DOC.read_bytes()
    for auth in (None, "Bearer not-a-key", f"Bearer {'x' * 20}"):
        status, headers, data = api.get("/api/v0/openapi.json", headers={"Authorization": auth})
        assert status == 200, (auth, status, data)
        assert headers.get("Content-Type") == "application/json"
        assert data == json.loads(raw)
    # The bytes exactly (Api parses JSON: read the body raw).
    import http.client
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        conn.request("GET", "/api/v0/openapi.json")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == raw
    finally:
        conn.close()
    # With a key it is the same; other methods are 405, and the rest of /api/v0 still needs one.
    assert api.get("/api/v0/openapi.json")[2] == json.loads(raw)
    resp = api.request("DELETE", "/api/v0/openapi.json", headers={"Authorization": None})
    assert_error(resp, 405, "method_not_allowed")
    assert resp[1].get("Allow") == "GET"
    assert_error(api.get("/api/v0/openapi.jsonx", headers={"Authorization": None}), 401,
                 "unauthorized")
    assert_error(api.get("/api/v0/openapi.json/x", headers={"Authorization": None}), 401,
                 "unauthorized")


ROLE_MACROS = {"0": [], "ANY_KEY": ["admin", "producer", "tenant"], "MANAGE": ["admin", "tenant"],
               "TRIGGER": ["admin", "producer"], "ADMIN": ["admin"]}


def router_table():
    """{(METHOD, path template with {} parameters): [roles allowed]} of broker/http.c's
    routes[] table ([] for a public route)."""
    text = (REPO / "broker" / "http.c").read_text()
    table = text[text.index("static const struct route routes[] = {"):]
    table = table[:table.index("\n};")]
    table = re.sub(r"/\*.*?\*/", "", table, flags=re.S)
    entry = re.compile(r'\{\{([^}]*)\},\s*(\d+),\s*(\d+),\s*(NULL|"[^"]*"),\s*(\w+),\s*(\w+),'
                       r'\s*(\w+),\s*(\w+),\s*(\w+),\s*(\w+)\s*\}')
    out = {}
    found = entry.findall(table)
    assert len(found) == table.count("{{"), "an entry of routes[] was not understood"
    for prefix, nprefix, nparams, suffix, *handlers in found:
        roles = ROLE_MACROS[handlers.pop()]
        segs = [s.strip().strip('"') for s in prefix.split(",")][:int(nprefix)]
        segs += ["{}"] * int(nparams)
        if suffix != "NULL":
            suffix = suffix.strip('"')
            segs.append(suffix.rstrip("/"))
            if suffix.endswith("/"):
                segs.append("{}")
        path = "/" + "/".join(segs)
        for method, h in zip(("GET", "POST", "DELETE", "PUT", "PATCH"), handlers):
            if h != "NULL":
                out[(method, path)] = roles
    return out


def router_routes():
    """{(METHOD, path template with {} parameters)} of broker/http.c's routes[] table."""
    return set(router_table())


def document_routes():
    doc = json.loads(OPENAPI_DOC.read_text())
    out = set()
    for tmpl, item in doc["paths"].items():
        for method in item:
            if method in OpenApiCheck.METHODS:
                out.add((method.upper(), re.sub(r"\{[^}]+\}", "{}", tmpl)))
    return out


def test_document_routes_are_the_router_routes():
    router, document = router_routes(), document_routes()
    assert len(router) >= 20, sorted(router)
    assert router - document == set(), f"routes missing from docs/openapi.json: {router - document}"
    assert document - router == set(), f"docs/openapi.json lists routes the broker lacks: " \
                                       f"{document - router}"


def test_document_roles_are_the_router_roles():
    """Each authenticated operation's x-roles is exactly the roles broker/http.c allows it
    (issue 13): the table-driven role test (test_roles.py) reads x-roles, so neither can drift."""
    doc = json.loads(OPENAPI_DOC.read_text())
    router = router_table()
    for tmpl, item in doc["paths"].items():
        path = re.sub(r"\{[^}]*\}", "{}", tmpl)
        for method, op in item.items():
            want = router[(method.upper(), path)]
            if op.get("security") == []:
                assert want == [] and "x-roles" not in op, (method, tmpl)
            else:
                assert op.get("x-roles") == want, (method, tmpl, op.get("x-roles"), want)
                assert "403" in op["responses"], (method, tmpl)


def test_document_basics():
    doc = json.loads(OPENAPI_DOC.read_text())
    assert doc["openapi"].startswith("3.1.")
    assert doc["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        **doc["components"]["securitySchemes"]["apiKey"], "type": "http", "scheme": "bearer"}
    # Unauthenticated: exactly the health checks, the metrics, the document itself and the
    # console's files.
    open_ops = {(m.upper(), p) for p, item in doc["paths"].items() for m, op in item.items()
                if op.get("security") == []}
    assert open_ops == {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
                        ("GET", "/api/v0/openapi.json"), ("GET", "/"), ("GET", "/console/app.js"),
                        ("GET", "/console/style.css")}
    # Every operation documents its error answers with the shared error body.
    for p, item in doc["paths"].items():
        for m, op in item.items():
            errs = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert errs, (m, p)
            for s in errs:
                resp = op["responses"][s]
                if "$ref" in resp:
                    assert resp["$ref"] == f"#/components/responses/E{s}", (m, p, s)
                else:  # an answer of its own or the error body (/readyz's 503)
                    schema = resp["content"]["application/json"]["schema"]
                    assert {"$ref": "#/components/schemas/Error"} in schema["oneOf"], (m, p, s)
    for name, resp in doc["components"]["responses"].items():
        assert resp["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}, name


def test_check_refuses_what_the_document_does_not_say():
    check = OpenApiCheck()
    js = Headers([("Content-Type", "application/json")])
    health = b'{"status":"ok"}'
    assert check.check("GET", "/healthz", 200, js, health) is None
    # An undocumented status, an extra field, a wrong type, a missing field: each named.
    problem = check.check("GET", "/healthz", 201, js, health)
    assert "GET /healthz" in problem and "status 201 is not documented" in problem
    problem = check.check("GET", "/healthz", 200, js, b'{"status":"ok","x":1}')
    assert "GET /healthz 200" in problem and "'x'" in problem, problem
    sub = "/api/v0/webhooks/a.b/0193a7c2-0000-7000-8000-000000000000"
    problem = check.check("GET", sub + "?x=1", 200, js, b'{"id":"x"}')
    assert problem.startswith("GET /api/v0/webhooks/{eventName}/{id} 200"), problem
    err = b'{"error":{"code":"not_found","message":"no"}}'
    assert check.check("GET", sub, 404, js, err) is None
    assert "does not match" in check.check("GET", sub, 404, js, b'{"error":{"code":"x"}}')
    assert "not JSON" in check.check("GET", sub, 404, js, b"oops")
    assert "Content-Type" in check.check("GET", sub, 404, Headers([]), err)
    # A documented answer that is not JSON (the console's page) is checked by its media type.
    html = Headers([("Content-Type", "text/html; charset=utf-8")])
    assert check.check("GET", "/", 200, html, b"<!doctype html>") is None
    assert "the document says" in check.check("GET", "/console/app.js", 200, html, b"x")
    # Unknown paths and methods must still answer the shared error body.
    assert check.check("GET", "/nope", 404, js, err) is None
    assert check.check("PUT", "/healthz", 405, js, err) is None
    assert "not in docs/openapi.json" in check.check("GET", "/nope", 200, js, b"{}")
    assert "does not match" in check.check("GET", "/nope", 404, js, b"{}")
    # A documented answer that is not JSON (GET /metrics): its Content-Type is checked.
    text = Headers([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
    assert check.check("GET", "/metrics", 200, text, b"wh_redis_up 1\n") is None
    assert "Content-Type" in check.check("GET", "/metrics", 200, js, b"{}")
    # A time that is not RFC 3339 UTC with milliseconds is refused.
    ok = {"status": "online", "message": None, "since": "2026-12-02T01:52:03.123Z",
          "waitingJobs": 0}
    assert check.check("PUT", "/api/v0/admin/delivery", 200, js, json.dumps(ok).encode()) is None
    bad = dict(ok, since="2026-12-02 01:52:03")
    assert "since" in check.check("PUT", "/api/v0/admin/delivery", 200, js,
                                  json.dumps(bad).encode())


def test_redocly_lint():
    """npx --yes @redocly/cli@<pinned> lint docs/openapi.json with redocly.yaml (the recommended
    rules, every warning an error). Without npx: a failure in CI (CI=true), a skip elsewhere."""
    npx = shutil.which("npx")
    if not npx:
        msg = "npx (Node.js 20 + npm) is not installed: bash scripts/deps.sh installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, npm_config_cache=str(NPM_CACHE), npm_config_update_notifier="false",
               NO_COLOR="1", REDOCLY_TELEMETRY="off", REDOCLY_SUPPRESS_UPDATE_NOTICE="true")
    proc = subprocess.run([npx, "--yes", REDOCLY, "lint", "docs/openapi.json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"redocly lint failed:\n{out[-6000:]}"
    assert "valid" in out, out[-2000:]
