"""The reconciler on a real Redis Cluster (docs/decisions.md 48): its blocking router sends
each command to the master of its key's slot, runs the re-enqueue MULTI on the partition's
master, and scans the event index on every master. Jobs whose streams were lost on every
master are requeued and then delivered; stale index entries (in the ready mark's slot, decision
48) are all found and removed."""


import pytest

import harness
from harness import Broker, Worker, run_reconciler, unique_name, wait_until

PARTS = 4


@pytest.fixture(scope="module")
def cbroker(binaries, need_binaries, cluster_target, db, module_dir):
    need_binaries("webhook-worker", "webhook-reconciler")
    b = Broker(module_dir, cluster_target, db, {"QUEUE_PARTITIONS": PARTS})
    try:
        b.start()
        yield b
    finally:
        b.stop()


def key(kind, part):
    return f"{harness.PREFIX}{{{part}}}:{kind}"


def test_requeue_and_index_on_every_master(cbroker, cluster_target, db, cluster, receiver,
                                           tmp_path, report):
    api = cbroker.api
    event = unique_name("crecon")
    r = receiver(200)
    subs = [api.register(event, r.url(f"/s{i}")) for i in range(4)]
    eids = [api.trigger(event, f'{{"n": {n}}}'.encode())["eventId"] for n in range(5)]
    total = len(eids) * len(subs)
    # No worker yet: the jobs wait on the partitions' streams. Lose them on every master.
    for p in range(PARTS):
        for kind in ("jobs", "live"):
            cluster.call_key(key(kind, p), "DEL", key(kind, p))
    # Stale index entries (no such subscription). On a cluster the index keys carry the ready
    # mark's hash tag (decision 48): all on the mark's master, which the reconciler's SCAN of
    # every master must reach whichever it is.
    ready = f"{{{harness.PREFIX}index-ready}}:ready"
    ghosts = [f"{{{harness.PREFIX}index-ready}}:event:{unique_name('ghost')}" for _ in range(12)]
    for g in ghosts:
        cluster.call_key(g, "HSET", g, "http://127.0.0.1:9/ghost", "not-an-entry")
    owners = {cluster.slot_owner(cluster.call("CLUSTER", "KEYSLOT", g)) for g in ghosts}
    assert owners == {cluster.slot_owner(cluster.call("CLUSTER", "KEYSLOT", ready))}

    counts, text = run_reconciler(cluster_target, db, log_path=tmp_path / "reconciler.log",
                                  RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.2,
                                  QUEUE_PARTITIONS=PARTS)
    assert counts is not None, text
    assert counts["requeued"] == total, (counts, text[-3000:])
    assert counts["index"] >= len(ghosts), (counts, text[-3000:])
    for g in ghosts:
        assert cluster.call_key(g, "EXISTS", g) == 0, f"{g} was not cleaned"
    report(f"reconciler on the cluster: {counts}")

    w = Worker(tmp_path, cluster_target, db, {"QUEUE_PARTITIONS": str(PARTS)},
               name="recon-worker")
    try:
        w.start()
        ids = ",".join(harness.sql_quote(e) for e in eids)
        wait_until(lambda: db.scalar("SELECT count(*) FROM jobs WHERE status = 'delivered' AND "
                                     f"event_id IN ({ids})") == str(total),
                   60, f"{total} requeued jobs delivered")
    finally:
        harness.stop_all([w])
    got = {(q.path, q.headers.get("webhook-id")) for q in r.requests}
    assert got == {(f"/s{i}", e) for i in range(len(subs)) for e in eids}

    # A second pass finds nothing to do.
    counts, text = run_reconciler(cluster_target, db, RECONCILE_GRACE=0, RECONCILE_CONFIRM=0.2,
                                  QUEUE_PARTITIONS=PARTS)
    assert counts is not None and counts["requeued"] == 0 and counts["index"] == 0, \
        (counts, text[-3000:])
