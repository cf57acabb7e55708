"""webhookctl, the command line of the API (issue 12 part 2, decision 35): every command run as
a subprocess against the real broker (with workers and receivers where a delivery is the
effect), its output (aligned tables, key: value lines, --json), its effects through the API
and PostgreSQL, and its exit codes by error class (0 ok, 1 usage, 2 HTTP 4xx, 3 HTTP 5xx,
4 broker unreachable, 5 HTTP 401)."""

import datetime
import json
import re
import subprocess

import pytest

import harness
from harness import API_KEY, API_KEY_2, UUID_RE, free_port, unique_name, wait_until

# Every command, as its words; each must have a --help that exits 0.
COMMANDS = [
    ("subs", "create"), ("subs", "list"), ("subs", "get"), ("subs", "update"), ("subs", "pause"),
    ("subs", "resume"), ("subs", "rotate-secret"), ("subs", "delete"), ("trigger",),
    ("events", "show"), ("replay",), ("jobs", "list"), ("jobs", "get"), ("jobs", "retry"),
    ("recover", "start"), ("recover", "status"), ("admin", "status"), ("admin", "online"),
    ("admin", "offline"), ("status",), ("stats",), ("health",),
    ("keys", "create"), ("keys", "list"), ("keys", "revoke"), ("whoami",),
]

# One attempt and one retry 0.1 s later, then dead.
FAST_DEATH = {"RETRY_SCHEDULE": "0.1", "BREAKER_FAILURES": "1000000"}


@pytest.fixture(scope="module")
def ctl_bin(need_binaries):
    need_binaries("webhookctl")
    return str(harness.binary("webhookctl"))


@pytest.fixture
def ctl(ctl_bin, broker, tmp_path):
    """ctl(*args, env=None, input=None, cwd=None) -> CompletedProcess (text). Runs in an empty
    directory (no .env) with WEBHOOK_API_URL and WEBHOOK_API_KEY of the module's broker; env
    entries override (None removes)."""

    def run(*args, env=None, input=None, cwd=None):
        full = {"WEBHOOK_API_URL": f"http://127.0.0.1:{broker.port}", "WEBHOOK_API_KEY": API_KEY}
        full.update(env or {})
        out = subprocess.run([ctl_bin, *args], env=harness.base_env(full), input=input,
                             capture_output=True, text=True, timeout=60, cwd=cwd or tmp_path)
        harness.assert_no_sanitizer_report(out.stderr, "webhookctl")
        return out

    return run


def ok(out):
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    return out.stdout


def kv(text):
    """The "key: value" lines of an output, as a dict (up to the first blank line)."""
    d = {}
    for line in text.split("\n\n")[0].splitlines():
        k, _, v = line.partition(":")
        d[k] = v.strip()
    return d


