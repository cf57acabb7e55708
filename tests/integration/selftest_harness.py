"""Self-test of the harness alone (no broker or worker needed). Not collected by default (the
name does not match test_*.py); run it explicitly when changing harness.py or conftest.py:

    pytest-3 -q -p no:cacheprovider tests/integration/selftest_harness.py
"""

import json
import time

import pytest

from harness import (Api, Headers, RedisError, assert_error, sign_v1, signature_vectors,
                     verify_signature)


def test_postgres_database_and_query(db):
    assert db.scalar("SELECT 1") == "1"
    assert db.name == "wh_selftest_harness"
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
    api = Api(r.port)
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
    import http.client
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
    import threading
    t = threading.Thread(target=lambda: _swallow(Api(r.port, timeout=5).post, "/slow", b"{}"))
    t.start()
    r.wait_for(1, timeout=2)
    t0 = time.monotonic()
    r.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 10


def _swallow(fn, *a):
    try:
        fn(*a)
    except Exception:
        pass


def test_assert_error_shape(receiver):
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
    from harness import Proc
    script = tmp_path / "fake.sh"
    script.write_text("#!/bin/sh\necho 'ERROR: AddressSanitizer: heap-use-after-free' >&2\n"
                      "trap 'exit 3' TERM\nwhile :; do sleep 0.05; done\n")
    script.chmod(0o755)
    p = Proc("fake", [script], log_dir=tmp_path, sanitized=True).start()
    time.sleep(0.3)
    with pytest.raises(AssertionError, match="sanitizer report"):
        p.stop()
    assert not p.alive() and p.returncode == 3
    p.sanitized = False
    p.start()
    time.sleep(0.3)
    with pytest.raises(AssertionError, match="exited 3"):
        p.stop()
    assert p.log_path.name == "fake-2.log"
