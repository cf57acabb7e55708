"""Integration test harness: real redis-server, PostgreSQL and HTTP receivers, and the broker
and worker processes started with env and stopped by PID. Standard library, plus Debian's
python3-jsonschema for checking every API answer against docs/openapi.json (OpenApiCheck)."""

import atexit
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("WH_BUILD_DIR") or REPO / "build")
SAN = os.environ.get("WH_SAN") == "1"
TESTDATA = REPO / "tests" / "testdata"
POLL = 0.05  # seconds between two looks at a condition
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0

PREFIX = "wh:"
JOBS = PREFIX + "{0}:jobs"
RETRY = PREFIX + "{0}:retry"
LIVE = PREFIX + "{0}:live"
DEAD = PREFIX + "{0}:dead"
INDEX_READY = PREFIX + "index-ready"
GROUP = "workers"


OPENAPI_DOC = REPO / "docs" / "openapi.json"


def payload_key(event_id, partition=0):
    """The Redis key of an event's payload: wh:{0}:payload:<event id>."""
    return f"{PREFIX}{{{partition}}}:payload:{event_id}"


def event_key(event_name, tenant=None):
    """The Redis key of an event's subscriber index (hash url -> JSON): wh:event:<name>, or
    wh:event:@<tenant>:<name> for a tenant's subscriptions (decision 44)."""
    if tenant:
        return f"{PREFIX}event:@{tenant}:{event_name}"
    return f"{PREFIX}event:{event_name}"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# The API key every test broker accepts (a second one proves a list works), and the header.
API_KEY = "test-key-0123456789abcdef"
API_KEY_2 = "second-test-key-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

# Configuration keys of our binaries: never inherited from the developer's environment.
OUR_ENV_KEYS = (
    "BROKER_LISTEN", "REDIS_URL", "DATABASE_URL", "REDIS_PREFIX", "QUEUE_PARTITIONS",
    "MAX_BODY_BYTES", "PAYLOAD_TTL", "COMMIT_MAX_EVENTS", "COMMIT_MAX_JOBS", "COMMIT_MAX_BYTES",
    "MAX_PENDING_EVENTS", "MAX_PENDING_JOBS", "MAX_PENDING_BYTES", "LOG_LEVEL", "LOG_FORMAT",
    "DRAIN_TIMEOUT",
    "WORKER_CONCURRENCY",
    "RETRY_SCHEDULE", "DELIVERY_CONNECT_TIMEOUT", "DELIVERY_TIMEOUT", "CLAIM_IDLE",
    "SUBSCRIPTION_CACHE_TTL", "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "WEBHOOK_ALLOWED_CIDRS",
    "WEBHOOK_HTTPS_ONLY", "WEBHOOK_API_KEYS", "SECRETS_KEY", "SECRETS_KEY_PREVIOUS",
    "WORKER_NAME", "RECONCILE_GRACE", "RECONCILE_CONFIRM", "RECONCILE_BATCH", "RETENTION_DAYS",
    "RECONCILE_INTERVAL", "RECONCILE_ONCE", "RECONCILE_DRY_RUN",
    "MAX_CONNECTIONS", "REQUEST_DEADLINE", "MAX_HEADER_BYTES", "MAX_HEADERS", "REQUEST_TIMEOUT",
    "MAX_SUBSCRIPTIONS_PER_EVENT", "INDEX_REBUILD_PAGE", "SUBSCRIPTION_CACHE_MAX",
    "RESOLVE_QUEUE_MAX", "RESOLVE_TIMEOUT",
    "BREAKER_FAILURES", "BREAKER_COOLDOWN", "BREAKER_COOLDOWN_MAX", "DISABLE_AFTER_HOURS",
    "SMTP_URL", "SMTP_FROM", "WEBHOOK_API_URL", "WEBHOOK_API_KEY",
    "RUN_REDIS_PORT", "RUN_PG_PORT", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
)


# ---------------------------------------------------------------------------------------------
# Small utilities


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=POLL):
    """Polls pred() until it returns a truthy value (returned) or timeout seconds pass
    (AssertionError naming what and the last value seen). Exceptions from pred propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def unique_name(prefix):
    """An event name valid for the API, unique per call: prefix.<12 hex>."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def sql_quote(value):
    """A SQL string literal (for values the test itself produced, e.g. ids)."""
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# Processes, stopped by PID. Every started process is registered so that a failing test can
# show its log and the session can kill whatever is left.

_PROCESSES = []
_PROCESSES_LOCK = threading.Lock()


