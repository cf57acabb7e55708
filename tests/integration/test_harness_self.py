"""Self-test of the harness alone (no broker or worker needed): the PostgreSQL and Redis
helpers, receivers, process handling, signatures and the shared parsers and key names. Part of
`make test`; on its own:

    pytest-3 -q -p no:cacheprovider tests/integration/test_harness_self.py
"""

import http.client
import json
import threading
import time

import pytest

import harness
from harness import (Api, Headers, Proc, RedisError, assert_error, event_key, payload_key,
                     reconciler_passes, sign_v1, signature_vectors, verify_signature, wait_until)


def test_postgres_database_and_query(db):
    assert db.scalar("SELECT 1") == "1"
    assert db.name == "wh_test_harness_self"
    db.sql("CREATE TABLE t (id int, note text, data bytea)")
    db.sql("INSERT INTO t VALUES (1, 'a|b\nc', '\\x00ff'), (2, NULL, NULL)")
    assert db.sql("SELECT id, note, encode(data, 'hex') FROM t ORDER BY id") == [
        ("1", "a|b\nc", "00ff"), ("2", None, None)]
    assert db.sql("SELECT 1 WHERE false") == []
    assert db.count("t") == 2
    with pytest.raises(AssertionError, match="psql failed"):
        db.sql("SELECT * FROM missing_table")


def test_redis_resp_client(redis, rc):
    assert rc.call("PING") == "PONG"
    assert rc.call("SET", "k", b"\x00\xff bin") == "OK"
    assert rc.call("GET", "k") == b"\x00\xff bin"
    assert rc.call("GET", "missing") is None
    assert rc.call("SADD", "s", "a", "b") == 2
    assert rc.smembers("s") == {"a", "b"}
    rc.call("HSET", "h", "http://x/", '{"id":"1"}')
    assert rc.hgetall("h") == {"http://x/": '{"id":"1"}'}
    rc.call("XADD", "wh:{0}:jobs", "*", "d", json.dumps({"j": "1", "a": 1}))
    assert rc.xlen() == 1
    assert rc.pending() == 0  # no group yet
    rc.call("XGROUP", "CREATE", "wh:{0}:jobs", "workers", "0")
    rc.call("XREADGROUP", "GROUP", "workers", "c1", "COUNT", "10", "STREAMS", "wh:{0}:jobs", ">")
    assert rc.pending() == 1
    assert rc.stream_jobs() == [{"j": "1", "a": 1}]
    with pytest.raises(RedisError, match="WRONGTYPE"):
        rc.call("LPUSH", "k", "x")
    assert rc.call("FLUSHALL") == "OK"
    assert rc.call("DBSIZE") == 0


def test_redis_restart_same_port(redis):
    port = redis.port
    redis.kill()
    with pytest.raises(OSError):
        redis.call("PING")
    redis.start()
    assert redis.port == port and redis.call("PING") == "PONG"


def test_receiver_statuses_delay_headers(receiver):
    r = receiver([500, 302, 200], delay=[0, 0.3, 0], headers=[None, {"Location": "http://x/"}, None])
    api = Api(r.port, check_openapi=False)  # a receiver, not the broker
    st, _, data = api.post("/hook?x=1", b'{"a":1}', headers={"webhook-id": "m1"})
    assert st == 500 and data == b"ok\n"
    t0 = time.monotonic()
    st, h, _ = api.post("/hook", b"[]")
    assert st == 302 and h["location"] == "http://x/" and time.monotonic() - t0 >= 0.3
    assert api.post("/hook", b"1")[0] == 200
    assert api.post("/hook", b"2")[0] == 200  # the last status repeats
    reqs = r.wait_for(4, timeout=1)
    assert [q.body for q in reqs] == [b'{"a":1}', b"[]", b"1", b"2"]
    assert reqs[0].path == "/hook?x=1" and reqs[0].method == "POST"
    assert reqs[0].headers["WEBHOOK-ID"] == "m1" and "Webhook-Id" in reqs[0].headers
    with pytest.raises(AssertionError, match="got 4 requests"):
        r.wait_for(5, timeout=0.2)


def test_receiver_keep_alive(receiver):
    r = receiver(200)
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
    for i in range(3):
        conn.request("POST", "/k", body=b"x" * i)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"ok\n"
    conn.close()
    reqs = r.wait_for(3, timeout=1)
    assert len({q.client for q in reqs}) == 1, reqs  # one connection served all three


def test_receiver_close_interrupts_delay(receiver):
    r = receiver(200, delay=30)
    outcome = []

    def post():
        try:
            outcome.append(Api(r.port, timeout=20, check_openapi=False).post("/slow", b"{}")[0])
        except (OSError, http.client.HTTPException) as e:
            outcome.append(e)

    t = threading.Thread(target=post)
    t.start()
    r.wait_for(1, timeout=2)
    t0 = time.monotonic()
    r.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 10
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), \
        f"the delayed request was answered instead of cut off: {outcome}"


