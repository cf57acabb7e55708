"""Fault injection with real processes under a bounded load.

Every test runs its own redis-server, its own database (test_pg_restart: its own PostgreSQL
server, since it restarts it), its own broker and workers, Python receivers and a load
generator thread that records every eventId answered 202. A fault is injected mid-load, and at
the end the same invariants are checked (verify()):

- every (eventId, subscriber URL) pair answered 202 was received (answered 2xx in time by the
  receiver) at least once, and so was every pair of any event PostgreSQL holds without a 202
  (committed, but the answer never reached the client);
- every event answered 202 is in PostgreSQL with one job per subscriber;
- no job is left queued or retrying (all delivered);
- terminal states never regress: an audit trigger installed on `jobs` records any update that
  moves a delivered/dead/cancelled job to another status or lowers its attempt count;
- attempts are sane: numbered 1..n without gaps, jobs.attempts = n, a delivered job has exactly
  one 2xx attempt and it is the last, and no attempt started after the job was recorded
  delivered;
- triggers only ever answered 202 or 503 (plus connection errors while the broker is dead);
- Redis drains (job stream, pending list, retry set and live set empty).

Duplicates (2xx receipts beyond the first per pair) and receipts that arrived well after the
job was recorded delivered are counted and reported through the `report` fixture.

Faults: redis-server SIGKILLed and restarted empty, FLUSHALL, a worker SIGKILLed three times,
PostgreSQL immediate restart (under load, and right after a success whose asynchronous commit
it loses), a receiver down (connection refused), the broker SIGKILLed (with
a commit under way), a receiver hanging past DELIVERY_TIMEOUT, a worker SIGSTOPped past
CLAIM_IDLE (with spare capacity elsewhere, and with a backlog), Redis out of memory.
Workers use short retries (8 attempts in ~10 s), DELIVERY_TIMEOUT 2 and CLAIM_IDLE 3; the
reconciler runs with RECONCILE_GRACE 1 and RECONCILE_CONFIRM 0.2, in a loop or --once.
"""

import http.client
import json
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness import (INDEX_READY, JOBS, LIVE, RETRY, Broker, PgServer, Proc, Receiver,
                     RedisError, RedisServer, Worker, binary, event_key, reconciler_env,
                     reconciler_passes, run_reconciler, sql_quote, unique_name, wait_until)

# Short retries (8 attempts within ~10 s), a 2 s delivery timeout, claims after 3 s idle.
WORKER_ENV = {
    "RETRY_SCHEDULE": "0.5,0.5,1,1,2,2,3",
    "DELIVERY_TIMEOUT": "2",
    "DELIVERY_CONNECT_TIMEOUT": "1",
    "CLAIM_IDLE": "3",
    "WORKER_CONCURRENCY": "16",
    "LOG_LEVEL": "info",
}
DELIVERY_TIMEOUT = 2.0
RECONCILE_GRACE = 1.0
RECON_ENV = {"RECONCILE_GRACE": "1", "RECONCILE_CONFIRM": "0.2", "LOG_LEVEL": "info"}
SETTLE_TIMEOUT = 45  # seconds for every job to finish after the fault
SETTLE_POLL = 0.2  # seconds between two looks at the unfinished jobs
TERMINAL = ("delivered", "dead", "cancelled")

