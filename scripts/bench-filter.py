#!/usr/bin/env python3
"""What payload filters cost a trigger (decision 30): starts a private PostgreSQL, Redis and
broker on free loopback ports (tests/integration/harness.py; no worker, the jobs stay queued),
registers three events of 100 subscriptions each: without filters, with 100 different filters
that all match the payload (the same 100 jobs: the filters' own cost), and with 100 that all
fail (no jobs). Then times BENCH_N triggers of each (interleaved, one at a time, a ~1 KiB
payload) and reads the broker's CPU time (/proc/<pid>/task/*/schedstat, ns) around each kind.
Prints per-trigger latency (mean, p50, p99) and broker CPU, and the ratios to the filter-less
event. Exits non-zero when a ratio of "all match" to "no filters" is 2 or more.
Environment: WH_BUILD_DIR (default build/), BENCH_N (default 400). Stops everything it starts.
"""

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
import harness  # noqa: E402
from harness import API_KEY, Broker, PgServer, RedisServer  # noqa: E402

N = int(os.environ.get("BENCH_N", "400"))
SUBS = 100

PAYLOAD = {
    "type": "order.created", "id": "ord_0190b0a2", "livemode": True,
    "data": {"amount": 15000, "currency": "EUR", "status": "paid",
             "customer": {"id": "cus_42", "email": "ops.team@example.com", "tier": "gold",
                          "address": {"city": "Lyon", "country": "FR", "zip": "69001"}},
             "items": [{"sku": f"sku-{i}", "qty": i % 3 + 1, "price": 1000 + i * 250,
                        "tags": ["new", "promo"] if i % 2 else ["stock"]} for i in range(8)],
             "metadata": {"channel": "web", "campaign": "spring", "note": "x" * 200}},
}


def matching(i):
    """A different filter per subscription, each true for PAYLOAD: five conditions."""
    return {"type": "order.created", "data.amount": {"$gte": i * 100},
            "data.currency": {"$in": ["EUR", "USD", f"X{i}"]},
            "data.items.sku": f"sku-{i % 8}",
            "$or": [{"data.customer.email": {"$suffix": "@example.com"}},
                    {"data.customer.tier": f"t{i}"}]}


def failing(i):
    """The same shape, false for PAYLOAD (the last condition fails)."""
    f = matching(i)
    f["data.items.sku"] = f"none-{i}"
    return f


def cpu_ns(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    procs = []
    pg = PgServer()
    try:
        pg.start()
        db = pg.create_database("bench_filter")
        redis = RedisServer(tmp / "redis")
        (tmp / "redis").mkdir(exist_ok=True)
        redis.start()
        procs.append(redis)
        broker = Broker(tmp, redis, db, {"LOG_LEVEL": "warn",
                                         "MAX_SUBSCRIPTIONS_PER_EVENT": "1000"})
        broker.start()
        procs.append(broker)
        api = broker.api
        kinds = {"no filters": lambda i: None, "100 filters, all match": matching,
                 "100 filters, none match": failing}
        events = {}
        for k, (kind, make) in enumerate(kinds.items()):
            event = f"bench.filter.{k}"
            events[kind] = event
            for i in range(SUBS):
                body = {"eventName": event, "webhookUrl": f"http://127.0.0.1:9/{k}/{i}"}
                if make(i) is not None:
                    body["filter"] = make(i)
                st, _, data = api.post("/api/v0/webhooks", body)
                assert st == 201, data
        body = json.dumps(PAYLOAD).encode()
        print(f"payload {len(body)} bytes; {SUBS} subscriptions per event; {N} triggers each")
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=30)
        hdrs = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

        def trigger(event):
            t0 = time.perf_counter()
            conn.request("POST", f"/api/v0/trigger-event/{event}", body=body, headers=hdrs)
            resp = conn.getresponse()
            data = json.loads(resp.read())
            dt = time.perf_counter() - t0
            assert resp.status == 202, data
            return dt, data["jobs"]

        lat = {kind: [] for kind in kinds}
        cpu = {kind: 0 for kind in kinds}
        jobs = {kind: set() for kind in kinds}
        for kind in kinds:  # warm up (and fill the filter cache)
            for _ in range(20):
                trigger(events[kind])
        for _ in range(N // 20):
            for kind in kinds:
                before = cpu_ns(broker.pid)
                for _ in range(20):
                    dt, n = trigger(events[kind])
                    lat[kind].append(dt)
                    jobs[kind].add(n)
                cpu[kind] += cpu_ns(broker.pid) - before
        conn.close()
        base_mean = statistics.mean(lat["no filters"])
        base_cpu = cpu["no filters"] / len(lat["no filters"])
        print(f"{'':26} {'jobs':>5} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU us':>7} {'x mean':>7} {'x CPU':>6}")
        worst = 0.0
        for kind in kinds:
            xs = sorted(lat[kind])
            mean = statistics.mean(xs)
            c = cpu[kind] / len(xs)
            print(f"{kind:26} {'/'.join(map(str, sorted(jobs[kind]))):>5} {mean * 1e3:8.2f} "
                  f"{xs[len(xs) // 2] * 1e3:7.2f} {xs[int(len(xs) * 0.99)] * 1e3:7.2f} "
                  f"{c / 1e3:7.0f} {mean / base_mean:7.2f} {c / base_cpu:6.2f}")
            if kind == "100 filters, all match":
                worst = max(mean / base_mean, c / base_cpu)
        return 0 if worst < 2 else 1
    finally:
        harness.stop_all(list(reversed(procs)))
        pg.stop()
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