class Proc:
    """A child process with stdout+stderr in a log file. One log file per start."""

    def __init__(self, name, argv, env=None, log_dir=None, user=None, cwd=None, sanitized=False):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.log_dir = Path(log_dir or tempfile.gettempdir())
        self.user = user
        self.cwd = cwd
        self.sanitized = sanitized  # our own binaries: scan the log for sanitizer reports
        self.popen = None
        self.log_path = None
        self.started_at = None
        self.stopped_at = None
        self.returncode = None
        self.starts = 0

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def start_until(self, ready, timeout, what):
        """start(), then wait until ready() is true; fails (with the log tail, after killing
        the process) if it exits or the wait times out. Returns self."""
        Proc.start(self)

        def check():
            if not self.alive():
                raise AssertionError(f"{self.name} exited with {self.popen.returncode} during "
                                     f"start-up\n{self.log_tail()}")
            return ready()

        try:
            wait_until(check, timeout, what)
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}\n{self.log_tail()}") from None
        return self

    def start(self):
        assert not self.alive(), f"{self.name} already running"
        self.starts += 1
        suffix = "" if self.starts == 1 else f"-{self.starts}"
        self.log_path = self.log_dir / f"{self.name}{suffix}.log"
        kwargs = {}
        if self.user is not None:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.cwd, **kwargs)
        self.started_at = time.time()
        self.stopped_at = None
        self.returncode = None
        with _PROCESSES_LOCK:
            if self not in _PROCESSES:
                _PROCESSES.append(self)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def wait(self, timeout):
        """Exit code, or None if still running after timeout seconds."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._exited(rc)
        return rc

    def _exited(self, rc):
        if self.stopped_at is None:
            self.stopped_at = time.time()
        self.returncode = rc

    def terminate(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig, waits up to timeout, SIGKILLs if needed. Returns (exit code, killed)."""
        if self.popen is None:
            return None, False
        if self.popen.poll() is not None:
            self._exited(self.popen.returncode)
            return self.popen.returncode, False
        os.kill(self.popen.pid, sig)
        rc = self.wait(timeout)
        if rc is not None:
            return rc, False
        os.kill(self.popen.pid, signal.SIGKILL)
        return self.wait(30), True

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT, expect_rc=0):
        """Graceful stop; asserts the exit code (when expect_rc is not None) and the log."""
        rc, killed = self.terminate(sig, timeout)
        self.check_log()
        if expect_rc is not None:
            assert not killed, f"{self.name} (pid {self.pid}) ignored {sig!r} for {timeout}s: " \
                               f"SIGKILLed\n{self.log_tail()}"
            assert rc == expect_rc, f"{self.name} (pid {self.pid}) exited {rc} after {sig!r}, " \
                                    f"expected {expect_rc}\n{self.log_tail()}"
        return rc

    def kill(self):
        """SIGKILL by PID, then wait for it."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        if self.popen is not None:
            self.wait(30)
        self.check_log()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n" + \
            "\n".join(text[-lines:])

    def check_log(self):
        """Fails when one of our binaries printed a sanitizer report (cheap, always done)."""
        if not self.sanitized:
            return
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in SANITIZER_MARKERS):
                excerpt = "\n".join(lines[max(0, i - 5):i + 40])
                raise AssertionError(f"sanitizer report in {self.log_path}:\n{excerpt}")


def stop_all(procs):
    """Stops every process still running (SIGTERM: must exit 0) and reaps the others, scanning
    each log; fails with every problem found."""
    errors = []
    for p in procs:
        try:
            if p.alive():
                p.stop()
            else:
                p.kill()  # reaps and scans the log
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


def recent_processes(since):
    """Registered processes running now or stopped after the time since."""
    with _PROCESSES_LOCK:
        procs = list(_PROCESSES)
    return [p for p in procs if p.log_path and (p.alive() or (p.stopped_at or 0) >= since)]


@atexit.register
def kill_leftovers():
    """Last resort when a fixture did not get to stop its process: SIGKILL by PID."""
    with _PROCESSES_LOCK:
        procs = list(_PROCESSES)
    for p in procs:
        if p.alive():
            try:
                os.kill(p.popen.pid, signal.SIGKILL)
                p.popen.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass


# The key every process started here encrypts signing secrets with (SECRETS_KEY), unless a test
# gives another one or none (None in extra).
SECRETS_KEY = "7365637265747320617420726573743a2074657374206b657920303030303031"


def base_env(extra):
    """The parent environment without any of our configuration keys, plus SECRETS_KEY and extra
    (str(); None removes a key)."""
    env = {k: v for k, v in os.environ.items() if k not in OUR_ENV_KEYS}
    env["SECRETS_KEY"] = SECRETS_KEY
    if SAN:
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def binary(name):
    return BUILD_DIR / name


def binaries_missing(names=("webhook-broker", "webhook-worker")):
    """Those of the binaries named that are not built (empty list when all are)."""
    return [n for n in names if not os.access(binary(n), os.X_OK)]


# ---------------------------------------------------------------------------------------------
# Redis: a tiny RESP2 client and a redis-server fixture


class RedisError(Exception):
    pass


class RedisClient:
    """Synchronous RESP2 client: call("XLEN", key). Replies: simple string -> str, error ->
    RedisError raised, integer -> int, bulk -> bytes or None, array -> list or None."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif not isinstance(a, (bytes, bytearray)):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def call(self, *args):
        self.sock.sendall(self.encode(args))
        return self._read()

    def pipeline(self, commands):
        """Sends every command (a sequence of arguments each) in one write, then reads as many
        replies; an error reply is returned as a RedisError instance, not raised."""
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        out = []
        for _ in commands:
            try:
                out.append(self._read())
            except RedisError as e:
                out.append(e)
        return out

    def _line(self):
        line = self.rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis connection closed")
        return line[:-2]

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("redis connection closed")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:80]!r}")

    # Helpers for assertions (keys and members decoded as UTF-8).

    def xlen(self, key=JOBS):
        return self.call("XLEN", key)

    def pending(self, key=JOBS, group=GROUP):
        """Pending-entry count of the group; 0 when the stream or group does not exist."""
        try:
            return self.call("XPENDING", key, group)[0]
        except RedisError as e:
            if "NOGROUP" in str(e):
                return 0
            raise

    def pending_by_consumer(self, key=JOBS, group=GROUP):
        """{consumer name: pending-entry count} of the group; {} when the stream or group does
        not exist."""
        try:
            summary = self.call("XPENDING", key, group)
        except RedisError as e:
            if "NOGROUP" in str(e):
                return {}
            raise
        return {name.decode(): int(n) for name, n in (summary[3] or [])}

    def smembers(self, key):
        return {m.decode() for m in self.call("SMEMBERS", key)}

    def hgetall(self, key):
        flat = self.call("HGETALL", key)
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    def xrange(self, key):
        """[(entry id, {field: value})] with str fields and values."""
        out = []
        for entry_id, fields in self.call("XRANGE", key, "-", "+"):
            out.append((entry_id.decode(),
                        {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}))
        return out

    def stream_jobs(self, key=JOBS):
        """The decoded "d" JSON of every entry of a job stream."""
        return [json.loads(fields["d"]) for _, fields in self.xrange(key) if "d" in fields]


