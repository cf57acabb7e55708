"""Pause and resume (issue 9, decision 24). The broker and reconciler side on their own: a PATCH
writes ctl st after PostgreSQL, a resume runs the release script (held zset to the job stream,
lowest first, in chunks), a PATCH answers 200 when Redis is down, the reconciler holds the lost
jobs of a paused subscription again and releases the held jobs of subscriptions that are not
paused. End to end with a worker: nothing is delivered while paused, everything after the
resume, in creation order; also after Redis lost everything while paused.

The end-to-end order check runs one worker with WORKER_CONCURRENCY=1, so arrival order is the
order the release put the jobs on the stream: with more concurrent deliveries, jobs only start
oldest first (README, Subscription controls)."""

import json
import random
import re
import shutil
import time
import uuid

from harness import (JOBS, LIVE, PREFIX, RedisClient, run_reconciler, sql_quote, unique_name,
                     wait_until)

HOOKS = "/api/v0/webhooks"
HELD_SUBS = PREFIX + "{0}:held-subs"
PASS_RE = re.compile(r"pass done[^:]*: .* held again (\d+), released (\d+)")


def ctl(sub_id):
    return f"{PREFIX}{{0}}:ctl:{sub_id}"


def held(sub_id):
    return f"{PREFIX}{{0}}:held:{sub_id}"


def set_status(api, sub, status):
    st, _, data = api.request("PATCH", f"{HOOKS}/{sub['eventName']}/{sub['id']}",
                              {"status": status})
    assert st == 200, data
    assert data["status"] == status
    return data


def reconcile(redis, db, **env):
    """One pass with no grace; returns (counts, held again, released, output)."""
    counts, out = run_reconciler(redis, db, **{"RECONCILE_GRACE": 0, "RECONCILE_CONFIRM": 0.1,
                                               **env})
    m = PASS_RE.search(out)
    assert counts and m, out
    return counts, int(m.group(1)), int(m.group(2)), out


def job_msg(job_id, sub, n=0):
    return json.dumps({"j": job_id, "e": str(uuid.uuid4()), "s": sub["id"],
                       "n": sub["eventName"], "u": sub["webhookUrl"], "a": 1},
                      separators=(",", ":"))


def stream_of(rc, sub_id):
    """[(entry id, message)] of the partition's stream entries for one subscription."""
    return [(eid, f["d"]) for eid, f in rc.xrange(JOBS)
            if "d" in f and json.loads(f["d"])["s"] == sub_id]


# --- the broker and the reconciler on their own (no worker) ----------------------------------


def test_patch_writes_ctl_state(api, rc):
    sub = api.register(unique_name("pause-ctl"), "http://127.0.0.1:9/p")
    assert rc.call("EXISTS", ctl(sub["id"])) == 0
    set_status(api, sub, "paused")
    state = rc.hgetall(ctl(sub["id"]))
    assert state["st"] == "paused" and int(state["v"]) > 0, state
    set_status(api, sub, "active")
    after = rc.hgetall(ctl(sub["id"]))
    assert after["st"] == "active" and int(after["v"]) >= int(state["v"]), after
    # A PATCH without "status" leaves Redis alone.
    st, _, _ = api.request("PATCH", f"{HOOKS}/{sub['eventName']}/{sub['id']}",
                           {"description": "x"})
    assert st == 200 and rc.hgetall(ctl(sub["id"])) == after


def test_older_version_does_not_overwrite(api, rc):
    """Two PATCHes racing: Redis keeps the state of the later PostgreSQL update."""
    sub = api.register(unique_name("pause-ver"), "http://127.0.0.1:9/v")
    set_status(api, sub, "paused")
    rc.call("HSET", ctl(sub["id"]), "v", str(10 ** 17))  # a newer update is already there
    set_status(api, sub, "active")
    assert rc.hgetall(ctl(sub["id"]))["st"] == "paused"
    rc.call("DEL", ctl(sub["id"]))


