"""A worker killed with SIGKILL in the middle of a batch: another worker claims its pending
entries after CLAIM_IDLE and finishes every job. Duplicates are bounded by what the dead
worker had in flight (receivers deduplicate on webhook-id)."""

import json
from collections import Counter

from harness import sql_quote, unique_name, wait_drained, wait_until

N_EVENTS = 50
CONCURRENCY = 4
WORKER_ENV = dict(WORKER_CONCURRENCY=CONCURRENCY, DELIVERY_TIMEOUT=2, DELIVERY_CONNECT_TIMEOUT=1,
                  CLAIM_IDLE=3, RETRY_SCHEDULE="0.5,0.5,0.5,0.5")


def test_killed_worker_jobs_are_finished(api, db, rc, receiver, start_worker, report):
    r = receiver(200, delay=0.5)
    event = unique_name("crash")
    api.register(event, r.url())
    worker_a = start_worker(name="worker-a", **WORKER_ENV)
    start_worker(name="worker-b", **WORKER_ENV)

    event_ids = [api.trigger(event, json.dumps({"n": i}).encode())["eventId"]
                 for i in range(N_EVENTS)]
    r.wait_for(N_EVENTS // 3, timeout=30)  # steady state: both workers busy
    before_kill = rc.pending_by_consumer()
    worker_a.kill()
    received_at_kill = r.count()
    assert received_at_kill < N_EVENTS, "all deliveries were done before the kill: nothing tested"

    def statuses():
        return dict(db.sql(f"SELECT j.status, count(*) FROM jobs j JOIN events e ON e.id = "
                           f"j.event_id WHERE e.event_name = {sql_quote(event)} GROUP BY 1"))

    try:
        wait_until(lambda: statuses() == {"delivered": str(N_EVENTS)}, 60,
                   "every job delivered after the kill", 0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; jobs by status: {statuses()}; pending by consumer: "
                             f"{rc.pending_by_consumer()}") from None

    ids = Counter(q.headers.get("webhook-id") for q in r.requests)
    missing = set(event_ids) - set(ids)
    assert not missing, f"{len(missing)} events never reached the receiver"
    assert set(ids) == set(event_ids), f"unexpected webhook-ids: {set(ids) - set(event_ids)}"
    duplicates = sum(ids.values()) - len(ids)
    report(f"{N_EVENTS} jobs, worker A killed after {received_at_kill} requests "
           f"(pending by consumer then: {before_kill}); {sum(ids.values())} requests, "
           f"{duplicates} duplicates (bound: {CONCURRENCY})")
    assert duplicates <= CONCURRENCY, f"{duplicates} duplicates: {[i for i, n in ids.items() if n > 1]}"

    job_ids = [row[0] for row in db.sql(
        f"SELECT j.id FROM jobs j JOIN events e ON e.id = j.event_id "
        f"WHERE e.event_name = {sql_quote(event)}")]
    wait_drained(rc, job_ids)