def wait_drained(rc, job_ids=(), timeout=15):
    """Waits until the partition-0 job stream is empty, nothing is pending in the group and
    none of job_ids is in the live set."""
    job_ids = set(job_ids)
    last = {}

    def drained():
        last.update(xlen=rc.xlen(), pending=rc.pending(), live=sorted(job_ids & rc.smembers(LIVE)))
        return last == {"xlen": 0, "pending": 0, "live": []}

    try:
        wait_until(drained, timeout, "Redis to drain", 0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; state: {last}") from None


class RedisServer:
    """redis-server on a free loopback port, no persistence, data dir in tmpdir. Can be
    stopped/killed and started again on the same port."""

    def __init__(self, tmpdir, port=None, name="redis"):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = Proc(name, [
            "redis-server", "--port", self.port, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
            "--maxmemory-policy", "noeviction"], env=base_env({}), log_dir=self.dir)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout=START_TIMEOUT):
        self.proc.start()

        def pong():
            if not self.proc.alive():
                raise AssertionError(f"redis-server exited\n{self.proc.log_tail()}")
            try:
                with RedisClient(self.port, timeout=1) as c:
                    return c.call("PING") == "PONG"
            except (OSError, RedisError):
                return False

        wait_until(pong, timeout, f"redis-server on port {self.port} to answer PING")
        return self

    def client(self):
        return RedisClient(self.port)

    def call(self, *args):
        """One command on a fresh connection."""
        with self.client() as c:
            return c.call(*args)

    def stop(self):
        self.proc.stop(expect_rc=None)

    def kill(self):
        self.proc.kill()

    def wipe_files(self):
        """Deletes what a stopped or killed server could load its data from (RDB and AOF
        files), so that the next start() is Redis back without its data."""
        for entry in self.dir.iterdir():
            if entry.suffix in (".rdb", ".aof") or entry.name == "appendonlydir":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def alive(self):
        return self.proc.alive()


