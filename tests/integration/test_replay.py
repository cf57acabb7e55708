"""POST /api/v0/events/<id>/replay (issue 10, decision 28): new jobs for an event, to the listed
or every live subscription of its name; and the original payload bytes (payloadRaw) on
GET /api/v0/events/<id>."""

import json

from harness import assert_error, unique_name, verify_signature


def three_subs(api, receiver):
    event = unique_name("replay")
    recvs = [receiver(statuses=200, name=f"r{i}") for i in range(3)]
    subs = [api.register(event, r.url()) for r in recvs]
    return event, recvs, subs


def test_replay_to_two_of_three_creates_exactly_two_jobs(api, db, receiver, start_worker):
    event, recvs, subs = three_subs(api, receiver)
    start_worker()
    eid = api.trigger(event, {"x": 1})["eventId"]
    db.wait_jobs(eid, "delivered", count=3)
    for r in recvs:
        r.wait_for(1)
    pick = [subs[0]["id"], subs[2]["id"]]
    st, _, out = api.post(f"/api/v0/events/{eid}/replay", {"subscriptionIds": pick})
    assert st == 202, out
    assert out["count"] == 2 and sorted(j["subscriptionId"] for j in out["jobs"]) == sorted(pick)
    jobs = db.wait_jobs(eid, "delivered", count=5)
    assert len(jobs) == 5
    recvs[0].wait_for(2)
    recvs[2].wait_for(2)
    assert recvs[1].count() == 1
    new = {j["id"] for j in out["jobs"]}
    assert new <= {j["id"] for j in jobs}


def test_replay_to_all_live_subscriptions(api, db, receiver, start_worker):
    event, recvs, subs = three_subs(api, receiver)
    # a deleted subscription gets nothing
    assert api.delete(f"/api/v0/webhooks/{event}/{subs[1]['id']}")[0] in (200, 204)
    start_worker()
    eid = api.trigger(event, {"y": 2})["eventId"]
    db.wait_jobs(eid, "delivered", count=2)
    st, _, out = api.post(f"/api/v0/events/{eid}/replay")
    assert st == 202 and out["count"] == 2, out
    db.wait_jobs(eid, "delivered", count=4)
    recvs[0].wait_for(2)
    recvs[2].wait_for(2)
    assert recvs[1].count() == 0


def test_replay_refuses_unknown_ids_and_writes_nothing(api, db, receiver):
    event, recvs, subs = three_subs(api, receiver)
    other = api.register(unique_name("replay.other"), recvs[0].url())
    eid = api.trigger(event, {})["eventId"]
    before = db.count("jobs")
    unknown = "0190aaaa-0000-7000-8000-000000000000"
    err = assert_error(api.post(f"/api/v0/events/{eid}/replay",
                                {"subscriptionIds": [subs[0]["id"], unknown, other["id"]]}),
                       400, "invalid_field")
    assert unknown in err["message"] and other["id"] in err["message"]
    assert subs[0]["id"] not in err["message"]
    for body in ({"subscriptionIds": ["nope"]}, {"subscriptionIds": []},
                 {"subscriptionIds": "x"}, {"ids": []}):
        err = assert_error(api.post(f"/api/v0/events/{eid}/replay", body), 400, "invalid_field")
    assert_error(api.post(f"/api/v0/events/{unknown}/replay"), 404)
    assert_error(api.post("/api/v0/events/nope/replay"), 400, "invalid_field")
    assert db.count("jobs") == before


def test_payload_raw_is_the_triggered_bytes_and_verifies_the_signature(api, db, receiver,
                                                                       start_worker):
    recv = receiver(statuses=200)
    event = unique_name("replay.raw")
    sub = api.register(event, recv.url())
    start_worker()
    raw = b' {"amount": 1.0e3, "n":[1,2 ,3],\n "s": "caf\\u00e9 \xc3\xa9"}\n'
    eid = api.trigger(event, raw)["eventId"]
    req, = recv.wait_for(1)
    assert req.body == raw
    got = api.event(eid)
    assert got["payloadRaw"].encode() == raw
    assert got["payload"] == json.loads(raw)
    ts = int(req.headers["webhook-timestamp"])
    assert verify_signature(sub["secret"], eid, ts, got["payloadRaw"].encode(),
                            req.headers["webhook-signature"])