def test_resume_releases_held_in_order(api, rc):
    """2500 hand-made held messages (more than one release chunk), added in random order, reach
    the stream lowest first; the held zset and its held-subs entry are gone."""
    sub = api.register(unique_name("pause-rel"), "http://127.0.0.1:9/r")
    set_status(api, sub, "paused")
    ids = [f"01900000-0000-7000-8000-{i:012x}" for i in range(2500)]
    msgs = [job_msg(j, sub) for j in ids]
    shuffled = msgs[:]
    random.Random(7).shuffle(shuffled)
    for k in range(0, len(shuffled), 500):
        args = []
        for m in shuffled[k:k + 500]:
            args += ["0", m]
        rc.call("ZADD", held(sub["id"]), *args)
    rc.call("SADD", HELD_SUBS, sub["id"])
    set_status(api, sub, "active")
    try:
        entries = stream_of(rc, sub["id"])
        assert [m for _, m in entries] == msgs, "released out of order or incompletely"
        assert rc.call("EXISTS", held(sub["id"])) == 0
        assert sub["id"] not in rc.smembers(HELD_SUBS)
    finally:
        for eid, _ in stream_of(rc, sub["id"]):
            rc.call("XDEL", JOBS, eid)


def test_reconciler_holds_lost_jobs_of_paused(api, rc, redis, db):
    sub = api.register(unique_name("pause-lost"), "http://127.0.0.1:9/l")
    set_status(api, sub, "paused")
    ev = api.trigger(sub["eventName"], {"n": 1})["eventId"]
    job = db.jobs(ev)[0]["id"]
    # No worker runs: the job is on the stream. Redis loses it.
    for eid, _ in stream_of(rc, sub["id"]):
        rc.call("XDEL", JOBS, eid)
    rc.call("SREM", LIVE, job)
    counts, held_again, released, out = reconcile(redis, db)
    assert held_again == 1 and counts["requeued"] == 0, out
    assert "held again, its subscription is paused" in out
    assert stream_of(rc, sub["id"]) == []
    members = rc.call("ZRANGE", held(sub["id"]), 0, -1, "WITHSCORES")
    assert len(members) == 2 and members[1] == b"0", members
    msg = json.loads(members[0])
    assert msg["j"] == job and msg["s"] == sub["id"] and msg["a"] == 1, msg
    assert sub["id"] in rc.smembers(HELD_SUBS)
    assert rc.call("SISMEMBER", LIVE, job) == 1
    # Held is live: a second pass changes nothing.
    _, held_again, released, out = reconcile(redis, db)
    assert held_again == 0 and released == 0, out
    # Resumed while Redis was not told (st written by hand): the reconciler releases.
    db.sql(f"UPDATE subscriptions SET paused_at = NULL WHERE id = {sql_quote(sub['id'])}")
    _, held_again, released, out = reconcile(redis, db)
    assert released == 1, out
    assert [json.loads(m)["j"] for _, m in stream_of(rc, sub["id"])] == [job]
    assert rc.call("EXISTS", held(sub["id"])) == 0
    assert sub["id"] not in rc.smembers(HELD_SUBS)
    for eid, _ in stream_of(rc, sub["id"]):
        rc.call("XDEL", JOBS, eid)
    rc.call("SREM", LIVE, job)
    db.sql(f"UPDATE jobs SET status = 'cancelled' WHERE id = {sql_quote(job)}")


def test_reconciler_releases_deleted_and_keeps_paused(api, rc, redis, db):
    paused = api.register(unique_name("pause-keep"), "http://127.0.0.1:9/k")
    gone = api.register(unique_name("pause-gone"), "http://127.0.0.1:9/g")
    set_status(api, paused, "paused")
    set_status(api, gone, "paused")
    for s in (paused, gone):
        rc.call("ZADD", held(s["id"]), "0", job_msg(f"01900000-0000-7000-8000-{1:012x}", s))
        rc.call("SADD", HELD_SUBS, s["id"])
    # Deleted by a broker that died before its Redis step (the DELETE releases them itself).
    db.sql(f"UPDATE subscriptions SET status = 'deleted', deleted_at = now() "
           f"WHERE id = {sql_quote(gone['id'])}")
    _, _, released, out = reconcile(redis, db, RECONCILE_DRY_RUN=1)
    assert released == 1 and rc.call("ZCARD", held(gone["id"])) == 1, out
    _, _, released, out = reconcile(redis, db)
    assert released == 1, out
    assert rc.call("ZCARD", held(paused["id"])) == 1, "a paused subscription's jobs were released"
    assert rc.call("EXISTS", held(gone["id"])) == 0
    assert rc.smembers(HELD_SUBS) & {paused["id"], gone["id"]} == {paused["id"]}
    for eid, _ in stream_of(rc, gone["id"]):
        rc.call("XDEL", JOBS, eid)
    rc.call("DEL", held(paused["id"]))
    rc.call("SREM", HELD_SUBS, paused["id"])


