"""Our key layout against a real Redis Cluster (3 masters, 3 replicas; docs/decisions.md 43):
common/cluster.c's slot of a key equals the cluster's CLUSTER KEYSLOT (the specification's
examples, hash tag edge cases, random keys, and every key common/keys.c formats, through the
build/tests/keyslot helper); every key of partition p lands in the slot of "{p}"; the
multi-key shapes the code sends for one partition run on the cluster, and the shapes that would
mix slots fail there as decision 43 lists them."""

import os
import random
import subprocess

import pytest

import harness
from harness import RedisError

SUB = "0190a0b0-1111-7000-8000-000000000001"
EVENT = "0190a0b0-2222-7000-8000-000000000002"
NAMES = ["order.created", "order.*", "*", "invoice.paid.eu", "a"]
MAX_PARTITIONS = 256  # QUEUE_PARTITIONS' upper bound (common/cfg.h)
PARTITION_KINDS = {"jobs", "retry", "live", "dead", "payload", "ctl", "ctl-prefix", "held",
                   "held-subs", "rate", "batch-pend", "batch-pend-prefix", "batch-subs"}
GLOBAL_KINDS = {"index-ready", "index-rebuild", "index-patterns", "event", "cluster-event",
                "cluster-event-tenant", "cluster-index-ready"}


def keyslot_tool():
    path = harness.binary("tests/keyslot")
    if not path.exists():
        msg = f"not built: {path}"
        if os.environ.get("WH_BUILD_DIR"):
            pytest.fail(msg)
        pytest.skip(msg)
    return str(path)


def our_slots(keys):
    """common/cluster.c's slot of each key (no newline in keys)."""
    out = subprocess.run([keyslot_tool()], input="".join(k + "\n" for k in keys).encode(),
                         capture_output=True, check=True, timeout=30).stdout.decode()
    return [int(x) for x in out.split()]


def our_keys(prefix, parts=MAX_PARTITIONS):
    """[(kind, partition or None, key, slot)] for every key common/keys.c formats."""
    out = subprocess.run([keyslot_tool(), "--keys", prefix, str(parts), SUB, EVENT, *NAMES],
                         capture_output=True, check=True, timeout=30).stdout.decode()
    rows = []
    for line in out.splitlines():
        kind, part, key, slot = line.split("\t")
        rows.append((kind, None if part == "-" else int(part), key, int(slot)))
    return rows


def cluster_slots(cluster, keys):
    with cluster.client() as c:
        replies = c.pipeline([("CLUSTER", "KEYSLOT", k) for k in keys])
    for r in replies:
        assert not isinstance(r, RedisError), r
    return replies


def test_cluster_is_three_masters_with_replicas(cluster):
    slots = cluster.call("CLUSTER", "SLOTS")
    assert sum(hi - lo + 1 for lo, hi, *_ in slots) == 16384
    assert len(cluster.master_ports()) == 3
    assert all(len(r) - 3 == 1 for r in slots)  # one replica per range
    assert cluster.info(cluster.ports[0])["cluster_size"] == "3"


def test_slot_function_matches_cluster(cluster):
    rng = random.Random(43)
    alphabet = "ab{}:.*-_x0é"
    keys = ["123456789", "foo", "bar", "", "{user1000}.following", "{user1000}.followers",
            "user1000", "{}", "{{bar}}", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{bar",
            "bar}", "}{bar}", "{", "}", "{}{}", "a{b}c", "{a}{b}", "wh:{0}:jobs",
            "{wh:index-ready}:rebuild", "ümlaut{ü}"]
    keys += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(600)]
    ours = our_slots(keys)
    theirs = cluster_slots(cluster, keys)
    diff = [(k, o, t) for k, o, t in zip(keys, ours, theirs) if o != t]
    assert not diff, diff[:10]
    assert len(ours) == len(keys)
    assert ours[0] == 0x31C3  # the specification's CRC16 vector is < 16384
    assert ours[keys.index("{user1000}.following")] == ours[keys.index("user1000")]