def table(text):
    """The rows of an aligned table (the first block after any key: value block that has an
    upper-case header), as dicts, checking that every cell starts at its header's column."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    block = next(b for b in blocks if b.split("\n")[0].split()[0].isupper())
    lines = block.rstrip("\n").split("\n")
    header = lines[0]
    names, starts, i = [], [], 0
    for word in header.split("  "):
        if word.strip():
            starts.append(header.index(word.strip(), i))
            names.append(word.strip())
            i = starts[-1] + len(word.strip())
    rows = []
    for line in lines[1:]:
        row = {}
        for n, (name, s) in enumerate(zip(names, starts)):
            assert s == 0 or line[s - 1] == " ", f"column {name} not aligned in {line!r}"
            end = starts[n + 1] if n + 1 < len(starts) else len(line)
            row[name] = line[s:end].strip()
        rows.append(row)
    return rows


def create(ctl, event, url, *extra):
    out = ok(ctl("subs", "create", "--event", event, "--url", url, *extra))
    sub = kv(out)
    assert UUID_RE.match(sub["id"]), out
    return sub


def test_help_of_every_command(ctl):
    out = ctl("--help")
    main_help = ok(out)
    assert "Exit codes:" in main_help and "WEBHOOK_API_KEY" in main_help
    for words in COMMANDS:
        assert "  " + " ".join(words) in main_help, f"{words} missing from --help"
        text = ok(ctl(*words, "--help"))
        assert text.startswith("usage: webhookctl " + " ".join(words)), text
        assert "Global options:" in text
        assert ok(ctl("--help", *words)) == text  # --help before the command too
    assert ok(ctl("subs", "--help")).startswith("usage: webhookctl subs SUBCOMMAND")
    assert ok(ctl("--version")).startswith("webhookctl ")


def test_usage_errors_exit_1_and_send_nothing(ctl, db):
    before = db.count("subscriptions")
    cases = [
        ((), "usage: webhookctl"),
        (("frobnicate",), 'unknown command "frobnicate"'),
        (("subs",), "usage: webhookctl subs SUBCOMMAND"),
        (("subs", "frob"), 'unknown command "subs frob"'),
        (("subs", "list", "--bogus"), "unknown option --bogus"),
        (("subs", "get", "book.created"), "missing parameters"),
        (("subs", "get", "a", "b", "c"), "too many parameters"),
        (("subs", "create", "--url", "http://127.0.0.1:1/h"), "needs --event and --url"),
        (("subs", "create", "--event", "e", "--url", "http://127.0.0.1:1/h", "--rate-limit",
          "fast"), "--rate-limit must be"),
        (("subs", "create", "--event", "e", "--url", "http://127.0.0.1:1/h", "--header", "X"),
         "--header must be NAME=VALUE"),
        (("subs", "create", "--event", "e", "--url", "http://127.0.0.1:1/h", "--timeout-seconds",
          "ten"), "--timeout-seconds must be a number"),
        (("subs", "create", "--event", "e", "--url", "u", "--filter", "{nope"), "--filter must be"),
        (("subs", "create", "--event", "e", "--url", "u", "--url", "v"), "--url is given twice"),
        (("subs", "update", "e", "i", "--data", "[1]", "--description", "x"),
         "--data must be a JSON object"),
        (("subs", "list", "--page-size", "x"), "--page-size must be a whole number"),
        (("trigger", "e", "--data", "@/nonexistent/payload.json"), "cannot open"),
        (("jobs", "list", "--limit"), "--limit needs a value"),
        (("recover", "e", "0193"), "needs --since"),
        (("subs", "list", "--timeout", "soon"), "--timeout must be a number"),
        (("subs", "list", "--api-url", "ftp://x"), "must start with http:// or https://"),
        (("subs", "list", "-x"), "unknown option -x"),
        (("trigger", "e", "--idempotency-key", "k\r\nX-Evil: 1"), "must be printable ASCII"),
        (("subs", "list", "--api-key", "key\nX-Evil: 1"), "control character"),
    ]
    for args, msg in cases:
        out = ctl(*args)
        assert out.returncode == 1, f"{args}: exit {out.returncode}: {out.stderr}"
        assert msg in out.stderr, f"{args}: {out.stderr!r}"
        assert out.stdout == ""
    assert db.count("subscriptions") == before


def test_subscription_lifecycle(ctl, api, receiver):
    event = unique_name("cli.book") + ":v1"  # ':' is percent-encoded in the path
    url = receiver().url()
    sub = create(ctl, event, url, "--header", "X-Team=books", "--rate-limit", "10/s",
                 "--retry-schedule", "1,5.5", "--timeout-seconds", "5", "--description",
                 "Books team", "--payload", "envelope", "--payload-fields", '{"env":"test"}',
                 "--filter", '{"id": {"$gte": 1}}')
    sid = sub["id"]
    assert sub["status"] == "active" and sub["secret"].startswith("whsec_")
    path = f"/api/v0/webhooks/{event}/{sid}"
    st, _, got = api.get(path)
    assert st == 200
    assert got["headers"] == {"X-Team": "books"} and got["webhookUrl"] == url
    assert got["rateLimit"] == {"perSecond": 10}
    assert got["retryPolicy"] == {"schedule": [1, 5.5]}
    assert got["timeoutSeconds"] == 5 and got["description"] == "Books team"
    assert got["payload"] == "envelope" and got["payloadFields"] == {"env": "test"}
    assert got["filter"] == {"id": {"$gte": 1}}

    # list: an aligned table with the subscription; --json as the API's document
    rows = table(ok(ctl("subs", "list", "--event", event)))
    assert [(r["ID"], r["EVENT"], r["STATUS"], r["URL"], r["DESCRIPTION"]) for r in rows] == \
        [(sid, event, "active", url, "Books team")]
    doc = json.loads(ok(ctl("subs", "list", "--event", event, "--json")))
    assert doc["eventName"] == event and [w["id"] for w in doc["webhooks"]] == [sid]
    everything = table(ok(ctl("subs", "list", "--all", "--page-size", "1")))
    assert sid in [r["ID"] for r in everything]
    assert len(everything) == api.get("/api/v0/webhooks")[2]["total"]
    doc = json.loads(ok(ctl("subs", "list", "--all", "--page-size", "1", "--json")))
    assert [w["id"] for w in doc["webhooks"]] == [r["ID"] for r in everything]
    assert doc["total"] == len(everything)

    # get: key: value with the secret
    got_kv = kv(ok(ctl("subs", "get", event, sid)))
    assert got_kv["id"] == sid and got_kv["secret"] == sub["secret"]
    assert json.loads(got_kv["headers"]) == {"X-Team": "books"}

    # pause / resume
    assert kv(ok(ctl("subs", "pause", event, sid)))["status"] == "paused"
    assert api.get(path)[2]["status"] == "paused"
    assert kv(ok(ctl("subs", "resume", event, sid)))["status"] == "active"
    assert api.get(path)[2]["status"] == "active"

    # update: flags, then --data as sent (null resets), none resets a setting
    ok(ctl("subs", "update", event, sid, "--description", "Staging", "--rate-limit", "100/60s",
           "--header", "X-A=1", "--header", "X-B=2"))
    got = api.get(path)[2]
    assert got["description"] == "Staging" and got["headers"] == {"X-A": "1", "X-B": "2"}
    assert got["rateLimit"] == {"max": 100, "periodSeconds": 60}
    ok(ctl("subs", "update", event, sid, "--data", '{"description": null}', "--rate-limit",
           "none"))
    got = api.get(path)[2]
    assert got["description"] is None and got["rateLimit"] is None

    # rotate-secret
    rotated = kv(ok(ctl("subs", "rotate-secret", event, sid, "--grace", "60")))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != sub["secret"]
    assert rotated["previousSecretExpiresAt"] != "-"

    # delete, then get is a 404: exit 2 with the API's code and message on stderr
    assert kv(ok(ctl("subs", "delete", event, sid)))["status"] == "deleted"
    assert api.get(path)[0] == 404
    out = ctl("subs", "get", event, sid)
    assert out.returncode == 2 and out.stdout == ""
    assert "HTTP 404 not_found:" in out.stderr


def test_create_with_data_json_output_and_refusals(ctl, api, receiver):
    event = unique_name("cli.data")
    url = receiver().url()
    body = {"eventName": event, "webhookUrl": url, "description": "from data",
            "headers": {"X-From": "data"}}
    doc = json.loads(ok(ctl("subs", "create", "--data", json.dumps(body), "--json")))
    assert doc["eventName"] == event and doc["description"] == "from data"
    # flags win over --data; a repeat of the same event + URL is a 200 (said on stderr)
    out = ctl("subs", "create", "--data", json.dumps(body), "--description", "from flags")
    assert kv(ok(out))["id"] == doc["id"] and "already registered" in out.stderr
    assert api.get(f"/api/v0/webhooks/{event}/{doc['id']}")[2]["description"] == "from flags"
    # --data from stdin and from a file
    body2 = dict(body, webhookUrl=url + "2")
    assert kv(ok(ctl("subs", "create", "--data", "-", input=json.dumps(body2))))["webhookUrl"] \
        == url + "2"

    # the API's refusals: exit 2, its code and message on stderr; --json prints its body
    out = ctl("subs", "create", "--event", event, "--url", "ftp://example.com/x")
    assert out.returncode == 2 and "HTTP 400 invalid_field:" in out.stderr, out.stderr
    out = ctl("--json", "subs", "create", "--data", '{"eventName": "x"}')
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["code"] == "invalid_field"
    out = ctl("trigger", "broker.endpoint.disabled")  # 403 reserved_event_name: a client error
    assert out.returncode == 2 and "HTTP 403 reserved_event_name" in out.stderr


def test_trigger_deliver_events_and_jobs(ctl, api, db, receiver, start_worker, tmp_path):
    start_worker()
    rec = receiver()
    event = unique_name("cli.order")
    sub = create(ctl, event, rec.url())
    got = kv(ok(ctl("trigger", event, "--data", '{"id": 42}', "--idempotency-key", "cli-k1")))
    eid = got["eventId"]
    assert UUID_RE.match(eid) and got["eventName"] == event and got["jobs"] == "1"
    reqs = rec.wait_for(1)
    assert reqs[0].body == b'{"id": 42}'  # byte for byte
    # the same key again: the same event, nothing new
    assert kv(ok(ctl("trigger", event, "--data", '{"id": 42}', "--idempotency-key",
                     "cli-k1")))["eventId"] == eid
    # payload from a file and from stdin
    f = tmp_path / "payload.json"
    f.write_bytes(b'{"id": 43}')
    e2 = kv(ok(ctl("trigger", event, "--data", f"@{f}")))["eventId"]
    e3 = json.loads(ok(ctl("trigger", event, "--data", "-", "--json", input='{"id": 44}')))
    rec.wait_for(3)
    assert sorted(r.body for r in rec.requests) == [b'{"id": 42}', b'{"id": 43}', b'{"id": 44}']
    for e in (eid, e2, e3["eventId"]):
        db.wait_jobs(e, "delivered")

    # events show: the event's fields, then its jobs
    out = ok(ctl("events", "show", eid))
    assert kv(out)["eventName"] == event
    jobs = table(out.split("\n\n", 1)[1])
    assert [(j["SUBSCRIPTION"], j["STATUS"], j["ATTEMPTS"], j["CODE"]) for j in jobs] == \
        [(sub["id"], "delivered", "1", "200")]
    job_id = jobs[0]["JOB"]

    # jobs list: the three jobs, newest first; --json; --limit + --all follows the cursor
    rows = table(ok(ctl("jobs", "list", "--event", event)))
    assert [r["STATUS"] for r in rows] == ["delivered"] * 3 and rows[-1]["ID"] == job_id
    doc = json.loads(ok(ctl("jobs", "list", "--event", event, "--json")))
    assert [j["id"] for j in doc["jobs"]] == [r["ID"] for r in rows] and doc["next"] is None
    out = ctl("jobs", "list", "--event", event, "--limit", "2")
    assert len(table(ok(out))) == 2 and "--cursor" in out.stderr
    assert [r["ID"] for r in table(ok(ctl("jobs", "list", "--event", event, "--limit", "1",
                                          "--all")))] == [r["ID"] for r in rows]
    doc = json.loads(ok(ctl("jobs", "list", "--event", event, "--limit", "1", "--all", "--json")))
    assert [j["id"] for j in doc["jobs"]] == [r["ID"] for r in rows]
    assert table(ok(ctl("jobs", "list", "--event", event, "--status", "dead"))) == []

    # jobs get: the job and its attempt log
    out = ok(ctl("jobs", "get", job_id))
    assert kv(out)["status"] == "delivered"
    attempts = table(out.split("\n\n", 1)[1])
    assert [(a["ATTEMPT"], a["CODE"]) for a in attempts] == [("1", "200")]

    # a malformed job id: the API's 400
    out = ctl("jobs", "get", "not-a-uuid")
    assert out.returncode == 2 and "invalid_field" in out.stderr


class Switch:
    """A receiver's responder: 500 while failing is set, else 200."""

    def __init__(self):
        self.failing = True

    def __call__(self, index, req):
        return (500 if self.failing else 200), 0, None