# Installed in each test's database once the broker created the schema: records every update
# that takes a finished job out of its terminal state or lowers its attempt count.
AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS fault_audit (
  job_id uuid, old_status text, new_status text, old_attempts int, new_attempts int,
  at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION fault_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (OLD.status IN ('delivered', 'dead', 'cancelled') AND NEW.status IS DISTINCT FROM OLD.status)
     OR NEW.attempts < OLD.attempts
     OR (OLD.status IN ('delivered', 'dead', 'cancelled')
         AND NEW.delivered_at IS DISTINCT FROM OLD.delivered_at) THEN
    INSERT INTO fault_audit (job_id, old_status, new_status, old_attempts, new_attempts)
    VALUES (OLD.id, OLD.status, NEW.status, OLD.attempts, NEW.attempts);
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS fault_audit ON jobs;
CREATE TRIGGER fault_audit AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION fault_audit_fn();
"""


# ---------------------------------------------------------------------------------------------
# Subscribers


class Sink:
    """One subscriber endpoint. behaviour(webhook_id, nth request for that id) -> (status,
    delay). Counts, per webhook-id, every request and the receipts answered 2xx within the
    delivery timeout (the ones that count as received), with their wall-clock times."""

    def __init__(self, name, behaviour=None):
        self.name = name
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.seen = Counter()
        self.ok_times = {}  # webhook-id -> [time.time() of each in-time 2xx receipt]
        self.receivers = []
        self.port = 0
        self.start()

    def start(self):
        r = Receiver(responder=self._respond, name=self.name, port=self.port)
        self.port = r.port
        self.receivers.append(r)
        return self

    def stop(self):
        self.receivers[-1].close()

    def close(self):
        for r in self.receivers:
            r.close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook/{self.name}"

    def _respond(self, index, req):
        wid = req.headers.get("webhook-id")
        with self.lock:
            nth = self.seen[wid]
            self.seen[wid] += 1
        status, delay = self.behaviour(wid, nth) if self.behaviour else (200, 0.0)
        if 200 <= status < 300 and delay < DELIVERY_TIMEOUT * 0.75:
            with self.lock:
                self.ok_times.setdefault(wid, []).append(time.time())
        return status, delay, None

    def requests(self):
        with self.lock:
            return sum(self.seen.values())


# ---------------------------------------------------------------------------------------------
# Load


class Load:
    """Threads that trigger events round-robin over names until `total` were answered 202 (or
    stop()). A 503 or a connection error is retried after a short sleep (a new event each
    time); only 202s are counted. Any other status is recorded as unexpected."""

    def __init__(self, port, names, total, threads=3, pace=0.0):
        self.port = port
        self.names = list(names)
        self.total = total
        self.pace = pace
        self.accepted = {}  # eventId -> (name, jobs in the 202, time.time())
        self.statuses = Counter()
        self.conn_errors = 0
        self.unexpected = []
        self.issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True,
                                          name=f"load-{t}") for t in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(20)

    def count(self):
        with self._lock:
            return len(self.accepted)

    def wait_accepted(self, n, timeout=30):
        wait_until(lambda: self.count() >= n or not any(t.is_alive() for t in self._threads),
                   timeout, f"{n} triggers answered 202 (have {self.count()})")
        assert self.count() >= n, f"load stopped at {self.count()} accepted: {self.summary()}"

    def wait_done(self, timeout=60):
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        self._stop.set()
        assert not alive, f"load still running after {timeout}s: {self.summary()}"

    def accepted_between(self, t0, t1):
        with self._lock:
            return sum(1 for _, _, at in self.accepted.values() if t0 <= at < t1)

    def summary(self):
        return (f"{len(self.accepted)} accepted, statuses {dict(self.statuses)}, "
                f"{self.conn_errors} connection errors, {len(self.unexpected)} unexpected")

    def _run(self, tid):
        conn = None
        while not self._stop.is_set():
            with self._lock:
                if len(self.accepted) >= self.total:
                    break
                i = self.issued
                self.issued += 1
            name = self.names[i % len(self.names)]
            body = json.dumps({"n": i, "thread": tid, "name": name}).encode()
            while not self._stop.is_set():
                with self._lock:
                    if len(self.accepted) >= self.total:
                        break
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.request("POST", f"/api/v0/trigger-event/{name}", body=body,
                                 headers={"Content-Type": "application/json", **harness.AUTH})
                    resp = conn.getresponse()
                    raw = resp.read()
                    status = resp.status
                    if (resp.getheader("Connection") or "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                        conn = None
                    with self._lock:
                        self.conn_errors += 1
                    time.sleep(0.05)  # a client's back-off before retrying, not a wait
                    continue
                with self._lock:
                    self.statuses[status] += 1
                if status == 202:
                    data = json.loads(raw)
                    with self._lock:
                        self.accepted[data["eventId"]] = (name, data["jobs"], time.time())
                    break
                if status == 503:
                    time.sleep(0.02)  # a client's back-off before retrying, not a wait
                    continue
                with self._lock:
                    self.unexpected.append((status, raw[:300]))
                break
            if self.pace:
                time.sleep(self.pace)  # the load's rate, not a wait
            with self._lock:
                if len(self.accepted) >= self.total:
                    break
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------------------------
# One test's servers and processes


class Cluster:
    """Redis, database, broker, workers, receivers and reconciler of one test. Everything it
    starts is stopped by PID in close()."""

    def __init__(self, tmp_path, pg, name, redis_aof=False, own_pg=False, pg_settings=None):
        self.tmp = Path(tmp_path)
        self.own_pg = None
        if own_pg:
            # A server of our own with durable commits: a 202 must survive a PostgreSQL crash,
            # which synchronous_commit=off (the session server) does not promise.
            # pg_settings: more of its settings, {name: value}.
            self.own_pg = PgServer()
            self.own_pg.proc.argv = ["synchronous_commit=on" if a == "synchronous_commit=off"
                                     else a for a in self.own_pg.proc.argv]
            for k, v in (pg_settings or {}).items():
                self.own_pg.proc.argv += ["-c", f"{k}={v}"]
            self.own_pg.start()
            pg = self.own_pg
        self.pg = pg
        self.db = pg.create_database("wh_faults_" + name)
        self.redis = RedisServer(self.tmp / "redis")
        self.redis_data = self.tmp / "redis" / "data"
        self.redis_data.mkdir()
        argv = self.redis.proc.argv
        argv[argv.index("--dir") + 1] = str(self.redis_data)
        if redis_aof:
            argv[argv.index("--appendonly") + 1] = "yes"
            argv += ["--appendfsync", "everysec"]
        self.redis.start()
        self.broker = None
        self.workers = []
        self.recon_loops = []
        self.recon_passes = Counter()
        self.recon_runs = 0
        self.sinks = []
        self.names = {}  # event name -> [Sink]
        self.load = None

    # -- processes

    def start_broker(self, **env):
        env.setdefault("LOG_LEVEL", "debug")
        self.broker = Broker(self.tmp, self.redis, self.db, {k: str(v) for k, v in env.items()})
        self.broker.start()
        self.db.sql(AUDIT_SQL)
        return self.broker

    def start_worker(self, name, **env):
        full = {**WORKER_ENV, **{k: str(v) for k, v in env.items()}}
        w = Worker(self.tmp, self.redis, self.db, full, name=name)
        self.workers.append(w)
        return w.start()

    def start_reconciler_loop(self, **env):
        p = Proc(f"reconciler{len(self.recon_loops) + 1}",
                 [binary("webhook-reconciler"), "--interval", "1"],
                 env=reconciler_env(self.redis, self.db, {**RECON_ENV, **env}),
                 log_dir=self.tmp, sanitized=True)
        self.recon_loops.append(p)
        return p.start()

    def reconcile_once(self, **env):
        """One --once pass; returns its counters (and adds them to recon_passes)."""
        self.recon_runs += 1
        counts, text = run_reconciler(self.redis, self.db, log_path=self.tmp / "reconciler-once.log",
                                      **{**RECON_ENV, **env})
        assert counts, f"no 'pass done' line from the reconciler:\n{text}"
        self.recon_passes.update(counts)
        return counts

    def loop_counts(self):
        """Counters summed over the 'pass done' lines of the --interval reconcilers."""
        total = Counter()
        for p in self.recon_loops:
            for counts in reconciler_passes(p.log_text()):
                total.update(counts)
        return total

    def recon_counts(self):
        total = self.loop_counts()
        total.update(self.recon_passes)
        return {k: total.get(k, 0) for k in harness.RECONCILER_COUNTS if k != "purged"}

    # -- subscribers and load

    def subscribe(self, name, sinks):
        for s in sinks:
            if s not in self.sinks:
                self.sinks.append(s)
            self.broker.api.register(name, s.url)
        self.names[name] = list(sinks)

    def start_load(self, total, threads=3, pace=0.0):
        self.load = Load(self.broker.port, self.names, total, threads, pace).start()
        return self.load

    # -- state

    def rc(self):
        return self.redis.client()

    def unfinished(self):
        return self.db.count("jobs", "status IN ('queued', 'retrying')")

    def statuses(self):
        return dict(self.db.sql("SELECT status, count(*) FROM jobs GROUP BY 1 ORDER BY 1"))

    def redis_state(self):
        with self.rc() as c:
            live = c.call("SCARD", LIVE)
            retry = c.call("ZCARD", RETRY)
            return {"xlen": c.xlen(), "pending": c.pending(), "retry": retry, "live": live}

    def pending_by_consumer(self):
        """{consumer: pending entries}, or the error's repr while Redis is unreachable."""
        try:
            with self.rc() as c:
                return c.pending_by_consumer()
        except (OSError, RedisError) as e:
            return repr(e)

    def broker_sees(self, dependency, state):
        """Waits until the broker's /readyz reports dependency ("redis", "postgres") as state
        ("up", "down"): it noticed the fault (or the recovery)."""
        def seen():
            try:
                return self.broker.api.get("/readyz", timeout=5)[2].get(dependency) == state
            except (OSError, AttributeError):
                return False

        wait_until(seen, 15, f"the broker's /readyz to report {dependency} {state}")

    def settle(self, timeout=SETTLE_TIMEOUT, reconcile_once=False):
        """Waits until PostgreSQL has no queued/retrying job. With reconcile_once, runs
        `webhook-reconciler --once` about every second meanwhile (the loop runs by itself)."""
        deadline = time.monotonic() + timeout
        next_pass = 0.0
        while True:
            left = self.unfinished()
            if left == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{left} jobs still unfinished {timeout}s after the fault; jobs by status: "
                    f"{self.statuses()}; Redis: {self.redis_state()}; pending by consumer: "
                    f"{self.pending_by_consumer()}; reconciler: {self.recon_counts()}")
            if reconcile_once and time.monotonic() >= next_pass:
                self.reconcile_once()
                next_pass = time.monotonic() + 1.0
            time.sleep(SETTLE_POLL)

    def wait_past_grace(self):
        """Waits until every unfinished job that Redis does not hold (not in the live set) was
        last changed more than RECONCILE_GRACE ago: the next reconciler pass may requeue each
        of them. Returns their ids."""
        last = []

        def past_grace():
            with self.rc() as c:
                live = c.smembers(LIVE)
            ages = {j: float(age) for j, age in self.db.sql(
                "SELECT id, extract(epoch FROM clock_timestamp() - updated_at) FROM jobs "
                "WHERE status IN ('queued', 'retrying')") if j not in live}
            last[:] = list(ages)
            return all(age > RECONCILE_GRACE + 0.05 for age in ages.values())

        wait_until(past_grace, 15, "the jobs missing from Redis to be older than RECONCILE_GRACE")
        return last

    # -- teardown

    def close(self):
        errors = []
        if self.load is not None:
            self.load.stop()
        procs = list(self.recon_loops) + list(self.workers)
        if self.broker is not None:
            procs.append(self.broker)
        for p in procs:
            try:
                if p.alive():
                    p.send(signal.SIGCONT)
                    p.stop()
                elif p.popen is not None:
                    p.kill()  # reaps and scans the log
            except AssertionError as e:
                errors.append(str(e))
        for s in self.sinks:
            s.close()
        self.redis.stop()
        if self.own_pg is not None:
            self.own_pg.stop()
            self.own_pg.cleanup()
        assert not errors, "\n".join(errors)