def test_patch_answers_when_redis_is_down(start_broker, broker, redis, db):
    b = start_broker()
    sub = b.api.register(unique_name("pause-down"), "http://127.0.0.1:9/d")
    redis.kill()
    try:
        out = set_status(b.api, sub, "paused")
        assert out["pausedAt"]
        assert db.scalar(f"SELECT paused_at IS NOT NULL FROM subscriptions "
                         f"WHERE id = {sql_quote(sub['id'])}") == "t"
        out = set_status(b.api, sub, "active")
        wait_until(lambda: "reconciler" in b.log_text() and "was not told" in b.log_text(), 5,
                   "the broker to warn that Redis was not told")
    finally:
        redis.start()
        wait_until(lambda: broker.api.request("GET", "/readyz", timeout=2)[0] == 200, 15,
                   "the module broker to be ready again")


def test_delete_releases_held_jobs(api, rc):
    """The jobs a paused subscription held go back to the stream when it is deleted (the
    workers cancel them there), and Redis forgets that it held any."""
    sub = api.register(unique_name("pause-del"), "http://127.0.0.1:9/x")
    set_status(api, sub, "paused")
    msg = job_msg("01900000-0000-7000-8000-000000000001", sub)
    rc.call("ZADD", held(sub["id"]), "0", msg)
    rc.call("SADD", HELD_SUBS, sub["id"])
    st, _, out = api.delete(f"{HOOKS}/{sub['eventName']}/{sub['id']}")
    assert st == 200 and out["status"] == "deleted", out
    try:
        assert [m for _, m in stream_of(rc, sub["id"])] == [msg]
        assert rc.call("EXISTS", held(sub["id"])) == 0
        assert sub["id"] not in rc.smembers(HELD_SUBS)
    finally:
        for eid, _ in stream_of(rc, sub["id"]):
            rc.call("XDEL", JOBS, eid)


# --- end to end, with a worker ----------------------------------------------------------------


def trigger_many(api, event, n):
    """n triggers, each in a millisecond of its own (UUIDv7 job ids then follow the trigger
    order); returns the event ids."""
    out = []
    for i in range(n):
        out.append(api.trigger(event, {"n": i})["eventId"])
        time.sleep(0.002)
    return out


def arrival(receiver):
    return [json.loads(r.body)["n"] for r in receiver.requests]


def test_pause_then_resume_delivers_all_in_order(api, db, rc, start_worker, receiver):
    rcv = receiver()
    sub = api.register(unique_name("pause-e2e"), rcv.url())
    start_worker(WORKER_CONCURRENCY=1)
    set_status(api, sub, "paused")
    trigger_many(api, sub["eventName"], 200)
    wait_until(lambda: rc.call("ZCARD", held(sub["id"])) == 200, 20,
               "the worker to hold all 200 jobs")
    time.sleep(5)
    assert rcv.count() == 0, "delivered while paused"
    set_status(api, sub, "active")
    rcv.wait_for(200, timeout=60)
    assert arrival(rcv) == list(range(200))
    assert rc.call("EXISTS", held(sub["id"])) == 0


def test_pause_survives_redis_data_loss(api, db, rc, redis, start_worker, receiver):
    rcv = receiver()
    sub = api.register(unique_name("pause-loss"), rcv.url())
    start_worker(WORKER_CONCURRENCY=1)
    set_status(api, sub, "paused")
    trigger_many(api, sub["eventName"], 200)
    wait_until(lambda: rc.call("ZCARD", held(sub["id"])) == 200, 20,
               "the worker to hold all 200 jobs")
    redis.kill()
    for p in redis.dir.iterdir():
        if p.is_file() and p.suffix in (".rdb", ".aof"):
            p.unlink()
        elif p.is_dir() and p.name.startswith("appendonly"):
            shutil.rmtree(p)
    redis.start()
    with RedisClient(redis.port) as c:
        # the held jobs are gone with the data (the broker and worker may already have
        # reconnected and written keys of their own, so not DBSIZE)
        assert c.call("ZCARD", held(sub["id"])) == 0
    counts, held_again, _, out = reconcile(redis, db)
    assert held_again == 200 and counts["requeued"] == 0, out
    time.sleep(3)
    assert rcv.count() == 0, "delivered while paused"
    set_status(api, sub, "active")
    rcv.wait_for(200, timeout=60)
    assert sorted(arrival(rcv)) == list(range(200))
    assert arrival(rcv) == list(range(200)), "released out of creation order"