def test_dead_job_recover_retry_and_replay(ctl, db, receiver, start_worker):
    start_worker(**FAST_DEATH)
    sw = Switch()
    rec = receiver(responder=sw)
    event = unique_name("cli.dead")
    sub = create(ctl, event, rec.url())
    since = (datetime.datetime.now(datetime.timezone.utc) -
             datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    eid = kv(ok(ctl("trigger", event)))["eventId"]
    job_id = db.wait_jobs(eid, "dead")[0]["id"]
    rows = table(ok(ctl("jobs", "list", "--status", "dead", "--subscription", sub["id"])))
    assert [(r["ID"], r["ATTEMPTS"], r["CODE"], r["ERROR"]) for r in rows] == \
        [(job_id, "2", "500", "HTTP 500")]
    sw.failing = False

    # recover: the dead job of the window is sent again, then the recovery is done
    rv = kv(ok(ctl("recover", event, sub["id"], "--since", since)))
    assert UUID_RE.match(rv["id"]) and rv["total"] == "1"
    wait_until(lambda: kv(ok(ctl("recover", "status", event, sub["id"], rv["id"])))["status"]
               == "done", 15, "the recovery to finish")
    db.wait_jobs(eid, "delivered")

    # jobs retry: a delivered job again (attempt 4)
    n = rec.count()
    got = kv(ok(ctl("jobs", "retry", job_id)))
    assert got["status"] == "queued" and got["nextAttempt"] == "4"
    rec.wait_for(n + 1)
    db.wait_jobs(eid, "delivered")
    # retrying an unknown job: 404, exit 2
    out = ctl("jobs", "retry", "0193a0a0-0000-7000-8000-000000000000")
    assert out.returncode == 2 and "HTTP 404 not_found" in out.stderr

    # replay: a new job for the subscription; an unknown listed id is refused
    out = ok(ctl("replay", eid, "--subscription", sub["id"]))
    assert kv(out)["count"] == "1"
    new = table(out.split("\n\n", 1)[1])
    assert [r["SUBSCRIPTION"] for r in new] == [sub["id"]] and new[0]["JOB"] != job_id
    rec.wait_for(n + 2)
    assert kv(ok(ctl("replay", eid)))["count"] == "1"
    out = ctl("replay", eid, "--subscription", "0193a0a0-0000-7000-8000-000000000000")
    assert out.returncode == 2 and "invalid_field" in out.stderr


def test_admin_offline_online(ctl, api):
    try:
        out = ok(ctl("admin", "offline", "--message", "incident 42: receivers down"))
        assert kv(out)["status"] == "offline"
        st, _, sw = api.get("/api/v0/admin/delivery")
        assert sw["status"] == "offline" and sw["message"] == "incident 42: receivers down"
        out = ok(ctl("admin", "status"))
        got = kv(out)
        assert got["status"] == "offline" and got["message"] == "incident 42: receivers down"
        assert "active," in out and "unhealthy" in out
        doc = json.loads(ok(ctl("admin", "status", "--json")))
        assert doc["status"] == "offline" and "subscriptions" in doc
        out = ctl("admin", "offline", "--message", "line\nbreak")
        assert out.returncode == 2 and "invalid_field" in out.stderr
    finally:
        assert kv(ok(ctl("admin", "online")))["status"] == "online"
    assert api.get("/api/v0/admin/delivery")[2]["status"] == "online"


def test_status_stats_health(ctl, receiver):
    event = unique_name("cli.stat")
    sub = create(ctl, event, receiver().url())
    ok(ctl("trigger", event))
    out = ok(ctl("status", event, sub["id"]))
    got = kv(out)
    assert got["subscriptionId"] == sub["id"] and got["health"] == "healthy"
    assert "KIND" in out and "created" in out  # the recent activity table
    rows = table(ok(ctl("stats")).split("\n\n", 1)[1])
    assert rows[-1]["EVENT"] == "TOTAL"
    mine = [r for r in rows if r["EVENT"] == event]
    assert mine and mine[0]["TRIGGERS"] == "1" and mine[0]["JOBS"] == "1"
    since = (datetime.datetime.now(datetime.timezone.utc) -
             datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = json.loads(ok(ctl("stats", "--json", "--since", since)))
    assert doc["total"]["triggers"] >= 1 and event in [e["eventName"] for e in doc["events"]]
    out = ctl("stats", "--since", "yesterday")
    assert out.returncode == 2 and "since" in out.stderr
    # health needs no key
    got = kv(ok(ctl("health", env={"WEBHOOK_API_KEY": None})))
    assert got == {"status": "ready", "redis": "up", "postgres": "up"}
    assert json.loads(ok(ctl("health", "--json")))["status"] == "ready"


def test_unreachable_broker_exits_4(ctl):
    port = free_port()
    for args in (("health",), ("subs", "list"), ("trigger", "e", "--api-url",
                                                  f"http://127.0.0.1:{port}")):
        out = ctl(*args, env={"WEBHOOK_API_URL": f"http://127.0.0.1:{port}"})
        assert out.returncode == 4, f"{args}: {out.returncode} {out.stderr}"
        assert f"cannot reach the broker at http://127.0.0.1:{port}" in out.stderr
        assert out.stdout == ""


def test_timeout_exits_4(ctl, receiver):
    """A broker that accepts the connection but does not answer within --timeout."""
    slow = receiver(statuses=200, delay=5, body=b"{}")
    out = ctl("--timeout", "0.3", "subs", "list", "--api-url", slow.url(""))
    assert out.returncode == 4 and "cannot reach the broker" in out.stderr, out.stderr
    assert "timed out" in out.stderr.lower() or "timeout" in out.stderr.lower(), out.stderr


def test_authentication_exits_5(ctl):
    out = ctl("subs", "list", env={"WEBHOOK_API_KEY": "wrong-key-0123456789"})
    assert out.returncode == 5 and "HTTP 401 unauthorized" in out.stderr, out.stderr
    out = ctl("subs", "list", env={"WEBHOOK_API_KEY": None})
    assert out.returncode == 5 and "WEBHOOK_API_KEY" in out.stderr
    # the flag wins over the environment
    ok(ctl("subs", "list", "--api-key", API_KEY_2, env={"WEBHOOK_API_KEY": "wrong-key-01234567"}))


def test_server_errors_exit_3(ctl, receiver):
    """A broker that answers 503 (here a receiver standing in for it): exit 3, the API's error
    on stderr."""
    fake = receiver(statuses=503,
                    body=b'{"error":{"code":"unavailable","message":"the database is down"}}')
    out = ctl("subs", "list", "--api-url", fake.url(""))
    assert out.returncode == 3 and "HTTP 503 unavailable: the database is down" in out.stderr
    out = ctl("health", "--api-url", fake.url(""))
    assert out.returncode == 3


def test_requests_on_the_wire(ctl, receiver):
    """What the CLI sends: escaped path segments, the bearer key, JSON bodies, the
    Idempotency-Key; no key to /readyz."""
    fake = receiver(statuses=200, body=b"{}")
    url = fake.url("")
    ok(ctl("subs", "get", "a:b/c", "x y", "--api-url", url))
    ok(ctl("trigger", "book.created", "--data", "[1, 2]", "--idempotency-key", "k 1",
           "--api-url", url + "/"))
    ok(ctl("subs", "pause", "e", "i", "--api-url", url))
    ok(ctl("--api-url", url, "health"))  # global options before the command too
    ok(ctl("jobs", "retry", "j1", "--api-url", url))
    ok(ctl("jobs", "list", "--since", "2026-12-02T07:00:00+02:00", "--status", "dead",
           "--api-url", url))
    get, trig, pause, health, retry, jobs = fake.requests
    assert (get.method, get.path) == ("GET", "/api/v0/webhooks/a%3Ab%2Fc/x%20y")
    assert get.headers["authorization"] == f"Bearer {API_KEY}"
    assert (trig.method, trig.path, trig.body) == ("POST", "/api/v0/trigger-event/book.created",
                                                   b"[1, 2]")
    assert trig.headers["content-type"] == "application/json"
    assert trig.headers["idempotency-key"] == "k 1"
    assert (pause.method, pause.path, json.loads(pause.body)) == \
        ("PATCH", "/api/v0/webhooks/e/i", {"status": "paused"})
    assert (health.path, health.headers.get("authorization")) == ("/readyz", None)
    assert (retry.method, retry.path, retry.body) == ("POST", "/api/v0/jobs/j1/retry", b"")
    assert "content-type" not in retry.headers and retry.headers["content-length"] == "0"
    assert jobs.path == "/api/v0/jobs?status=dead&since=2026-12-02T07%3A00%3A00%2B02%3A00"


def test_config_from_dotenv(ctl, broker, tmp_path):
    """Without WEBHOOK_API_* in the environment, ./.env gives the URL and the first of
    WEBHOOK_API_KEYS; the environment wins over .env."""
    (tmp_path / ".env").write_text(
        "# the broker\n"
        f"export WEBHOOK_API_URL=http://127.0.0.1:{broker.port}   # local\n"
        f'WEBHOOK_API_KEYS="{API_KEY_2}, {API_KEY}"\n')
    unset = {"WEBHOOK_API_URL": None, "WEBHOOK_API_KEY": None}
    ok(ctl("subs", "list", env=unset, cwd=tmp_path))
    out = ctl("subs", "list", env={"WEBHOOK_API_URL": None,
                                   "WEBHOOK_API_KEY": "wrong-key-0123456789"}, cwd=tmp_path)
    assert out.returncode == 5
    # BROKER_LISTEN gives the URL when WEBHOOK_API_URL is not set anywhere
    (tmp_path / ".env").write_text(f"BROKER_LISTEN=0.0.0.0:{broker.port}\n"
                                   f"WEBHOOK_API_KEY='{API_KEY}'\n")
    ok(ctl("subs", "list", env=unset, cwd=tmp_path))


def test_create_and_update_with_several_event_names(ctl, api):
    """--event repeated or comma-separated sends eventNames (decision 39)."""
    p = harness.unique_name("cli.names")
    sub = create(ctl, f"{p}.b", "http://127.0.0.1:9/names", "--event", f"{p}.*,{p}.a")
    st, _, got = api.get(f"/api/v0/webhooks/{p}.a/{sub['id']}")
    assert st == 200 and got["eventNames"] == sorted([f"{p}.*", f"{p}.a", f"{p}.b"]), got
    ok(ctl("subs", "update", f"{p}.a", sub["id"], "--event", f"{p}.c"))
    st, _, got = api.get(f"/api/v0/webhooks/{p}.c/{sub['id']}")
    assert st == 200 and got["eventNames"] == [f"{p}.c"], got


def test_keys_and_whoami(ctl, db):
    """keys create / list / revoke and whoami (issue 13, decision 45): the key printed once,
    the table of keys without it, the roles of the key in use, exit codes by class (403: 2)."""
    assert kv(ok(ctl("whoami"))) == {"roles": '["admin"]', "tenant": "-", "keyId": "-"}

    out = ctl("keys", "create", "--role", "tenant", "--role", "producer", "--tenant", "acme",
              "--name", "acme app")
    made = kv(ok(out))
    assert "shown this once" in out.stderr
    assert re.match(r"^whk_[0-9a-f]{64}$", made["key"]), made
    assert UUID_RE.match(made["id"]) and made["prefix"] == made["key"][:12]
    assert (made["roles"], made["tenant"], made["name"], made["revokedAt"]) == \
        ('["producer","tenant"]', "acme", "acme app", "-")
    as_key = {"WEBHOOK_API_KEY": made["key"]}
    me = kv(ok(ctl("whoami", env=as_key)))
    assert me == {"roles": '["producer","tenant"]', "tenant": "acme", "keyId": made["id"]}

    # --json prints the answer as it came; roles also comma-separated.
    j = json.loads(ok(ctl("--json", "keys", "create", "--role", "producer,tenant",
                          "--tenant", "globex")))
    assert j["roles"] == ["producer", "tenant"] and j["tenant"] == "globex" and j["name"] is None

    listing = ok(ctl("keys", "list"))
    assert made["key"] not in listing and made["key"][4:] not in listing
    rows = {r["ID"]: r for r in table(listing)}
    assert rows[made["id"]]["ROLES"] == "producer,tenant"
    assert rows[made["id"]]["TENANT"] == "acme" and rows[made["id"]]["REVOKED"] == "-"
    assert rows[made["id"]]["NAME"] == "acme app" and rows[j["id"]]["NAME"] == "-"

    # A tenant key may not manage keys: HTTP 403 is a refused request (2), not a bad key (5).
    out = ctl("keys", "list", env=as_key)
    assert out.returncode == 2 and "HTTP 403 forbidden" in out.stderr, out.stderr

    # Refusals: usage (1, nothing sent), the API's 400 and 404 (2).
    before = db.count("api_keys")
    for args, code, text in [
        (("keys", "create"), 1, "needs --role"),
        (("keys", "create", "--tenant", "acme"), 1, "needs --role"),
        (("keys", "revoke"), 1, "missing parameters"),
        (("keys", "create", "--role", "root"), 2, "HTTP 400 invalid_field"),
        (("keys", "create", "--role", "tenant"), 2, "HTTP 400 missing_field"),
        (("keys", "create", "--role", "admin", "--tenant", "acme"), 2, "HTTP 400 invalid_field"),
        (("keys", "create", "--role", "producer", "--tenant", "a b"), 2,
         "HTTP 400 invalid_field"),
        (("keys", "revoke", "01a237d7-0000-7000-8000-000000000000"), 2, "HTTP 404 not_found"),
        (("keys", "revoke", "not-an-id"), 2, "HTTP 404 not_found"),
    ]:
        out = ctl(*args)
        assert out.returncode == code and text in out.stderr, (args, out.returncode, out.stderr)
        assert out.stdout == ""
    assert db.count("api_keys") == before

    # Revoked: the key is refused at once (5), revoking again keeps the first time.
    gone = kv(ok(ctl("keys", "revoke", made["id"])))
    assert gone["id"] == made["id"] and gone["revokedAt"] != "-"
    out = ctl("whoami", env=as_key)
    assert out.returncode == 5 and "HTTP 401 unauthorized" in out.stderr, out.stderr
    assert "keys create" in out.stderr
    assert kv(ok(ctl("keys", "revoke", made["id"])))["revokedAt"] == gone["revokedAt"]
    rows = {r["ID"]: r for r in table(ok(ctl("keys", "list")))}
    assert rows[made["id"]]["REVOKED"] == gone["revokedAt"]