@pytest.fixture
def cluster(binaries, need_binaries, pg, tmp_path, request):
    """Factory: cluster(redis_aof=False, own_pg=False, pg_settings=None) -> a Cluster whose
    processes are all stopped by PID at the end of the test."""
    need_binaries("webhook-worker", "webhook-reconciler")
    made = []
    test = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[-40:]

    def make(**kw):
        c = Cluster(tmp_path, pg, test, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# ---------------------------------------------------------------------------------------------
# The invariants


def verify(cl, report, label, expect_dead=False, extra=""):
    """Settled cluster: measures every invariant of the module docstring, reports the counts
    (duplicates included), then asserts."""
    load = cl.load
    db = cl.db
    sinks_by_url = {s.url: s for s in cl.sinks}

    # Redis drains once everything is finished. Waited for first: a stale retry member or
    # pending entry would still be sent and recorded, and the checks below must see that.
    last = {}

    def drained():
        last.update(cl.redis_state())
        return not any(last.values())

    try:
        wait_until(drained, 15, "Redis to drain", 0.2)
        redis_left = None
    except AssertionError:
        redis_left = dict(last)

    # PostgreSQL: events and jobs
    rows = db.sql("SELECT e.id, e.event_name, j.url, j.status FROM events e "
                  "LEFT JOIN jobs j ON j.event_id = e.id")
    jobs_of = {}
    for eid, name, url, status in rows:
        jobs_of.setdefault(eid, [name, {}])
        if url is not None:
            jobs_of[eid][1][url] = status
    missing_events = [e for e in load.accepted if e not in jobs_of]
    wrong_jobs = []
    for eid, (name, k, _) in load.accepted.items():
        want = {s.url for s in cl.names[name]}
        if eid in jobs_of and (k != len(want) or set(jobs_of[eid][1]) != want):
            wrong_jobs.append((eid, k, sorted(jobs_of[eid][1])))
    orphans = [e for e in jobs_of if e not in load.accepted]
    by_status = Counter(st for _, urls in jobs_of.values() for st in urls.values())
    allowed = {"delivered", "dead"} if expect_dead else {"delivered"}

    # Receivers: every pair PostgreSQL has a job for (202'd or not) received at least once
    not_received = []
    duplicates = 0
    late = 0
    delivered_at = dict(db.sql("SELECT event_id::text || ' ' || url, "
                               "extract(epoch FROM delivered_at)::text FROM jobs "
                               "WHERE status = 'delivered'"))
    for eid, (name, urls) in jobs_of.items():
        for url, status in urls.items():
            times = sinks_by_url[url].ok_times.get(eid, [])
            if status == "delivered" and not times:
                not_received.append((eid, url, eid in load.accepted))
            duplicates += max(0, len(times) - 1)
            d = delivered_at.get(f"{eid} {url}")
            if d is not None:
                late += sum(1 for t in times if t > float(d) + 0.5)
    requests = sum(s.requests() for s in cl.sinks)

    # Terminal states never regressed; attempts numbering sane
    regressions = db.sql("SELECT job_id, old_status, new_status, old_attempts, new_attempts, at "
                         "FROM fault_audit ORDER BY at LIMIT 20")
    gaps = db.sql("SELECT job_id, array_agg(attempt ORDER BY attempt)::text FROM attempts "
                  "GROUP BY job_id HAVING min(attempt) <> 1 OR max(attempt) <> count(*)")
    mismatch = db.sql("SELECT j.id, j.status, j.attempts, a.m FROM jobs j LEFT JOIN "
                      "(SELECT job_id, max(attempt) AS m FROM attempts GROUP BY 1) a "
                      "ON a.job_id = j.id WHERE coalesce(a.m, 0) <> j.attempts")
    bad_success = db.sql(
        "SELECT j.id, array_agg(a.attempt || ':' || coalesce(a.status_code::text, '-') "
        "ORDER BY a.attempt)::text FROM jobs j JOIN attempts a ON a.job_id = j.id "
        "WHERE j.status = 'delivered' GROUP BY j.id "
        "HAVING count(*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) <> 1 "
        "OR max(a.attempt) FILTER (WHERE a.status_code BETWEEN 200 AND 299) <> max(a.attempt)")
    sent_after = db.sql(
        "SELECT j.id, a.attempt, a.status_code, a.started_at::text, j.delivered_at::text "
        "FROM jobs j JOIN attempts a ON a.job_id = j.id "
        "WHERE j.status = 'delivered' AND a.started_at > j.delivered_at")
    no_date = db.count("jobs", "status = 'delivered' AND delivered_at IS NULL")

    recon = cl.recon_counts()
    violations = {k: len(v) for k, v in (
        ("regressions", regressions), ("attempt gaps", gaps), ("attempts mismatch", mismatch),
        ("success not last", bad_success), ("sent after delivered", sent_after)) if v}
    report(f"{label}: {len(load.accepted)} events 202 ({load.summary()}), "
           f"{sum(len(u) for _, u in jobs_of.values())} jobs {dict(by_status)}, "
           f"{len(orphans)} events committed without a 202; {requests} requests, "
           f"{duplicates} duplicates, {late} receipts >0.5 s after delivered_at; "
           f"reconciler {recon}{'; ' + extra if extra else ''}"
           f"{'; VIOLATIONS ' + str(violations) if violations else ''}")

    assert not load.unexpected, f"triggers answered neither 202 nor 503: {load.unexpected[:5]}"
    assert not missing_events, \
        f"{len(missing_events)} events answered 202 are not in PostgreSQL: {missing_events[:5]}"
    assert not wrong_jobs, f"events whose jobs differ from their subscribers: {wrong_jobs[:5]}"
    assert set(by_status) <= allowed, f"jobs by status: {dict(by_status)} (allowed: {allowed})"
    assert not not_received, (f"{len(not_received)} (event, subscriber, answered 202) pairs "
                              f"recorded delivered were never received: {not_received[:5]}")
    assert not regressions, f"terminal states regressed (job, old, new, ...): {regressions}"
    assert not gaps, f"attempt numbers with gaps: {gaps[:10]}"
    assert not sent_after, (f"{len(sent_after)} attempts started after their job was recorded "
                            f"delivered (job, attempt, code, started_at, delivered_at): "
                            f"{sent_after[:3]}; first: {job_story(db, sent_after[0][0])}")
    assert not bad_success, (f"{len(bad_success)} delivered jobs whose successful attempt is not "
                             f"the single last one (attempt:status): {bad_success[:5]}; first: "
                             f"{job_story(db, bad_success[0][0])}")
    assert not mismatch, (f"{len(mismatch)} jobs whose attempts column differs from their "
                          f"attempt rows (id, status, attempts, max attempt row): {mismatch[:5]}; "
                          f"first: {job_story(db, mismatch[0][0])}")
    assert no_date == 0, f"{no_date} delivered jobs without delivered_at"
    assert redis_left is None, f"Redis did not drain after every job finished: {redis_left}"
    return {"duplicates": duplicates, "orphans": orphans, "late": late, "recon": recon}


def all_logs(proc):
    """The logs of every start of a process (name.log, name-2.log, ...)."""
    return "".join(p.read_text(errors="replace") for p in sorted(
        proc.log_dir.glob(f"{proc.name}*.log")) if re.fullmatch(
            re.escape(proc.name) + r"(-\d+)?\.log", p.name))


def consumer_name(worker):
    """The Redis consumer name the worker's current run logged when it became ready."""
    m = re.search(r"worker ready: consumer (\S+),", worker.log_text())
    assert m, f"{worker.name} logged no consumer name\n{worker.log_tail()}"
    return m.group(1)


def tcp_connections(pid):
    """{(local port, remote port)} of the TCP sockets process pid has open (/proc/<pid>/fd and
    /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    conns = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes:
                conns.add((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)))
    return conns


def redis_clients_of(cl, proc):
    """The CLIENT LIST entries (dicts) of proc's connections to the cluster's Redis, found by
    the local ports of the process's sockets."""
    ports = {local for local, remote in tcp_connections(proc.pid) if remote == cl.redis.port}
    with cl.rc() as c:
        listing = c.call("CLIENT", "LIST").decode()
    clients = []
    for line in listing.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if int(fields.get("addr", ":0").rsplit(":", 1)[1]) in ports:
            clients.append(fields)
    return clients


def blocked_in_redis(cl, proc):
    """Whether one of proc's Redis connections is blocked in a command (flag b)."""
    clients = redis_clients_of(cl, proc)
    assert clients, f"no Redis connection of {proc.name} (pid {proc.pid}) found"
    return any("b" in c.get("flags", "") for c in clients)


def job_story(db, job_id):
    """A job's row and its attempts, for failure messages."""
    job = db.sql(f"SELECT status, attempts, delivered_at::text, updated_at::text FROM jobs "
                 f"WHERE id = {sql_quote(job_id)}")
    atts = db.sql(f"SELECT attempt, status_code, started_at::text, duration_ms, error FROM "
                  f"attempts WHERE job_id = {sql_quote(job_id)} ORDER BY attempt")
    return f"job {job_id} (status, attempts, delivered_at, updated_at) {job}; attempts " \
           f"(n, code, started_at, ms, error) {atts}"


def sinks(n, prefix="s", behaviour=None):
    return [Sink(f"{prefix}{i}", behaviour) for i in range(n)]


def slow(delay):
    return lambda wid, nth: (200, delay)


def start_under_load(cl, prefix):
    """The set-up of the Redis and PostgreSQL faults: the broker, three subscribers answering
    in 10 ms, two workers of concurrency 8 and a reconciler loop, then a load of 900 events
    and 300 of them answered 202. Returns (event name, load)."""
    cl.start_broker()
    name = unique_name(prefix)
    cl.subscribe(name, sinks(3, behaviour=slow(0.01)))
    for i in range(2):
        cl.start_worker(f"worker{i + 1}", WORKER_CONCURRENCY=8)
    cl.start_reconciler_loop()
    load = cl.start_load(900, threads=3)
    load.wait_accepted(300)
    return name, load


# ---------------------------------------------------------------------------------------------
# 1. redis-server SIGKILLed and restarted on the same port with its data removed


def test_redis_killed_and_wiped(cluster, report):
    cl = cluster(redis_aof=True)
    name, load = start_under_load(cl, "wipe")

    before = cl.redis_state()
    assert any((cl.redis_data / "appendonlydir").iterdir()), "no append-only file was written"
    t_fault = time.time()
    cl.redis.kill()
    for entry in cl.redis_data.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    cl.broker_sees("redis", "down")
    cl.redis.start()
    t_back = time.time()
    with cl.rc() as c:
        keys_after_restart = c.call("DBSIZE")
    load.wait_done(60)
    cl.settle()

    with cl.rc() as c:
        index = c.hgetall(event_key(name))
        ready = c.call("EXISTS", INDEX_READY)
    assert {u for u in index} == {s.url for s in cl.names[name]}, \
        f"event index after the wipe: {index}"
    assert ready == 1, "wh:index-ready was not set again"
    rebuilt = cl.broker.log_text().count("event index rebuilt")
    assert keys_after_restart <= 1, f"Redis restarted with {keys_after_restart} keys: not wiped"
    res = verify(cl, report, "redis SIGKILL + wipe", extra=(
        f"Redis before the kill {before}; 202s between the kill and the restart (commits "
        f"already under way): "
        f"{load.accepted_between(t_fault, t_back)}; broker index rebuilds: {rebuilt}"))
    assert before["live"] > 0, f"nothing was live in Redis at the kill: {before}"
    assert load.accepted_between(t_back, time.time()) > 0, "no trigger accepted after the restart"
    assert res["recon"]["requeued"] + res["recon"]["rescheduled"] > 0, \
        "the reconciler requeued nothing although Redis lost live jobs"


# ---------------------------------------------------------------------------------------------
# 2. FLUSHALL mid-load


def test_flushall_mid_load(cluster, report):
    cl = cluster()
    name, load = start_under_load(cl, "flush")

    before = cl.redis_state()
    with cl.rc() as c:
        assert c.call("FLUSHALL") == "OK"
    t_fault = time.time()
    load.wait_done(60)
    cl.settle()
    with cl.rc() as c:
        index = c.hgetall(event_key(name))
        ready = c.call("EXISTS", INDEX_READY)
    assert set(index) == {s.url for s in cl.names[name]}, f"event index after FLUSHALL: {index}"
    assert ready == 1, "wh:index-ready was not set again"
    res = verify(cl, report, "FLUSHALL", extra=f"Redis before FLUSHALL {before}; 202s after it: "
                                               f"{load.accepted_between(t_fault, time.time())}")
    assert before["live"] > 0, "nothing was live in Redis at the FLUSHALL"
    assert res["recon"]["requeued"] + res["recon"]["rescheduled"] > 0, \
        "the reconciler requeued nothing although FLUSHALL dropped live jobs"


# ---------------------------------------------------------------------------------------------
# 3. A worker SIGKILLed three times during the load, restarted each time


def holding(cl, consumer):
    """The pending entries by consumer once consumer holds some, else None."""
    pending = cl.pending_by_consumer()
    return pending if isinstance(pending, dict) and pending.get(consumer) else None


def test_worker_killed_three_times(cluster, report):
    cl = cluster()
    cl.start_broker()
    name = unique_name("wkill")
    cl.subscribe(name, sinks(3, behaviour=slow(0.05)))
    victim = cl.start_worker("victim")
    cl.start_worker("survivor")
    load = cl.start_load(900, threads=3)
    kills = []
    for k in range(3):
        load.wait_accepted(200 * (k + 1))
        me = consumer_name(victim)
        kills.append(wait_until(lambda: holding(cl, me), 15, f"the (re)started {me} to hold jobs"))
        victim.kill()
        victim.start()
    load.wait_done(60)
    cl.settle()
    claims = sum(len(re.findall(r"claimed \d+ job", all_logs(w))) for w in cl.workers)
    res = verify(cl, report, "worker SIGKILL x3", extra=(
        f"pending by consumer at each kill: {kills}; claim log lines: {claims}"))
    assert any(sum(v.values()) for v in kills if isinstance(v, dict)), \
        "the killed worker never had pending jobs"
    # bound: the transfers the dead worker had in flight (at most its concurrency) per kill
    bound = 3 * int(WORKER_ENV["WORKER_CONCURRENCY"])
    assert res["duplicates"] <= bound, f"{res['duplicates']} duplicates, bound {bound}"


# ---------------------------------------------------------------------------------------------
# 4. PostgreSQL restarted mid-load (immediate shutdown, then started on the same port)


def test_pg_restart(cluster, report):
    cl = cluster(own_pg=True)
    _, load = start_under_load(cl, "pgrestart")

    server = cl.own_pg
    t_fault = time.time()
    server.proc.send(signal.SIGQUIT)  # = pg_ctl restart -m immediate: no shutdown checkpoint
    assert server.proc.wait(30) is not None, "postgres ignored SIGQUIT"
    cl.broker_sees("postgres", "down")
    server.proc.start()
    wait_until(server.accepting, 60, "postgres to accept connections again", 0.1)
    t_back = time.time()
    load.wait_done(60)
    cl.settle()
    verify(cl, report, "PostgreSQL immediate restart", extra=(
        f"202s between the kill and the restart (commits already under way): "
        f"{load.accepted_between(t_fault, t_back)}"))
    assert load.accepted_between(t_back, time.time()) > 0, "no trigger accepted after the restart"


# ---------------------------------------------------------------------------------------------
# 4b. PostgreSQL crashes right after successes were recorded (decision 56)


def test_pg_crash_loses_recent_successes_not_deliveries(cluster, report):
    """Successes are committed without waiting for the disk: a PostgreSQL crash may lose the
    last ones. Their jobs are then queued in PostgreSQL while Redis has already forgotten them,
    and the reconciler sends them again: a duplicate, never a loss. To make the crash lose one
    for certain, the WAL writer runs every 10 s and the server is killed (-m immediate) only
    while the WAL is written to a lower position than it was inserted to, with nothing written
    since the success: the success's commit record is then still in PostgreSQL's memory. Up to
    eight rounds of one event each, until one success is lost."""
    cl = cluster(own_pg=True, pg_settings={"wal_writer_delay": "10s"})
    server = cl.own_pg
    cl.start_broker()
    name = unique_name("pgcrash")
    sink = Sink("crash", slow(0.3))  # the 202's commit is long done when the outcome comes
    cl.subscribe(name, [sink])
    cl.start_worker("worker1")
    cl.start_reconciler_loop()
    db = cl.db
    triggered, lost, rounds = [], [], 0
    while not lost and rounds < 8:
        rounds += 1
        eid = cl.broker.api.trigger(name, {"round": rounds})["eventId"]
        triggered.append(eid)
        wait_until(lambda: db.sql(f"SELECT status FROM jobs WHERE event_id = {sql_quote(eid)}")
                   == [("delivered",)], 15, f"round {rounds}'s job to be recorded delivered")
        wait_until(lambda: cl.redis_state()["live"] == 0, 5, "the worker to finish in Redis")
        [(unwritten,)] = db.sql("SELECT pg_current_wal_insert_lsn() > pg_current_wal_lsn()")
        if unwritten != "t":
            continue  # the WAL writer ran after the success: a crash would lose nothing
        server.proc.send(signal.SIGQUIT)
        assert server.proc.wait(30) is not None, "postgres ignored SIGQUIT"
        cl.broker_sees("postgres", "down")
        server.proc.start()
        wait_until(server.accepting, 60, "postgres to accept connections again", 0.1)
        cl.broker_sees("postgres", "up")
        [(status, attempts)] = db.sql(
            f"SELECT status, attempts FROM jobs WHERE event_id = {sql_quote(eid)}")
        if status != "delivered":
            # the crash took the success back: the job is as it was before its attempt
            assert (status, attempts) == ("queued", "0"), (status, attempts)
            lost.append(eid)
    cl.settle()
    requeued = cl.recon_counts()["requeued"]
    received = {e: len(sink.ok_times.get(e, [])) for e in triggered}
    rows = db.sql("SELECT j.event_id, j.status, j.attempts, count(a.attempt), "
                  "count(a.attempt) FILTER (WHERE a.status_code BETWEEN 200 AND 299) "
                  "FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id GROUP BY 1, 2, 3")
    report(f"PostgreSQL crash after successes: {rounds} rounds, {len(lost)} success lost "
           f"({lost}), receipts per event {received}, reconciler requeued {requeued}; "
           f"jobs (event, status, attempts, attempt rows, 2xx rows) {rows}")
    assert lost, (f"no round lost its success ({rounds} rounds): the WAL writer always wrote "
                  "the WAL before the crash, so this test proved nothing")
    assert requeued >= len(lost), f"the reconciler requeued {requeued} jobs, {len(lost)} lost"
    assert {r[0] for r in rows} == set(triggered), rows
    for eid, status, attempts, n_rows, n_ok in rows:
        # delivered once more after the loss; the attempt lost with the crash was made again
        # under the same number, so the rows are 1..n without a gap and one success
        assert (status, attempts, n_rows, n_ok) == ("delivered", "1", "1", "1"), \
            (eid, status, attempts, n_rows, n_ok)
        want = 2 if eid in lost else 1
        assert received[eid] == want, f"event {eid}: {received[eid]} receipts, expected {want}"


# ---------------------------------------------------------------------------------------------
# 5. A receiver down for a while (connection refused), then back on the same port


def test_receiver_down_then_back(cluster, report):
    cl = cluster()
    cl.start_broker()
    name = unique_name("rdown")
    ss = sinks(3)
    cl.subscribe(name, ss)
    # This test is about retries running into a refused connection and recovering: the circuit
    # breaker, which would hold the jobs back after BREAKER_FAILURES, is kept out of it here
    # (test_breaker.py covers it).
    for i in range(2):
        cl.start_worker(f"worker{i + 1}", BREAKER_FAILURES=100000)
    load = cl.start_load(600, threads=2, pace=0.01)
    load.wait_accepted(150)
    flaky = ss[0]
    port = flaky.port
    flaky.stop()
    t_down = time.time()
    # Down until one job has been refused four times (its first three retries failed too).
    wait_until(lambda: int(cl.db.scalar(
        f"SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM attempts a JOIN jobs j ON "
        f"j.id = a.job_id WHERE j.url = {sql_quote(flaky.url)} AND a.status_code IS NULL "
        f"GROUP BY a.job_id) f")) >= 4, 15, "a job refused four times by the downed receiver",
        0.1)
    t_up = time.time()
    flaky.start()
    assert flaky.port == port
    load.wait_done(60)
    cl.settle()
    refused = cl.db.count("attempts a JOIN jobs j ON j.id = a.job_id",
                          f"j.url = {sql_quote(flaky.url)} AND a.status_code IS NULL")
    errors = cl.db.sql(f"SELECT a.error, count(*) FROM attempts a JOIN jobs j ON "
                       f"j.id = a.job_id WHERE j.url = {sql_quote(flaky.url)} AND "
                       f"a.status_code IS NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
    max_att = cl.db.scalar(f"SELECT max(attempts) FROM jobs WHERE url = {sql_quote(flaky.url)}")
    verify(cl, report, f"receiver down {t_up - t_down:.1f} s", extra=(
        f"{refused} failed attempts on the downed receiver ({errors}), most attempts of a "
        f"job: {max_att}; 202s while it was down: {load.accepted_between(t_down, t_up)}"))
    assert refused > 0, "no attempt failed while the receiver was down"


# ---------------------------------------------------------------------------------------------
# 6. The broker SIGKILLed under load, restarted; the reconciler enqueues stranded jobs


def test_broker_killed(cluster, report):
    cl = cluster()
    broker = cl.start_broker()
    name = unique_name("bkill")
    cl.subscribe(name, sinks(3))
    # Every group commit takes 30 ms more: one is almost surely under way at each kill, and
    # the server completes it (the client is gone: no 202, no enqueue). A kill can also land
    # after the enqueue reached Redis but before the 202 reached the client: that event has
    # no 202, yet its jobs are queued and nothing is stranded.
    cl.db.sql("CREATE FUNCTION fault_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN PERFORM pg_sleep(0.03); RETURN NULL; END $$; "
              "CREATE TRIGGER fault_slow_commit AFTER INSERT ON jobs FOR EACH STATEMENT "
              "EXECUTE FUNCTION fault_slow_commit()")
    for i in range(2):
        cl.start_worker(f"worker{i + 1}")
    load = cl.start_load(900, threads=6)
    for k in range(3):
        load.wait_accepted(220 * (k + 1))
        errors = load.conn_errors
        broker.kill()
        wait_until(lambda: load.conn_errors > errors, 15, "a client to find the broker gone")
        broker.start()
    load.wait_done(60)
    cl.wait_past_grace()
    # Stranded: unfinished jobs of events without a 202 that Redis does not have.
    with cl.rc() as c:
        live = c.smembers(LIVE)
    stranded = [j for j, e in cl.db.sql("SELECT id, event_id FROM jobs WHERE status IN "
                                        "('queued', 'retrying')")
                if e not in load.accepted and j not in live]
    first = cl.reconcile_once()
    cl.settle(reconcile_once=True)
    res = verify(cl, report, "broker SIGKILL x3", extra=f"first --once pass after the "
                                                        f"restarts: {first}; stranded before "
                                                        f"it: {len(stranded)}")
    assert res["orphans"], "no event was committed without its 202: the kills missed commits"
    assert stranded, "no job was stranded by the kills (committed, not enqueued)"
    assert first["requeued"] >= len(stranded), \
        f"{len(stranded)} jobs of events committed without a 202 were missing from Redis, " \
        f"but the first reconciler pass requeued only {first['requeued']}"


# ---------------------------------------------------------------------------------------------
# 7. A receiver that hangs longer than DELIVERY_TIMEOUT on its first request for some events


def test_receiver_hangs_past_timeout(cluster, report):
    cl = cluster()
    cl.start_broker()
    name = unique_name("hang")
    hung = set()
    lock = threading.Lock()

    def hang_some(wid, nth):
        # The first request of one event in 15 hangs 3 s (> DELIVERY_TIMEOUT); retries are fast.
        with lock:
            if nth == 0 and int(wid.replace("-", ""), 16) % 15 == 0:
                hung.add(wid)
                return 200, 3.0
        return 200, 0.0

    hanger = Sink("hang", hang_some)
    cl.subscribe(name, [hanger] + sinks(2))
    for i in range(2):
        cl.start_worker(f"worker{i + 1}")
    load = cl.start_load(600, threads=3)
    load.wait_done(60)
    cl.settle()
    assert hung, "no request hung"
    rows = cl.db.sql(
        f"SELECT j.event_id, j.status, a.attempt, a.status_code, a.duration_ms, a.error "
        f"FROM jobs j JOIN attempts a ON a.job_id = j.id WHERE j.url = {sql_quote(hanger.url)} "
        f"AND j.event_id = ANY(ARRAY[{','.join(sql_quote(h) for h in hung)}]::uuid[]) "
        f"ORDER BY 1, 3")
    by_event = {}
    for eid, status, att, code, dur, err in rows:
        by_event.setdefault(eid, (status, []))[1].append((int(att), code, int(dur), err))
    bad = []
    for eid in hung:
        status, atts = by_event.get(eid, (None, []))
        timed_out = [a for a in atts if a[1] is None and "timeout" in (a[3] or "").lower()
                     and a[2] >= DELIVERY_TIMEOUT * 1000 * 0.9]
        if status != "delivered" or not timed_out or atts[-1][1] != "200" or \
                timed_out[0][0] >= atts[-1][0]:
            bad.append((eid, status, atts))
    assert not bad, f"hung requests not recorded as timed-out attempts then retried: {bad[:5]}"
    connect_timeouts = cl.db.count("attempts", f"error ILIKE '%timeout%' AND duration_ms < "
                                               f"{int(DELIVERY_TIMEOUT * 900)}")
    example = next(a for a in by_event[next(iter(hung))][1] if a[1] is None)
    verify(cl, report, "receiver hangs 3 s", extra=(
        f"{len(hung)} first requests hung, e.g. attempt {example}; timeouts shorter than "
        f"DELIVERY_TIMEOUT (connect): {connect_timeouts}"))


# ---------------------------------------------------------------------------------------------
# 8. A worker frozen (SIGSTOP) longer than CLAIM_IDLE with jobs in flight, then SIGCONT


def held_jobs(cl, consumer):
    """Job ids of the entries pending on a consumer (XPENDING, then the entries' messages)."""
    with cl.rc() as c:
        pend = c.call("XPENDING", JOBS, "workers", "-", "+", "1000", consumer)
        ids = []
        for entry_id, _, _, _ in pend:
            for _, fields in c.call("XRANGE", JOBS, entry_id, entry_id):
                d = dict(zip(fields[::2], fields[1::2]))
                ids.append(json.loads(d[b"d"])["j"])
    return ids


def job_statuses(cl, job_ids):
    if not job_ids:
        return {}
    return dict(cl.db.sql(f"SELECT status, count(*) FROM jobs WHERE id = ANY(ARRAY["
                          f"{','.join(sql_quote(j) for j in job_ids)}]::uuid[]) GROUP BY 1"))


# What the worker logs (at debug level) when a transfer ends without a 2xx.
TRANSFER_END_RE = r"attempt \d+ to \S+ failed"


class FreezeGate:
    """Receiver behaviour: 200 after 0.5 s, except for requests still unanswered when the freeze
    begins: those are held until release() (once the resumed worker has logged the end of its
    transfers), then answered 503. So the frozen worker's in-flight transfers cannot complete
    and time out when it resumes (one of the two natural outcomes of a long pause; the other,
    reading the late 200, hides nothing)."""

    def __init__(self):
        self.frozen_at = None
        self.released = threading.Event()
        self.held = 0
        self.held_ids = set()  # webhook-ids of the held requests
        self.held_frozen = 0  # of them, requests of the frozen worker

    def freeze(self):
        self.frozen_at = time.monotonic()

    def release(self):
        self.released.set()

    def behaviour(self, wid, nth):
        arrived = time.monotonic()
        time.sleep(0.5)  # the receiver's response time, not a wait
        if self.frozen_at is not None and arrived < self.frozen_at:
            self.held += 1
            self.held_ids.add(wid)
            self.released.wait(20)
            return 503, 0.0
        return 200, 0.0


def freeze_and_resume(cl, frozen, other, freeze_s, gate=None):
    """SIGSTOPs frozen until the other worker has delivered every job it held (at most freeze_s
    seconds). Returns (job ids it held, their statuses just before SIGCONT, claim log lines of
    the other worker meanwhile, backlog samples while frozen, seconds frozen)."""
    t_stop = time.monotonic()
    frozen.send(signal.SIGSTOP)
    if gate is not None:
        gate.freeze()
    frozen_ports = {local for local, _ in tcp_connections(frozen.pid)}
    try:
        # A blocking XREADGROUP the frozen worker sent before the stop may still be served (or
        # time out after its BLOCK): wait until none of its connections is blocked any more.
        wait_until(lambda: not blocked_in_redis(cl, frozen), 5,
                   "the frozen worker's blocked read to end", 0.02)
        held = held_jobs(cl, "frozen")
        claims_before = len(re.findall(r"claimed \d+ job", other.log_text()))
        backlog = []
        deadline = time.monotonic() + freeze_s
        while True:
            st = cl.redis_state()
            backlog.append(st["xlen"] - st["pending"])  # entries nobody has read yet
            before_resume = job_statuses(cl, held)
            if (held and before_resume == {"delivered": str(len(held))}) or \
                    time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # sampling interval of the backlog
        claims = len(re.findall(r"claimed \d+ job", other.log_text())) - claims_before
    finally:
        ended = len(re.findall(TRANSFER_END_RE, frozen.log_text()))
        frozen_s = time.monotonic() - t_stop
        frozen.send(signal.SIGCONT)
        if gate is not None:
            try:
                # Released once the resumed worker has ended its held transfers (timed out),
                # when it has any: requests held by the gate that came from its sockets.
                held_reqs = [r for sink in cl.sinks for r in sink.receivers[-1].requests
                             if r.headers.get("webhook-id") in gate.held_ids
                             and r.mono < gate.frozen_at and r.client[1] in frozen_ports]
                gate.held_frozen = len(held_reqs)
                if held_reqs:
                    wait_until(lambda: len(re.findall(TRANSFER_END_RE, frozen.log_text())) > ended,
                               5, f"the resumed worker to end its {len(held_reqs)} held transfers")
            finally:
                gate.release()
    return held, before_resume, claims, backlog, frozen_s


def test_worker_frozen_then_resumed(cluster, report):
    """The other worker has spare capacity (64 slots for ~50 jobs/s of 0.5 s each), so it
    claims the frozen worker's entries and delivers them; the frozen one then resumes, its
    transfers time out (FreezeGate), and it must neither regress those jobs nor have them sent
    again."""
    cl = cluster()
    cl.start_broker()
    name = unique_name("frozen")
    gate = FreezeGate()
    cl.subscribe(name, sinks(2, behaviour=gate.behaviour))
    frozen = cl.start_worker("frozen", WORKER_NAME="frozen", LOG_LEVEL="debug")
    other = cl.start_worker("other", WORKER_NAME="other", WORKER_CONCURRENCY=64,
                            LOG_LEVEL="debug")
    load = cl.start_load(300, threads=2, pace=0.08)  # ~25 events/s: ~25 of the 64 slots busy
    load.wait_accepted(80)
    # at most 6 s: entries idle 3 s are claimed at the next claim tick (1 s) and take 0.5 s to
    # deliver; the freeze ends once the other worker delivered all of them
    held, before_resume, claims, backlog, frozen_s = freeze_and_resume(cl, frozen, other, 6.0,
                                                                       gate)
    load.wait_done(60)
    cl.settle()
    frozen.stop()  # a drained exit: the resumed worker's stale outcomes have all played out
    after = job_statuses(cl, held)
    verify(cl, report, f"worker SIGSTOP {frozen_s:.1f} s (spare capacity)", extra=(
        f"frozen worker held {len(held)} jobs; their statuses before SIGCONT {before_resume}, "
        f"at the end {after}; claim log lines of the other worker during the freeze: {claims}; "
        f"responses held until after SIGCONT: {gate.held} ({gate.held_frozen} of the frozen "
        f"worker)"))
    assert gate.held > 0, "no request was in flight at the freeze"
    assert held, "the frozen worker held no jobs"
    assert before_resume == {"delivered": str(len(held))}, \
        f"the frozen worker's jobs were not all delivered by the other worker during the " \
        f"freeze: {before_resume}"
    assert after == {"delivered": str(len(held))}, after


def test_frozen_worker_jobs_claimed_under_backlog(cluster, report):
    """As above, but the load keeps a backlog on the stream during the freeze (the other worker
    is saturated). Entries idle for more than CLAIM_IDLE must still be taken over: the README
    promises it, and with a permanent backlog they would otherwise wait indefinitely."""
    cl = cluster()
    cl.start_broker()
    name = unique_name("backlog")
    cl.subscribe(name, sinks(2, behaviour=slow(0.25)))
    frozen = cl.start_worker("frozen", WORKER_NAME="frozen")
    other = cl.start_worker("other", WORKER_NAME="other")
    load = cl.start_load(500, threads=3)
    load.wait_accepted(150)
    freeze_s = float(WORKER_ENV["CLAIM_IDLE"]) + 4.0
    held, before_resume, claims, backlog, frozen_s = freeze_and_resume(cl, frozen, other,
                                                                       freeze_s)
    load.wait_done(60)
    cl.settle()
    frozen.stop()  # a drained exit: the resumed worker's stale outcomes have all played out
    verify(cl, report, f"worker SIGSTOP {frozen_s:.1f} s (backlog)", extra=(
        f"frozen worker held {len(held)} jobs; their statuses after {frozen_s:.1f} s frozen: "
        f"{before_resume}; claim log lines of the other worker meanwhile: {claims}; unread "
        f"stream entries sampled during the freeze: {backlog}"))
    assert held, "the frozen worker held no jobs"
    assert min(backlog) > 0, f"no backlog during the whole freeze: {backlog}"
    assert before_resume.get("delivered") == str(len(held)), (
        f"{len(held)} jobs pending on a worker frozen for {freeze_s:.0f} s (CLAIM_IDLE "
        f"{WORKER_ENV['CLAIM_IDLE']} s) were not taken over while the stream had a backlog: "
        f"statuses {before_resume}, claim log lines of the other worker: {claims}")


# ---------------------------------------------------------------------------------------------
# 9. Redis full (maxmemory tiny, noeviction) mid-load: triggers still 202, the enqueue fails;
#    after maxmemory 0 the reconciler enqueues the jobs


def test_redis_out_of_memory(cluster, report):
    cl = cluster()
    broker = cl.start_broker()
    name = unique_name("oom")
    cl.subscribe(name, sinks(3))
    for i in range(2):
        cl.start_worker(f"worker{i + 1}")
    load = cl.start_load(900, threads=3, pace=0.003)
    load.wait_accepted(250)
    with cl.rc() as c:
        assert c.call("CONFIG", "GET", "maxmemory-policy")[1] == b"noeviction"
        c.call("CONFIG", "SET", "maxmemory", "1")
        t_full = time.time()
        load.wait_accepted(load.count() + 200)
        c.call("CONFIG", "SET", "maxmemory", "0")
        t_free = time.time()
    during = load.accepted_between(t_full, t_free)
    failed_enqueues = len(re.findall(r"enqueue (failed|step failed)", broker.log_text()))
    load.wait_done(60)
    cl.wait_past_grace()
    first = cl.reconcile_once()
    cl.settle(reconcile_once=True)
    verify(cl, report, "Redis maxmemory 1 byte", extra=(
        f"202s while Redis was full: {during}; broker enqueue failures logged: "
        f"{failed_enqueues}; first --once pass: {first}"))
    assert during > 0, "no trigger answered 202 while Redis was full"
    assert failed_enqueues > 0, "the broker logged no failed enqueue while Redis was full"
    assert first["requeued"] > 0, "the reconciler requeued nothing after the OOM window"
