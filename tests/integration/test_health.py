"""Health and readiness, Redis going away and coming back (this module's own redis-server is
killed and restarted on the same port), and graceful stops."""

import json

from harness import JOBS, assert_error, event_key, unique_name, wait_until


def readyz(api):
    st, _, data = api.get("/readyz", timeout=5)
    return st, data


def test_broker_exits_zero_on_sigterm(start_broker):
    b = start_broker(name="broker-stop")
    assert b.api.get("/healthz")[0] == 200
    assert b.stop() == 0


def test_redis_down_and_back(api, db, redis):
    event = unique_name("health")
    api.register(event, "http://127.0.0.1:9/h")
    assert readyz(api) == (200, {"status": "ready", "redis": "up", "postgres": "up"})

    redis.kill()
    try:
        st, data = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(api)), 15,
                              "/readyz to answer 503 with Redis down")
        assert data.get("status") == "unavailable" and data.get("redis") == "down", data
        assert data.get("postgres") == "up", data
        assert api.get("/healthz")[0] == 200, "liveness does not depend on Redis"

        events_before = db.count("events")
        assert_error(api.post(f"/api/v0/trigger-event/{event}", b"{}"), 503, "unavailable")
        assert_error(api.post(f"/api/v0/trigger-event/{unique_name('nobody')}", b"{}"), 503,
                     "unavailable")
        assert db.count("events") == events_before, "a refused trigger wrote an event"
    finally:
        if not redis.alive():
            redis.start()  # same port, empty data set

    wait_until(lambda: readyz(api)[0] == 200, 30, "/readyz 200 after Redis came back", 0.1)
    assert readyz(api)[1] == {"status": "ready", "redis": "up", "postgres": "up"}

    # The restarted Redis is empty, yet the contract is one job per active subscription: the
    # subscription registered before the restart still gets its job.
    old = api.trigger(event, b"{}")
    assert old["jobs"] == 1, f"the subscription made before the Redis restart was lost: {old}"

    fresh = unique_name("health.after")
    api.register(fresh, "http://127.0.0.1:9/after")
    data = api.trigger(fresh, b'{"after": true}')
    assert data["jobs"] == 1, data
    with redis.client() as rc:
        entries = [e for e in rc.stream_jobs(JOBS) if e["e"] == data["eventId"]]
        assert len(entries) == 1 and entries[0]["n"] == fresh, entries
        assert json.loads(rc.hgetall(event_key(fresh))["http://127.0.0.1:9/after"])["id"]