@pytest.mark.parametrize("prefix", ["wh:", "app.webhooks:"])
def test_key_layout_matches_cluster(cluster, prefix, report):
    rows = our_keys(prefix)
    assert {r[0] for r in rows} == PARTITION_KINDS | GLOBAL_KINDS
    theirs = cluster_slots(cluster, [r[2] for r in rows])
    diff = [(r, t) for r, t in zip(rows, theirs) if r[3] != t]
    assert not diff, diff[:10]

    # Every key of partition p is in the slot of "{p}": one MULTI or script per partition.
    tag_slots = cluster_slots(cluster, [f"{{{p}}}" for p in range(MAX_PARTITIONS)])
    for kind, part, key, slot in rows:
        if part is not None:
            assert slot == tag_slots[part], (kind, key)
    assert len({r[3] for r in rows if r[1] is not None}) == len(set(tag_slots))
    # The ready mark, the rebuild token and the patterns mark share a slot (one script sets
    # one, deletes the other; one MGET reads the marks).
    g = {k: s for k, _, _, s in rows if k in ("index-ready", "index-rebuild", "index-patterns")}
    assert g["index-ready"] == g["index-rebuild"] == g["index-patterns"]
    # On one server (redis://) event index keys are not tagged: each name is its own slot.
    events = {key: slot for kind, _, key, slot in rows if kind == "event"}
    assert len(events) == len(NAMES)
    assert all(cluster_slots(cluster, [k])[0] == s for k, s in events.items())
    assert len(set(events.values())) > 1
    # On a cluster (decision 48) every index key, global or a tenant's, is in the ready mark's
    # slot: a master losing its data loses the index and the mark together.
    tagged = [(key, slot) for kind, _, key, slot in rows if kind.startswith("cluster-event")]
    assert len(tagged) == 2 * len(NAMES)
    assert all(key.startswith(f"{{{prefix}index-ready}}:event:") for key, _ in tagged)
    assert {slot for _, slot in tagged} == {g["index-ready"]}
    # The cluster's mark has another name than the untagged index's (an upgraded cluster
    # rebuilds instead of trusting the old mark over the new, empty keys), in the same slot.
    [(mark, mark_slot)] = [(key, slot) for kind, _, key, slot in rows
                           if kind == "cluster-index-ready"]
    assert mark == f"{{{prefix}index-ready}}:ready" and mark_slot == g["index-ready"]

    # How QUEUE_PARTITIONS spreads the queues over the 3 masters (decision 43).
    owners = {}
    for p in range(MAX_PARTITIONS):
        owners[p] = cluster.slot_owner(tag_slots[p])
    masters = cluster.master_ports()
    spread = []
    for n in (1, 2, 3, 4, 8, 16, 64, 256):
        per = [sum(1 for p in range(n) if owners[p] == m) for m in masters]
        spread.append(f"{n}:{'/'.join(map(str, per))}")
    report(f"cluster keys ({prefix}): partitions -> per-master counts: {' '.join(spread)}")
    assert sum(sum(1 for p in range(16) if owners[p] == m) for m in masters) == 16


def on_owner(cluster, key):
    """A client connected to the master of key's slot."""
    return cluster.client(cluster.slot_owner(cluster.call("CLUSTER", "KEYSLOT", key)))


