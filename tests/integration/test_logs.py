"""LOG_FORMAT=json (issue 12 part 5, docs/decisions.md 34): the broker, a worker and the
reconciler log one JSON object per line. A run with a registration, triggers, a delivery, a
failing endpoint and a hostile request path is logged, then every line of every process's log
is parsed and its fields checked; LOG_FORMAT=bogus stops each binary at start-up."""

import json
import re
import socket
import subprocess

import pytest

import harness
from harness import TIME_RE, UUID_RE, Broker

LEVELS = {"debug", "info", "warn", "error"}
FIXED = ("time", "level", "process", "pid", "message")
# The member naming a line's context, and the shape of its value.
CONTEXTS = {"requestId": re.compile(r"^req-\d+$"), "connectionId": re.compile(r"^conn-\d+$"),
            "jobId": UUID_RE, "eventId": UUID_RE, "subscriptionId": UUID_RE,
            "recoveryId": UUID_RE, "module": re.compile(r"^[a-z][a-z0-9 _-]*$")}
BINARIES = ("webhook-broker", "webhook-worker", "webhook-reconciler")


@pytest.fixture(scope="module")
def broker(binaries, redis, db, module_dir):
    """This module's broker logs JSON (the start_worker fixture uses it too)."""
    b = Broker(module_dir, redis, db, {"LOG_FORMAT": "json", "LOG_LEVEL": "debug"})
    try:
        b.start()
        yield b
    finally:
        b.stop()


def parse_log(data, process, pid):
    """Every line of data (a log's bytes) as a dict, each checked: well-formed UTF-8, one JSON
    object, the fixed members with their types and shapes, at most one context member of a
    known name and shape, nothing else."""
    lines = data.decode("utf-8").splitlines()  # strict: a byte that is not UTF-8 fails
    assert lines, f"{process} logged nothing"
    parsed = []
    for n, line in enumerate(lines, 1):
        try:
            o = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{process} line {n} is not JSON ({e}): {line!r}") from None
        assert isinstance(o, dict), f"{process} line {n}: {line!r}"
        assert list(o)[:4] == ["time", "level", "process", "pid"], f"{process} line {n}: {line!r}"
        assert list(o)[-1] == "message", f"{process} line {n}: {line!r}"
        assert TIME_RE.match(o["time"]), f"{process} line {n}: time {o['time']!r}"
        assert o["level"] in LEVELS, f"{process} line {n}: {line!r}"
        assert o["process"] == process, f"{process} line {n}: {line!r}"
        assert o["pid"] == pid, f"{process} line {n}: pid {o['pid']}, want {pid}"
        assert isinstance(o["message"], str) and o["message"], f"{process} line {n}: {line!r}"
        extra = [k for k in o if k not in FIXED]
        assert len(extra) <= 1, f"{process} line {n} has members {extra}: {line!r}"
        for k in extra:
            assert k in CONTEXTS, f"{process} line {n}: unknown member {k!r}: {line!r}"
            assert CONTEXTS[k].match(o[k]), f"{process} line {n}: {k} {o[k]!r}: {line!r}"
        parsed.append(o)
    times = [o["time"] for o in parsed]
    assert times == sorted(times), f"{process}: times out of order"
    return parsed


def lines_with(parsed, **members):
    return [o for o in parsed if all(o.get(k) == v for k, v in members.items())]