class RedisCluster:
    """A real Redis Cluster on loopback: masters x (1 + replicas) redis-server processes, each
    with its own data dir, client port and cluster bus port (both free ports: the default bus
    port, client port + 10000, can be out of range for an ephemeral port), joined by
    `redis-cli --cluster create`. start() returns once every node reports cluster_state:ok, sees
    every other node connected and lists every replica in CLUSTER SLOTS; stop() stops every
    process by PID. docs/decisions.md 43."""

    def __init__(self, tmpdir, masters=3, replicas=1, name="cluster"):
        self.dir = Path(tmpdir)
        self.masters, self.replicas = masters, replicas
        self.nodes = []  # Proc per node, in creation order (the first `masters` become masters)
        self.ports = []
        taken = set()
        for i in range(masters * (1 + replicas)):
            port, bus = self._free(taken), self._free(taken)
            d = self.dir / f"{name}-{i}-{port}"
            d.mkdir(parents=True, exist_ok=True)
            self.ports.append(port)
            self.nodes.append(Proc(f"{name}-{i}", [
                "redis-server", "--port", port, "--cluster-port", bus, "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--dir", d, "--save", "", "--appendonly", "no",
                # A replica is listed in CLUSTER SLOTS once its replication offset is not 0,
                # i.e. after the master's first PING down the link (every 10 s by default).
                "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1",
                "--daemonize", "no", "--maxmemory-policy", "noeviction"],
                env=base_env({}), log_dir=d))

    @staticmethod
    def _free(taken):
        while True:
            p = free_port()
            if p not in taken:
                taken.add(p)
                return p

    @property
    def seeds(self):
        """host:port of every node, comma-separated."""
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port=None):
        return RedisClient(port or self.ports[0])

    def call(self, *args, port=None):
        """One command on a fresh connection to a node (the first by default; no redirection
        is followed: keyless commands, CLUSTER ..., or keys of that node's slots)."""
        with self.client(port) as c:
            return c.call(*args)

    def info(self, port):
        text = self.call("CLUSTER", "INFO", port=port).decode()
        return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)

    def slot_owner(self, slot):
        """Client port of the master serving a slot (from CLUSTER SLOTS)."""
        for lo, hi, master, *_ in self.call("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return master[1]
        raise AssertionError(f"slot {slot} is not served")

    def master_ports(self):
        return sorted({r[2][1] for r in self.call("CLUSTER", "SLOTS")})

    def call_key(self, key, *args):
        """args on the master serving key's slot (found with CLUSTER KEYSLOT)."""
        slot = self.call("CLUSTER", "KEYSLOT", key)
        return self.call(*args, port=self.slot_owner(slot))

    def start(self, timeout=60):
        """Starts the nodes and creates the cluster; on failure every node is stopped."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout):
        for n in self.nodes:
            n.start()

        def pong(port):
            try:
                with RedisClient(port, timeout=1) as c:
                    return c.call("PING") == "PONG"
            except (OSError, RedisError):
                return False

        for n, port in zip(self.nodes, self.ports):
            wait_until(lambda: n.alive() and pong(port), START_TIMEOUT,
                       f"{n.name} on port {port} to answer PING")
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *self.seeds.split(","),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            env=base_env({}))
        assert create.returncode == 0, f"redis-cli --cluster create failed:\n{create.stdout}" \
                                       f"\n{create.stderr}"

        def ready():
            for port in self.ports:
                if self.info(port).get("cluster_state") != "ok":
                    return False
                nodes = self.call("CLUSTER", "NODES", port=port).decode().splitlines()
                if len(nodes) != len(self.ports) or \
                        any(" connected" not in line for line in nodes):
                    return False
                slots = self.call("CLUSTER", "SLOTS", port=port)
                if len(slots) != self.masters or \
                        any(len(r) - 3 != self.replicas for r in slots):
                    return False  # a replica not yet known to this node
            return True

        wait_until(ready, timeout, "every cluster node to report cluster_state:ok", 0.2)
        return self

    def stop(self):
        for n in self.nodes:
            n.stop(expect_rc=None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------
# PostgreSQL: one server per session in a private temp dir, one database per test module


def _pg_bindir():
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


class PgServer:
    """initdb + postgres on a free loopback port (fsync off: tests only). As root, the data and
    socket dirs belong to the postgres user and the server runs as that user."""

    NULL = "\x02NULL\x02"
    FS = "\x1f"
    RS = "\x1e"

    def __init__(self, port=None):
        self.bindir = _pg_bindir()
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="wh-pg-"))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.sockdir = self.base / "sock"
        self.user = None
        self.data.mkdir(mode=0o700)
        self.sockdir.mkdir(mode=0o755)
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            self.user = "postgres"
            for d in (self.data, self.sockdir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self.env = base_env({"PGTZ": "UTC", "LC_ALL": "C"})
        self.proc = Proc("postgres", [
            self.bindir / "postgres", "-D", self.data, "-p", self.port, "-k", self.sockdir,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200"], env=self.env, log_dir=self.base, user=self.user,
            cwd=self.base)

    def start(self, timeout=60):
        initdb_log = self.base / "initdb.log"
        with open(initdb_log, "wb") as log:
            kwargs = dict(user=self.user, group=self.user, extra_groups=[]) if self.user else {}
            rc = subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                timeout=120, **kwargs).returncode
        assert rc == 0, f"initdb failed ({rc}):\n{initdb_log.read_text(errors='replace')}"
        self.proc.start()

        def ready():
            if not self.proc.alive():
                raise AssertionError(f"postgres exited\n{self.proc.log_tail()}")
            return self.accepting()

        wait_until(ready, timeout, f"postgres on port {self.port} to accept connections", 0.1)
        return self

    def accepting(self):
        """Whether the server accepts connections now (pg_isready, 1 s at most)."""
        return subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-t", "1"], env=self.env).returncode == 0

    def stop(self):
        """SIGINT (fast shutdown) to the postmaster, SIGKILL after 30 s."""
        self.proc.terminate(signal.SIGINT, 30)

    def cleanup(self):
        if os.environ.get("WH_KEEP_TMP") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, db, query, timeout=30):
        """Runs query with psql; rows as tuples of str, NULL as None."""
        out = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-F", self.FS,
             "-R", self.RS, "-P", f"null={self.NULL}", "-f", "-"],
            input=query.encode(), capture_output=True, env=self.env, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"psql failed ({out.returncode}) for {query!r}:\n"
                                 f"{out.stderr.decode(errors='replace')}")
        text = out.stdout.decode()
        if text.endswith("\n"):
            text = text[:-1]
        if not text:
            return []
        return [tuple(None if f == self.NULL else f for f in rec.split(self.FS))
                for rec in text.split(self.RS)]

    def create_database(self, name):
        self.sql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql("postgres", f'CREATE DATABASE "{name}"')
        return Database(self, name)


class Database:
    """One test module's database on the session's PostgreSQL."""

    def __init__(self, pg, name):
        self.pg = pg
        self.name = name

    @property
    def url(self):
        return self.pg.url(self.name)

    def sql(self, query):
        return self.pg.sql(self.name, query)

    def scalar(self, query):
        rows = self.sql(query)
        return rows[0][0] if rows else None

    def count(self, table, where="true"):
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE {where}"))

    def jobs(self, event_id):
        """Job rows of an event as dicts (status, attempts, ...) ordered by url."""
        cols = ("id", "subscription_id", "url", "status", "attempts", "last_status_code",
                "last_error", "delivered_at", "partition")
        rows = self.sql(f"SELECT {', '.join(cols)} FROM jobs WHERE event_id = "
                        f"{sql_quote(event_id)} ORDER BY url")
        return [dict(zip(cols, r)) for r in rows]

    def attempts(self, job_id):
        """(attempt, status_code or None, error or None) ordered by attempt."""
        rows = self.sql(f"SELECT attempt, status_code, error FROM attempts WHERE job_id = "
                        f"{sql_quote(job_id)} ORDER BY attempt")
        return [(int(a), int(s) if s is not None else None, e) for a, s, e in rows]

    def wait_jobs(self, event_id, statuses, timeout=20, count=None):
        """Waits until every job of the event has a status in statuses (and, when count is
        given, there are count jobs). Returns the job rows."""
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)

        def done():
            rows = self.jobs(event_id)
            if count is not None and len(rows) != count:
                return False
            return rows if rows and all(r["status"] in statuses for r in rows) else False

        try:
            return wait_until(done, timeout, f"jobs of event {event_id} to reach {statuses}", 0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; jobs now: {self.jobs(event_id)}") from None


class OpenTransaction:
    """A psql session that runs BEGIN and sql, then holds the transaction open until release()
    commits it: what it locked or wrote stays locked, and invisible to others, until then."""

    def __init__(self, db, sql):
        pg = db.pg
        self.proc = subprocess.Popen(
            [str(pg.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h",
             "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", db.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=pg.env, text=True)
        self.proc.stdin.write(f"BEGIN;\n{sql}\nSELECT 'ready';\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ready"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
            self.proc.wait(30)


class TableLock(OpenTransaction):
    """LOCK TABLE <table> IN EXCLUSIVE MODE until release(): the broker's next commit waits on
    it (in flight) and the triggers after it wait in its queue, so a test can build a batch
    deterministically."""

    def __init__(self, db, table="events"):
        super().__init__(db, f"LOCK TABLE {table} IN EXCLUSIVE MODE;")


def lock_waiters(db):
    """How many sessions of the database wait for a lock (a commit behind a TableLock or an
    OpenTransaction)."""
    return int(db.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND datname = current_database()"))


# ---------------------------------------------------------------------------------------------
# HTTP receivers: real servers in threads that record every request


class Headers(dict):
    """Case-insensitive header dict (keys stored lowercase; repeated headers joined by ", ")."""

    def __init__(self, pairs=()):
        super().__init__()
        for k, v in pairs:
            k = k.lower()
            super().__setitem__(k, f"{self[k]}, {v}" if k in self else v)

    def __getitem__(self, k):
        return super().__getitem__(k.lower())

    def __contains__(self, k):
        return super().__contains__(k.lower())

    def get(self, k, default=None):
        return super().get(k.lower(), default)


class Request:
    def __init__(self, method, path, headers, body, client):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.client = client  # (host, port) of the connection: shows keep-alive reuse
        self.time = time.time()
        self.mono = time.monotonic()

    def __repr__(self):
        return (f"<{self.method} {self.path} id={self.headers.get('webhook-id')} "
                f"{len(self.body)}B from :{self.client[1]}>")


def _at(seq, i):
    """seq[i], the last element once i runs past the end; a scalar is its own sequence."""
    if isinstance(seq, (list, tuple)):
        return seq[min(i, len(seq) - 1)]
    return seq


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections end eventually

    def setup(self):
        super().setup()
        self.server.owner._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._conn_closed(self.connection)

    def log_message(self, fmt, *args):
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        owner = self.server.owner
        body = self._read_body()
        req = Request(self.command, self.path, Headers(self.headers.items()), body,
                      self.client_address)
        index = owner._record(req)
        status, delay, extra = owner._behaviour(index, req)
        if delay and owner._closed.wait(delay):
            self.close_connection = True
            return
        payload = _at(owner.body, index) if owner.body is not None else b"ok\n"
        if status in (204, 304):
            payload = b""
        try:
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle


class _ReceiverServer(http.server.ThreadingHTTPServer):
    """The default listen backlog (5) refuses bursts of new connections from the workers."""

    request_queue_size = 256


class Receiver:
    """A subscriber: ThreadingHTTPServer on a free 127.0.0.1 port (HTTP/1.1, keep-alive).

    statuses: an int or a sequence answered in order, the last one repeating ([500, 500, 200]).
    delay: seconds to wait before answering, an int/float or a sequence like statuses.
    headers: extra response headers, a dict or a sequence of dicts like statuses.
    responder: optional callable(index, request) -> (status, delay, headers) overriding the rest.
    body: response body bytes (default b"ok\n"), or a sequence like statuses.
    port: the port to listen on (0: any free one), so a subscriber can stop and come back.
    """

    def __init__(self, statuses=200, delay=0.0, headers=None, responder=None, name="receiver",
                 body=None, port=0):
        self.name = name
        self.body = body
        self.statuses = statuses
        self.delay = delay
        self.headers = headers
        self.responder = responder
        self._lock = threading.Condition()
        self._requests = []
        self._conns = set()
        self._closed = threading.Event()
        self.server = _ReceiverServer(("127.0.0.1", port), _ReceiverHandler)
        self.server.daemon_threads = True
        self.server.owner = self
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"receiver-{self.port}", daemon=True)
        self._thread.start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def _record(self, req):
        with self._lock:
            self._requests.append(req)
            self._lock.notify_all()
            return len(self._requests) - 1

    def _behaviour(self, index, req):
        if self.responder is not None:
            return self.responder(index, req)
        return _at(self.statuses, index), _at(self.delay, index) or 0, _at(self.headers, index)

    def _conn_opened(self, conn):
        with self._lock:
            self._conns.add(conn)

    def _conn_closed(self, conn):
        with self._lock:
            self._conns.discard(conn)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def count(self):
        with self._lock:
            return len(self._requests)

    def wait_for(self, count, timeout=15):
        """Waits until at least count requests arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name} :{self.port} got {len(self._requests)} "
                                         f"requests within {timeout}s, expected {count}: "
                                         f"{self._requests[:10]}")
                self._lock.wait(min(left, POLL))
            return list(self._requests)

    def close(self):
        """Stops accepting, wakes delayed handlers and closes open keep-alive connections."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)


# ---------------------------------------------------------------------------------------------
# An SMTP server for the e-mail alerts (aiosmtpd, python3-aiosmtpd)


class SmtpSink:
    """An SMTP server on a free 127.0.0.1 port that keeps every message it accepts.

    refuse: how many DATA commands to answer with 451 (a temporary failure) before accepting,
    counting only messages to refuse_to when it is given.
    messages: (mail_from, [rcpt_tos], email.message.Message) in arrival order."""

    def __init__(self, refuse=0, refuse_to=None):
        from aiosmtpd.controller import Controller  # imported here: only the mail tests need it
        self.refuse = refuse
        self.refuse_to = refuse_to
        self.refused = 0
        self._lock = threading.Condition()
        self._messages = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server, session, envelope):
        import email
        with self._lock:
            if self.refused < self.refuse and (self.refuse_to is None
                                               or self.refuse_to in envelope.rcpt_tos):
                self.refused += 1
                return "451 4.3.0 try again later"
            msg = email.message_from_bytes(envelope.original_content or envelope.content)
            self._messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
            self._lock.notify_all()
        return "250 OK"

    @property
    def messages(self):
        with self._lock:
            return list(self._messages)

    def wait_for(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SMTP sink got {len(self._messages)} messages within "
                                         f"{timeout}s, expected {count}")
                self._lock.wait(min(left, POLL))
            return list(self._messages)

    def close(self):
        self.controller.stop()


def operational_event(req):
    """The JSON payload of an operational event a Receiver got (a Request)."""
    return json.loads(req.body)


# ---------------------------------------------------------------------------------------------
# The broker's HTTP API

# ---------------------------------------------------------------------------------------------
# Every answer the Api client gets, checked against the OpenAPI document (decision 36)


class OpenApiCheck:
    """The routes of docs/openapi.json and the schema of each answer. check() returns None when
    an answer is what the document says, else why not (naming the route and the status)."""

    METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

    def __init__(self, path=OPENAPI_DOC):
        import jsonschema  # python3-jsonschema (scripts/deps.sh)

        self._js = jsonschema
        self.doc = json.loads(Path(path).read_text())
        self.routes = []  # (number of parameters, compiled template, template, path item)
        for tmpl, item in self.doc["paths"].items():
            rx = re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(tmpl))
            self.routes.append((tmpl.count("{"), re.compile(rx + r"\Z"), tmpl, item))
        self.routes.sort(key=lambda r: r[0])  # literal segments before parameters
        self._validators = {}

    def _inline(self, node, seen=()):
        """node with every local $ref replaced by its target (the document has no cycles), so
        any jsonschema version validates it without a resolver."""
        if isinstance(node, list):
            return [self._inline(v, seen) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/") and ref not in seen, f"unsupported or cyclic $ref {ref}"
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return self._inline(target, seen + (ref,))
        return {k: self._inline(v, seen) for k, v in node.items()}

    def _validator(self, key, schema):
        v = self._validators.get(key)
        if v is None:
            js = self._js
            cls = js.Draft202012Validator
            v = cls(self._inline(schema), format_checker=js.FormatChecker())
            self._validators[key] = v
        return v

    def route(self, method, path):
        """(template, operation or None) of the path, or None when no path matches."""
        path = path.split("?", 1)[0]
        for _, rx, tmpl, item in self.routes:
            if rx.match(path):
                return tmpl, item.get(method.lower())
        return None

    def check(self, method, path, status, headers, raw):
        if method.upper() == "HEAD":
            return None  # no body
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json" and status in (400, 413) and b"<html" in raw.lower():
            return None  # libevent's own pages (docs/api.md): the document says they are not JSON
        found = self.route(method, path)
        where = f"{method.upper()} {path.split('?', 1)[0]}"
        if found is None or found[1] is None:
            # No such path (404) or method (405); or refused before routing (401, 408, 413,
            # 431, 503): the shared error body.
            if status < 400:
                return f"{where}: {status} for a path or method not in docs/openapi.json"
            schema = {"$ref": "#/components/schemas/Error"}
            key = ("error",)
            route = f"{where} (not in the document)"
        else:
            tmpl, op = found
            route = f"{method.upper()} {tmpl}"
            resp = op.get("responses", {}).get(str(status))
            if resp is None:
                return f"{route}: status {status} is not documented (body: {raw[:300]!r})"
            if "$ref" in resp:
                resp = self._inline(resp)
            content = resp.get("content")
            if not content:
                return None if not raw else f"{route} {status}: a body where none is documented"
            if "application/json" not in content:
                # Another media type (GET /metrics: Prometheus text; the console's files): the
                # type is checked.
                types = sorted({t.split(";")[0].strip().lower() for t in content})
                if ctype in types:
                    return None
                return f"{route} {status}: Content-Type {ctype!r}, the document says {types}"
            schema = content["application/json"].get("schema", {})
            key = (method.lower(), tmpl, str(status))
        if ctype != "application/json":
            return f"{route} {status}: Content-Type {ctype!r}, not application/json"
        try:
            data = json.loads(raw)
        except ValueError as e:
            return f"{route} {status}: the body is not JSON ({e}): {raw[:300]!r}"
        err = self._js.exceptions.best_match(self._validator(key, schema).iter_errors(data))
        if err is not None:
            at = "/".join(str(p) for p in err.absolute_path)
            return (f"{route} {status}: the body does not match the document at /{at}: "
                    f"{err.message} (body: {raw[:500]!r})")
        return None


_openapi_check = None


def openapi_check():
    """The suite's one OpenApiCheck (the document is read once)."""
    global _openapi_check
    if _openapi_check is None:
        _openapi_check = OpenApiCheck()
    return _openapi_check