def test_assert_error_shape():
    with pytest.raises(AssertionError):
        assert_error((400, Headers([("Content-Type", "application/json")]), {"x": 1}), 400)
    err = assert_error((404, Headers([("Content-Type", "application/json; charset=utf-8")]),
                        {"error": {"code": "not_found", "message": "no"}}), 404, "not_found")
    assert err["code"] == "not_found"


def test_signature_helpers():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sig = sign_v1(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                            b'{"test": 2432232314}', "v1,bogus= " + sig)
    assert not verify_signature(secret, "other", 1614265330, b'{"test": 2432232314}', sig)
    vectors = signature_vectors()
    if vectors is None:
        pytest.skip("tests/testdata/standard-webhooks.json absent")
    for v in vectors:
        assert verify_signature(v["secret"], v["id"], v["timestamp"], v["body"].encode(),
                                v["signature"])


def test_proc_stop_checks_exit_code_and_sanitizer_reports(tmp_path):
    script = tmp_path / "fake.sh"
    # The trap is set before the line is printed: once the line is in the log, SIGTERM exits 3.
    script.write_text("#!/bin/sh\ntrap 'exit 3' TERM\n"
                      "echo 'ERROR: AddressSanitizer: heap-use-after-free' >&2\n"
                      "while :; do sleep 0.05; done\n")
    script.chmod(0o755)
    p = Proc("fake", [script], log_dir=tmp_path, sanitized=True).start()
    wait_until(lambda: "AddressSanitizer" in p.log_text(), 5, "the fake report in the log")
    with pytest.raises(AssertionError, match="sanitizer report"):
        p.stop()
    assert not p.alive() and p.returncode == 3
    p.sanitized = False
    p.start()
    assert p.log_path.name == "fake-2.log"
    wait_until(lambda: "AddressSanitizer" in p.log_text(), 5, "the fake report in the second log")
    with pytest.raises(AssertionError, match="exited 3"):
        p.stop()


def test_wait_until_returns_the_value_or_names_what_timed_out():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, "a value", 0.001) == 7
    with pytest.raises(AssertionError, match=r"waiting for nothing \(last: 0\)"):
        wait_until(lambda: 0, 0.05, "nothing", 0.01)


def test_key_names_match_the_c_key_formats():
    """The formats of common/keys.c, read from the source so that a change there shows here."""
    keys_c = (harness.REPO / "common" / "keys.c").read_text()
    for fmt in ('"%sevent:%.*s"', '"%sindex-ready"', '"%s{%u}:jobs"', '"%s{%u}:retry"',
                '"%s{%u}:live"', '"%s{%u}:dead"', '"%s{%u}:payload:%s"'):
        assert fmt in keys_c, f"common/keys.c no longer formats {fmt}"
    assert (harness.JOBS, harness.RETRY, harness.LIVE, harness.DEAD) == (
        "wh:{0}:jobs", "wh:{0}:retry", "wh:{0}:live", "wh:{0}:dead")
    assert harness.INDEX_READY == "wh:index-ready"
    assert payload_key("0190-ab") == "wh:{0}:payload:0190-ab"
    assert payload_key("e", partition=3) == "wh:{3}:payload:e"
    assert event_key("order.created") == "wh:event:order.created"


def test_reconciler_pass_lines_are_parsed():
    text = ("2026-01-01T00:00:00.000Z info webhook-reconciler 1.0 (one pass, grace 1 s)\n"
            "2026-01-01T00:00:00.100Z info pass done: scanned 12, requeued 3, rescheduled 1, "
            "payloads restored 2, index entries fixed 4, purged 5\n"
            "2026-01-01T00:00:01.100Z info pass done (dry run: nothing changed): scanned 1, "
            "requeued 0, rescheduled 0, payloads restored 0, index entries fixed 7, purged 0\n"
            "2026-01-01T00:00:02.100Z error pass failed: scanned 9, requeued 9, rescheduled 9, "
            "payloads restored 9, index entries fixed 9, purged 9\n")
    assert reconciler_passes(text) == [
        {"scanned": 12, "requeued": 3, "rescheduled": 1, "payloads": 2, "index": 4, "purged": 5},
        {"scanned": 1, "requeued": 0, "rescheduled": 0, "payloads": 0, "index": 7, "purged": 0}]
    assert reconciler_passes("another reconciler holds the lock; skipping this pass") == []


def test_pending_by_consumer(rc):
    stream = "wh:{0}:jobs"
    rc.call("DEL", stream)
    assert rc.pending_by_consumer() == {}  # no stream, no group
    for i in range(3):
        rc.call("XADD", stream, "*", "d", json.dumps({"j": str(i)}))
    rc.call("XGROUP", "CREATE", stream, "workers", "0")
    assert rc.pending_by_consumer() == {}
    rc.call("XREADGROUP", "GROUP", "workers", "a", "COUNT", "2", "STREAMS", stream, ">")
    rc.call("XREADGROUP", "GROUP", "workers", "b", "COUNT", "5", "STREAMS", stream, ">")
    assert rc.pending_by_consumer() == {"a": 2, "b": 1}
    assert rc.pending() == 3
