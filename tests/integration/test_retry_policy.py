"""Per-subscription retryPolicy (issue 9, decision 25): each strategy gives the documented
delays between attempts (attempts.started_at, within the ±20 % jitter plus the promoter's tick)
and the job is dead after its last attempt; without a policy RETRY_SCHEDULE applies. The policy
is set with PATCH."""

import json

import pytest

from harness import attempt_times, patch_subscription, unique_name

JITTER = 0.20
SLACK = 0.35  # the promoter's 100 ms tick, the read and the lookup before sending


def run_failing(api, db, receiver, start_worker, policy):
    recv = receiver(statuses=500, name="failing")
    event = unique_name("retry")
    sub = api.register(event, recv.url())
    if policy is not None:
        patch_subscription(api, sub, {"retryPolicy": json.loads(policy)})
    start_worker(RETRY_SCHEDULE="0.3,0.3,0.3")
    eid = api.trigger(event, {"fail": True})["eventId"]
    job, = db.wait_jobs(eid, "dead", timeout=30)
    return job, attempt_times(db, job["id"]), recv


@pytest.mark.parametrize("policy,delays", [
    ('{"schedule":[1,2]}', [1, 2]),
    ('{"strategy":"exponential","baseSeconds":0.5,"maxSeconds":1,"maxAttempts":4}', [0.5, 1, 1]),
    ('{"strategy":"fixed","intervalSeconds":0.7,"maxAttempts":3}', [0.7, 0.7]),
    (None, [0.3, 0.3, 0.3]),  # no policy: the worker's RETRY_SCHEDULE
], ids=["schedule", "exponential", "fixed", "default"])
def test_strategy_gives_documented_attempt_times(api, db, receiver, start_worker, policy,
                                                 delays):
    job, times, recv = run_failing(api, db, receiver, start_worker, policy)
    assert int(job["attempts"]) == len(delays) + 1, job
    assert len(times) == len(delays) + 1 and recv.count() == len(delays) + 1, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    for gap, d in zip(gaps, delays):
        assert d * (1 - JITTER) - 0.02 <= gap <= d * (1 + JITTER) + SLACK, (gaps, delays)
    assert job["last_status_code"] == "500", job


def test_policy_change_applies_to_the_next_retry(api, db, receiver, start_worker):
    """The policy is read with each batch: a job already retrying under the default switches to
    the new one at its next attempt (here: no attempts left, so dead at once)."""
    recv = receiver(statuses=500, name="switch")
    event = unique_name("retry.switch")
    sub = api.register(event, recv.url())
    start_worker(RETRY_SCHEDULE="2,2,2")
    eid = api.trigger(event, {})["eventId"]
    recv.wait_for(1)
    patch_subscription(api, sub, {"retryPolicy": {"strategy": "fixed", "intervalSeconds": 0.2,
                                                  "maxAttempts": 2}})
    job, = db.wait_jobs(eid, "dead", timeout=15)
    assert int(job["attempts"]) == 2, job