class Api:
    """request(method, path, body=bytes|dict|list|None, headers=None) ->
    (status, headers (case-insensitive), parsed JSON or the raw bytes). Every answer is checked
    against docs/openapi.json (OpenApiCheck): an undocumented status or a body that does not
    match the document's schema for that route and status fails the test (AssertionError)."""

    def __init__(self, port, host="127.0.0.1", timeout=15.0, check_openapi=True):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.check_openapi = check_openapi  # False only for servers other than the broker

    def request(self, method, path, body=None, headers=None, timeout=None):
        hdrs = dict(AUTH)  # headers={"Authorization": None} sends none
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        for k, v in (headers or {}).items():
            for existing in [h for h in hdrs if h.lower() == k.lower()]:
                del hdrs[existing]
            if v is not None:  # None removes a default header
                hdrs[k] = v
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (413) and close before reading the whole body
            resp = conn.getresponse()
            raw = resp.read()
            rh = Headers(resp.getheaders())
            status = resp.status
        finally:
            conn.close()
        if self.check_openapi:
            problem = openapi_check().check(method, path, status, rh, raw)
            assert problem is None, f"docs/openapi.json: {problem}"
        data = raw
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                pass
        return status, rh, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # Shortcuts that assert the happy path.

    def register(self, event, url, headers=None, expect=201):
        body = {"eventName": event, "webhookUrl": url}
        if headers is not None:
            body["headers"] = headers
        status, _, data = self.post("/api/v0/webhooks", body)
        assert status == expect, f"register {event} {url}: {status} {data!r}"
        return data

    def trigger(self, event, payload=b"{}", headers=None, expect=202):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        status, _, data = self.post(f"/api/v0/trigger-event/{event}", payload, headers=headers)
        assert status == expect, f"trigger {event}: {status} {data!r}"
        return data

    def event(self, event_id):
        status, _, data = self.get(f"/api/v0/events/{event_id}")
        assert status == 200, f"GET event {event_id}: {status} {data!r}"
        return data