def hostile_request(port):
    """A request whose path holds a quote, a backslash, UTF-8 and a byte that is not UTF-8: the
    broker logs the path it was sent. Returns the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b'GET /api/v0/no-such/"\\\xc3\xa9\xff HTTP/1.1\r\nHost: x\r\n'
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_json_logs_of_a_run(broker, start_worker, receiver, redis, db, tmp_path, report):
    api = broker.api
    ok, bad = receiver(200), receiver(500)
    worker = start_worker(LOG_FORMAT="json", LOG_LEVEL="debug")
    sub_ok = api.register("logs.ok", ok.url())["id"]
    sub_bad = api.register("logs.bad", bad.url())["id"]
    # A subscription whose stored headers are not an object: the worker refuses to send and
    # logs an error about the subscription.
    sub_broken = api.register("logs.broken", ok.url("/broken"))["id"]
    harness.set_subscription(db, sub_broken, headers="'\"x\"'::jsonb")
    api.trigger("logs.broken", {"n": 3})
    ev_ok = api.trigger("logs.ok", {"n": 1})["eventId"]
    ev_bad = api.trigger("logs.bad", {"n": 2})["eventId"]
    [job_ok] = db.wait_jobs(ev_ok, "delivered", count=1)
    [job_bad] = db.wait_jobs(ev_bad, "dead", count=1)
    assert job_ok["subscription_id"] == sub_ok and job_bad["subscription_id"] == sub_bad
    harness.wait_until(lambda: f'"subscriptionId":"{sub_broken}"' in worker.log_text(), 15,
                       "the worker's error line about the broken subscription")
    status_line = hostile_request(broker.port)
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
    out = subprocess.run([str(harness.binary("webhook-reconciler")), "--once"],
                         env=harness.reconciler_env(redis, db, {"LOG_FORMAT": "json",
                                                                "LOG_LEVEL": "debug"}),
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    recon_log = out.stdout + out.stderr
    assert out.returncode == 0, recon_log
    worker.stop()

    # The worker: every line parses; the delivered job's and the dead job's lines name them,
    # the broken subscription's error line names it.
    wlog = parse_log(worker.log_path.read_bytes(), "webhook-worker", worker.pid)
    delivered = lines_with(wlog, jobId=job_ok["id"])
    assert any(o["level"] == "debug" and o["message"].startswith(f"delivered to {ok.url()}")
               for o in delivered), delivered
    failed = lines_with(wlog, jobId=job_bad["id"])
    assert [o["message"] for o in failed if "failed: HTTP 500" in o["message"]], failed
    assert any(o["level"] == "info" and o["message"].startswith("dead after 4 attempts")
               for o in failed), failed
    assert any(o["level"] == "info" and re.search(r"\bready\b", o["message"]) and
               "module" not in o and "jobId" not in o for o in wlog)
    broken = lines_with(wlog, subscriptionId=sub_broken)
    assert any(o["level"] == "error" and "headers are malformed" in o["message"]
               for o in broken), broken
    assert [r.path for r in ok.requests] == ["/hook"]  # nothing sent to the broken one

    # The broker: the registrations and triggers are logged under their requests' ids, with the
    # subscription and event ids in the messages; the hostile path comes back byte for byte,
    # the byte that is not UTF-8 as U+FFFD.
    blog = parse_log(broker.log_path.read_bytes(), "webhook-broker", broker.pid)
    for sub in (sub_ok, sub_bad):
        [created] = [o for o in blog if o["message"].startswith(f"subscription {sub} created")]
        assert created["level"] == "info" and "requestId" in created, created
        assert len(lines_with(blog, requestId=created["requestId"])) >= 2  # the POST, the reply
    for ev in (ev_ok, ev_bad):
        [committed] = [o for o in blog if o["message"] == f"event {ev} committed with 1 jobs"]
        assert "requestId" in committed, committed
    hostile = [o for o in blog if "/api/v0/no-such" in o["message"]]
    assert any('/api/v0/no-such/"\\\u00e9\ufffd' in o["message"] for o in hostile), hostile
    assert all("requestId" in o or "connectionId" in o for o in hostile), hostile

    # The reconciler: its one pass, in JSON too.
    rpid = json.loads(recon_log.splitlines()[0])["pid"]
    rlog = parse_log(recon_log, "webhook-reconciler", rpid)
    assert any(harness.RECONCILER_PASS_RE.search(o["message"]) for o in rlog), recon_log

    counts = {p: len(l) for p, l in (("broker", blog), ("worker", wlog), ("reconciler", rlog))}
    contexts = sorted({k for o in blog + wlog + rlog for k in o if k not in FIXED})
    report(f"JSON log lines parsed: {counts}; context members seen: {contexts}")


@pytest.mark.parametrize("name", BINARIES)
def test_bogus_log_format_refused(name, binaries, need_binaries, redis, db):
    """LOG_FORMAT=bogus: exit 2 (as a bad LOG_LEVEL) with a message naming the key and the
    values it takes, before anything else is done."""
    need_binaries(name)
    env = harness.base_env({"REDIS_URL": redis.url, "DATABASE_URL": db.url,
                            "SECRETS_KEY": "00" * 32, "LOG_FORMAT": "bogus"})

    def run(**extra):
        out = subprocess.run([str(harness.binary(name))], env={**env, **extra},
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        text = (out.stdout + out.stderr).decode(errors="replace")
        harness.assert_no_sanitizer_report(text, name)
        return out.returncode, text

    rc, text = run()
    assert rc == 2, f"{name} exited {rc} with LOG_FORMAT=bogus:\n{text}"
    assert f'{name}: LOG_FORMAT must be text or json (got "bogus")' in text, text
    level_rc, level_text = run(LOG_FORMAT="json", LOG_LEVEL="bogus")
    assert level_rc == rc, level_text
    out = subprocess.run([str(harness.binary(name)), "--log-format", "xml", "--help"], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert out.returncode == 0  # --help wins over the values
    assert b"--log-format VALUE" in out.stdout and b"env LOG_FORMAT, default \"text\"" in out.stdout