def test_partition_shapes_run_on_cluster(cluster):
    """The multi-key shapes of one partition (decision 43's audit) execute on the cluster."""
    rows = our_keys("wh:", 4)
    k = {(kind, part): key for kind, part, key, _ in rows}
    p = 3
    with on_owner(cluster, k[("jobs", p)]) as c:
        # broker/commit.c, worker/opevents.c: MULTI { SET payload, XADD jobs, SADD live } EXEC
        got = c.pipeline([("MULTI",), ("SET", k[("payload", p)], "{}", "EX", "60"),
                          ("XADD", k[("jobs", p)], "*", "d", "m1"), ("SADD", k[("live", p)], "j1"),
                          ("EXEC",)])
        assert got[0] == "OK" and isinstance(got[-1], list) and len(got[-1]) == 3, got
        # worker/outcome.c: MULTI { XACK+XDEL jobs, SREM live, ZADD retry, XADD dead } EXEC
        got = c.pipeline([("MULTI",), ("XDEL", k[("jobs", p)], "0-1"),
                          ("SREM", k[("live", p)], "j1"), ("ZADD", k[("retry", p)], 1, "m1"),
                          ("XADD", k[("dead", p)], "*", "d", "m1"), ("EXEC",)])
        assert isinstance(got[-1], list) and len(got[-1]) == 4, got
        # worker/gate.c, common/held.c: scripts over ctl, held, held-subs, jobs/retry
        keys = [k[("ctl", p)], k[("held", p)], k[("held-subs", p)], k[("jobs", p)],
                k[("retry", p)], k[("rate", p)]]
        got = c.call("EVAL", "for i = 1, #KEYS do redis.call('EXISTS', KEYS[i]) end "
                     "redis.call('ZADD', KEYS[2], 0, 'm') redis.call('SADD', KEYS[3], 's') "
                     "return #KEYS", len(keys), *keys)
        assert got == len(keys)
        # worker/batch.c's periodic script: keys built inside the script from a prefix (ARGV),
        # not declared, in the same slot: allowed by Redis 7.0.
        got = c.call("EVAL", "redis.call('SADD', KEYS[1], ARGV[3]) "
                     "redis.call('ZADD', ARGV[1] .. ARGV[3], 1, 'm') "
                     "redis.call('HSET', ARGV[2] .. ARGV[3], 'bmax', 10) "
                     "return redis.call('ZCARD', ARGV[1] .. ARGV[3])", 2,
                     k[("batch-subs", p)], k[("jobs", p)], k[("batch-pend-prefix", p)],
                     k[("ctl-prefix", p)], SUB)
        assert got == 1
        # worker/prep.c: MGET of payloads of one partition
        got = c.call("MGET", k[("payload", p)], k[("payload", p)] + "x")
        assert got == [b"{}", None]
    # broker/subs.c mark_lua: the rebuild token and the ready mark in one script
    with on_owner(cluster, k[("index-ready", None)]) as c:
        got = c.call("EVAL", "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                     "redis.call('SET', KEYS[2], '1') redis.call('DEL', KEYS[1]) return 1 end "
                     "return 0", 2, k[("index-rebuild", None)], k[("index-ready", None)], "t")
        assert got == 0


def test_cross_slot_shapes_fail_on_cluster(cluster):
    """What decision 43 lists as work: these shapes fail on a cluster today."""
    rows = our_keys("wh:", 8)
    k = {(kind, part): key for kind, part, key, _ in rows}
    jobs = [k[("jobs", p)] for p in range(8)]
    owner = {j: cluster.slot_owner(cluster.call("CLUSTER", "KEYSLOT", j)) for j in jobs}
    # worker/reader.c: one XREADGROUP over every partition's stream -> CROSSSLOT, even when the
    # partitions' slots are on the same master.
    with on_owner(cluster, jobs[0]) as c:
        with pytest.raises(RedisError, match="CROSSSLOT"):
            c.call("XREADGROUP", "GROUP", "workers", "c", "COUNT", 1, "STREAMS", *jobs,
                   *([">"] * len(jobs)))
        same = next(j for j in jobs[1:] if owner[j] == owner[jobs[0]])
        with pytest.raises(RedisError, match="CROSSSLOT"):
            c.call("XREADGROUP", "GROUP", "workers", "c", "COUNT", 1, "STREAMS", jobs[0], same,
                   ">", ">")
        # A MULTI or script mixing an event index key and a partition key.
        with pytest.raises(RedisError, match="CROSSSLOT"):
            c.call("EVAL", "return 1", 2, jobs[0], k[("event", None)])
        # A script reaching an undeclared key of another master's slot.
        other = next(j for j in jobs if owner[j] != owner[jobs[0]])
        with pytest.raises(RedisError, match="non local key"):
            c.call("EVAL", "return redis.call('EXISTS', ARGV[1])", 1, jobs[0], other)
        # A plain command for a key of another master: MOVED, which cluster_redirect_parse reads.
        with pytest.raises(RedisError, match=r"^MOVED \d+ 127\.0\.0\.1:\d+$"):
            c.call("XLEN", other)
    # broker/trigger.c reads the marks and HGETALLs the matching event keys: untagged (redis://
    # keys) these are different slots; with the cluster tag they are one slot, so one script
    # may even touch the mark and an index key together.
    slots = cluster_slots(cluster, [k[("index-ready", None)]] +
                          [key for (kind, _), key in k.items() if kind == "event"])
    assert len(set(slots)) > 1
    with on_owner(cluster, k[("index-ready", None)]) as c:
        assert c.call("EVAL", "return redis.call('EXISTS', KEYS[1], KEYS[2])", 2,
                      k[("index-ready", None)], k[("cluster-event", None)]) == 0