def assert_error(resp, status, code=None):
    """resp is an Api.request result: the status, and the JSON error shape
    {"error": {"code": str, "message": str}} with the given code (str or set of str)."""
    st, hdrs, data = resp
    assert st == status, f"expected {status}, got {st}: {data!r}"
    assert isinstance(data, dict) and set(data) == {"error"}, f"not an error body: {data!r}"
    err = data["error"]
    assert isinstance(err, dict), f"error is not an object: {data!r}"
    assert isinstance(err.get("code"), str) and err["code"], f"missing error code: {data!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"missing message: {data!r}"
    assert (hdrs.get("content-type") or "").startswith("application/json"), \
        f"error Content-Type: {hdrs.get('content-type')!r}"
    if code is not None:
        codes = {code} if isinstance(code, str) else set(code)
        assert err["code"] in codes, f"expected code {codes}, got {err['code']!r}: {data!r}"
    return err


# ---------------------------------------------------------------------------------------------
# The broker and worker processes


def broker_env(port, redis, db, env=None):
    """The environment of a test broker on 127.0.0.1:port: Redis and database of the test, debug
    logs, private networks allowed, both test API keys; env (str()-ed, None removes) on top."""
    full = {"BROKER_LISTEN": f"127.0.0.1:{port}", "REDIS_URL": redis.url, "DATABASE_URL": db.url,
            "LOG_LEVEL": "debug", "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
            "WEBHOOK_API_KEYS": f"{API_KEY}, {API_KEY_2}"}
    full.update(env or {})
    return base_env(full)


def assert_no_sanitizer_report(text, who):
    for marker in SANITIZER_MARKERS:
        assert marker not in text, f"sanitizer report from {who}:\n{text}"


def broker_refuses_to_start(redis, db, naming, **env):
    """Runs webhook-broker with the test configuration (broker_env) overridden by env, e.g.
    WEBHOOK_API_KEYS="", and asserts that it exits non-zero within 30 s, naming `naming` (the
    offending key) on stderr. Returns the stderr text."""
    out = subprocess.run([str(binary("webhook-broker"))],
                         env=broker_env(free_port(), redis, db, env), stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=30)
    err = out.stderr.decode(errors="replace")
    assert_no_sanitizer_report(err, "the broker")
    assert out.returncode != 0, f"the broker started (exit {out.returncode}) with {env}:\n{err}"
    assert naming in err, f"the broker's refusal does not name {naming!r}:\n{err}"
    return err


class Broker(Proc):
    """webhook-broker on a free loopback port; start() waits for GET /readyz 200."""

    def __init__(self, log_dir, redis, db, env=None, name="broker"):
        self.port = free_port()
        self.redis = redis
        self.db = db
        super().__init__(name, [binary("webhook-broker")], env=broker_env(self.port, redis, db, env),
                         log_dir=log_dir, sanitized=True)
        self.api = Api(self.port)

    def start(self, timeout=START_TIMEOUT):
        def ready():
            try:
                return self.api.request("GET", "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        return self.start_until(ready, timeout, f"{self.name} GET /readyz 200")


WORKER_DEFAULTS = {
    "RETRY_SCHEDULE": "0.3,0.3,0.3",
    "DELIVERY_CONNECT_TIMEOUT": "1",
    "DELIVERY_TIMEOUT": "5",
    "CLAIM_IDLE": "6",
    "WORKER_CONCURRENCY": "16",
    "SUBSCRIPTION_CACHE_TTL": "0.2",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
    "LOG_LEVEL": "debug",
}

_READY_RE = re.compile(r"\bready\b", re.IGNORECASE)
_NOT_READY_RE = re.compile(r"\bnot ready\b", re.IGNORECASE)


class Worker(Proc):
    """webhook-worker; start() waits for a log line with the word "ready"."""

    def __init__(self, log_dir, redis, db, env=None, name="worker"):
        full = {"REDIS_URL": redis.url, "DATABASE_URL": db.url, **WORKER_DEFAULTS}
        full.update(env or {})
        self.config = full
        super().__init__(name, [binary("webhook-worker")], env=base_env(full), log_dir=log_dir,
                         sanitized=True)

    def start(self, timeout=START_TIMEOUT):
        def ready():
            return any(_READY_RE.search(l) and not _NOT_READY_RE.search(l)
                       for l in self.log_text().splitlines())

        return self.start_until(ready, timeout, f"{self.name} to log that it is ready")


# ---------------------------------------------------------------------------------------------
# The reconciler

# The summary line of every reconciler pass, its counters in RECONCILER_COUNTS order.
RECONCILER_PASS_RE = re.compile(
    r"pass done(?: \(dry run: nothing changed\))?: scanned (\d+), requeued (\d+), "
    r"rescheduled (\d+), payloads restored (\d+), index entries fixed (\d+), purged (\d+)")
RECONCILER_COUNTS = ("scanned", "requeued", "rescheduled", "payloads", "index", "purged")


def reconciler_passes(text):
    """The counters ({name in RECONCILER_COUNTS: int}) of every 'pass done' line in text, in
    order (a reconciler's output or log)."""
    return [dict(zip(RECONCILER_COUNTS, map(int, m.groups())))
            for m in RECONCILER_PASS_RE.finditer(text)]


def reconciler_env(redis, db, env=None):
    """The environment of a test reconciler on the test's Redis and database, info logs; env
    (str()-ed, None removes) on top."""
    return base_env({"REDIS_URL": redis.url, "DATABASE_URL": db.url, "LOG_LEVEL": "info",
                     **(env or {})})


def run_reconciler(redis, db, *args, log_path=None, **env):
    """Runs one `webhook-reconciler --once *args` pass (e.g. "--dry-run") on the test's Redis and
    database, env (RECONCILE_GRACE=0, ...) on top of reconciler_env. Asserts exit 0 and no
    sanitizer report. Returns (the pass's counters, or None when it printed no 'pass done'
    line, e.g. when another reconciler holds the lock; its whole output). log_path: a file the
    output is appended to."""
    out = subprocess.run([str(binary("webhook-reconciler")), "--once", *args],
                         env=reconciler_env(redis, db, env), stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=60)
    text = (out.stdout + out.stderr).decode(errors="replace")
    if log_path is not None:
        with open(log_path, "a") as f:
            f.write(text)
    assert_no_sanitizer_report(text, "the reconciler")
    assert out.returncode == 0, f"reconciler --once exited {out.returncode}:\n{text}"
    passes = reconciler_passes(text)
    assert len(passes) <= 1, f"--once printed {len(passes)} passes:\n{text}"
    return (passes[0] if passes else None), text


# ---------------------------------------------------------------------------------------------
# Standard Webhooks signatures, computed independently of the C code


def sign_v1(secret, msg_id, timestamp, body):
    assert secret.startswith("whsec_"), secret
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_signature(secret, msg_id, timestamp, body, header):
    """True when any of the space-separated signatures in header matches."""
    expected = sign_v1(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(sig, expected) for sig in (header or "").split())


def signature_vectors():
    """The vectors of tests/testdata/standard-webhooks.json, or None when the file is absent."""
    path = TESTDATA / "standard-webhooks.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["vectors"]


# ---------------------------------------------------------------------------------------------
# Subscription controls, the worker's side (issue 9; test_gate, test_ratelimit,
# test_retry_policy): per-subscription Redis keys of partition 0 (QUEUE_PARTITIONS=1), settings
# written straight into PostgreSQL, and the receiver's densest window.

HELD_SUBS = PREFIX + "{0}:held-subs"


def sub_key(kind, sub_id, partition=0):
    """wh:{p}:<kind>:<subscription id> for kind ctl, held or rate."""
    return f"{PREFIX}{{{partition}}}:{kind}:{sub_id}"


def patch_subscription(api, sub, body):
    """PATCH /api/v0/webhooks/<event>/<id> with body; asserts 200 and returns the subscription."""
    st, _, data = api.request("PATCH", f"/api/v0/webhooks/{sub['eventName']}/{sub['id']}", body)
    assert st == 200, (st, data)
    return data


def set_subscription(db, sub_id, **cols):
    """UPDATE subscriptions SET <col> = <SQL expression> for the subscription, e.g.
    set_subscription(db, sid, paused_at="now()", rate_limit="'{\"perSecond\": 20}'")."""
    sets = ", ".join(f"{k} = {v}" for k, v in cols.items())
    db.sql(f"UPDATE subscriptions SET {sets}, updated_at = now() WHERE id = {sql_quote(sub_id)}")


def densest_window(times, window):
    """The most of the sorted times that lie in one half-open interval [t, t + window)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def attempt_times(db, job_id):
    """started_at of every attempt of the job (epoch seconds, in attempt order)."""
    rows = db.sql("SELECT extract(epoch FROM started_at) FROM attempts WHERE job_id = "
                  f"{sql_quote(job_id)} ORDER BY attempt")
    return [float(r[0]) for r in rows]
