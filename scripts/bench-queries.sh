#!/usr/bin/env bash
# `make bench-queries`: latency of the read endpoints over a large job log. Starts a private
# PostgreSQL, Redis and broker on free loopback ports (scripts/lib.sh), lets the broker migrate
# the database, loads BENCH_JOBS jobs (default 10 million) with their events and some attempts
# (scripts/bench-queries.sql, generate_series), ANALYZEs, then times BENCH_N requests (default
# 200) per endpoint template below with varied parameters, over one keep-alive connection, and
# prints a Markdown table of p50 / p99 / max. Exits non-zero when any p99 is over
# BENCH_P99_MS (default 100). Not part of make test or make bench. Stops everything by PID.
#
# Adding an endpoint: append a line to TEMPLATES: "label|path", where the path may use
#   {sub}        a subscription id            {sub_event}  that subscription's event name
#   {event}      an event name (any)          {status}     one of the five job statuses
#   {job}        a job id (any status)        {event_id}   an event id
#   {since}      an RFC 3339 time in the 30 days of data, {until} = since + 1 h .. 7 days
#   {t}          an RFC 3339 time in the 30 days of data
#   {recent}     an RFC 3339 time in the last 13 days    {dead_job}  a dead job, each used once
# A path may start with "POST " (the request then has the body after " <<", placeholders
# filled too; 200, 201 and 202 are success) and may end with " +next": the path is first requested untimed, then the timed request is
# the same path with &cursor=<its "next"> (a deep page when the path has until={t}).
# Every value is drawn at random per request (a fixed seed: runs are comparable).
#
# Environment: WH_BUILD_DIR (set by make), BENCH_JOBS, BENCH_N, BENCH_P99_MS, BENCH_KEEP=1
# (keep the temporary directory), WH_PG_OPTS (extra PostgreSQL settings; default below).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

BUILD=${WH_BUILD_DIR:-$ROOT/build}
JOBS=${BENCH_JOBS:-10000000}
N=${BENCH_N:-200}
P99_MAX=${BENCH_P99_MS:-100}
# The load is bulk work on a throw-away cluster; durability settings do not change read latency.
export WH_PG_OPTS=${WH_PG_OPTS:--c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=2GB -c max_wal_size=8GB -c checkpoint_timeout=30min}

TEMPLATES=(
    "jobs: newest|/api/v0/jobs"
    "jobs: limit=500|/api/v0/jobs?limit=500"
    "jobs: status|/api/v0/jobs?status={status}"
    "jobs: status=dead|/api/v0/jobs?status=dead"
    "jobs: subscription|/api/v0/jobs?subscription={sub}"
    "jobs: subscription + status|/api/v0/jobs?subscription={sub}&status={status}"
    "jobs: event|/api/v0/jobs?event={event}"
    "jobs: event + status|/api/v0/jobs?event={event}&status={status}"
    "jobs: event + subscription + status|/api/v0/jobs?event={sub_event}&subscription={sub}&status={status}"
    "jobs: since + until|/api/v0/jobs?since={since}&until={until}"
    "jobs: status + window|/api/v0/jobs?status={status}&since={since}&until={until}"
    "jobs: event + status + window|/api/v0/jobs?event={event}&status={status}&since={since}&until={until}&limit=100"
    "jobs: deep cursor|/api/v0/jobs?until={t}&limit=100 +next"
    "jobs: deep cursor, dead, subscription|/api/v0/jobs?status=dead&subscription={sub}&until={t} +next"
    "jobs: deep cursor, event, limit=500|/api/v0/jobs?event={event}&until={t}&limit=500 +next"
    "jobs/<id>|/api/v0/jobs/{job}"
    "status|/api/v0/webhooks/{sub_event}/{sub}/status"
    "stats: 24 h|/api/v0/stats"
    "stats: since|/api/v0/stats?since={recent29}"
    "admin/delivery with the subscription list|/api/v0/admin/delivery"
    "events/<id> with payloadRaw|/api/v0/events/{event_id}"
    "jobs/<id>/retry|POST /api/v0/jobs/{dead_job}/retry"
    "recover|POST /api/v0/webhooks/{sub_event}/{sub}/recover <<{\"since\":\"{recent}\"}"
    "events/<id>/replay|POST /api/v0/events/{event_id}/replay"
)

say() { echo "bench-queries: $*"; }
die()
{
    echo "bench-queries: $*" >&2
    exit 1
}

[[ -x "$BUILD/webhook-broker" ]] || die "missing $BUILD/webhook-broker: run make first"
command -v python3 >/dev/null || die "python3 is needed"

free_port()
{
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

TMP=$(mktemp -d /tmp/wh-bench-queries.XXXXXX)
chmod 0711 "$TMP"
PIDS=$TMP/pids
LOGS=$TMP/logs
mkdir -p "$PIDS" "$LOGS"
daemons=()
started_redis=0
started_pg=0

cleanup()
{
    local rc=$?
    trap '' INT TERM
    trap - EXIT
    say "stopping..."
    wh_stop_pidfile "$PIDS/psql.pid" 5 INT
    wh_stop_pidfile "$PIDS/timer.pid" 5
    wh_stop_pidfile "$PIDS/broker.pid" 20
    ((started_redis)) && wh_stop_pidfile "$TMP/redis/redis.pid" 20
    ((started_pg)) && wh_stop_pidfile "$TMP/pg/postgres.pid" 60 INT
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis_port=$(free_port)
pg_port=$(free_port)
broker_port=$(free_port)
while [[ "$pg_port" == "$redis_port" || "$broker_port" == "$redis_port" || "$broker_port" == "$pg_port" ]]; do
    broker_port=$(free_port)
    pg_port=$(free_port)
done

say "temporary directory: $TMP"
started_redis=1
wh_start_redis "$TMP/redis" "$redis_port" || die "could not start Redis"
started_pg=1
wh_start_pg "$TMP/pg" "$pg_port" || die "could not start PostgreSQL"
PSQL=("$(wh_pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U webhooks -d webhooks)

export REDIS_URL=redis://127.0.0.1:$redis_port
export DATABASE_URL=postgresql://webhooks@127.0.0.1:$pg_port/webhooks
export WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 LOG_LEVEL=warn
WEBHOOK_API_KEYS="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export WEBHOOK_API_KEYS
SECRETS_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export SECRETS_KEY
broker_url=http://127.0.0.1:$broker_port

# The broker migrates the empty database; it is stopped during the load (its start-up would
# otherwise meet half-built tables) and started again for the timings.
start_broker()
{
    BROKER_LISTEN=127.0.0.1:$broker_port wh_start_daemon broker "$BUILD/webhook-broker"
    wh_wait_http "$broker_url/readyz" 60 || { _wh_log_tail "$LOGS/broker.log"; die "the broker did not start"; }
}
start_broker
wh_stop_pidfile "$PIDS/broker.pid" 20

say "loading $JOBS jobs (scripts/bench-queries.sql)..."
t0=$SECONDS
"${WH_DETACH[@]}" "${PSQL[@]}" -v jobs="$JOBS" -f scripts/bench-queries.sql \
    </dev/null >"$LOGS/load.log" 2>&1 &
echo $! >"$PIDS/psql.pid"
wait "$(cat "$PIDS/psql.pid")" || { cat "$LOGS/load.log" >&2; die "the load failed"; }
rm -f "$PIDS/psql.pid"
load_s=$((SECONDS - t0))
sizes=$("${PSQL[@]}" -tA -F' ' -c "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
      AND (c.relname LIKE 'jobs%' OR c.relname LIKE 'events%' OR c.relname LIKE 'attempts%')
    ORDER BY pg_relation_size(c.oid) DESC")
say "loaded in ${load_s} s; sizes:"
echo "$sizes" | sed 's/^/  /'

start_broker
say "timing $N requests per endpoint..."
printf '%s\n' "${TEMPLATES[@]}" >"$TMP/templates"
"${WH_DETACH[@]}" python3 - "$broker_url" "$WEBHOOK_API_KEYS" "$N" "$P99_MAX" "$TMP/templates" \
    "${PSQL[*]}" <<'EOF' >"$TMP/report" 2>"$LOGS/timer.log" &
import http.client, json, random, socket, subprocess, sys, time, urllib.parse
from datetime import datetime, timedelta, timezone

url, key, n, p99_max, templates, psql = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6].split(" ")
deadline = time.monotonic() + 1800

def sql(q):
    return [l.split("|") for l in subprocess.run(psql + ["-tA", "-c", q], check=True, capture_output=True, text=True).stdout.splitlines() if l]

subs = sql("SELECT id, event_name FROM subscriptions")
names = sorted({s[1] for s in subs})
jobs = sql("SELECT id, event_id FROM jobs TABLESAMPLE SYSTEM (0.05) LIMIT 2000")
dead = [r[0] for r in sql("SELECT id FROM jobs TABLESAMPLE SYSTEM (1) WHERE status = 'dead' LIMIT 5000")]
now = time.time()
t_lo, t_hi = sql("SELECT extract(epoch FROM min(created_at)), extract(epoch FROM max(created_at)) FROM jobs")[0]
t_lo, t_hi = float(t_lo), float(t_hi)
statuses = ["queued", "retrying", "delivered", "dead", "cancelled"]
rnd = random.Random(42)

def ts(sec):
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

def fill(path):
    s = rnd.choice(subs)
    j = rnd.choice(jobs)
    since = rnd.uniform(t_lo, t_hi)
    vals = {"sub": s[0], "sub_event": s[1], "event": rnd.choice(names), "status": rnd.choice(statuses),
            "job": j[0], "event_id": j[1], "since": ts(since),
            "until": ts(since + rnd.uniform(3600, 7 * 86400)), "t": ts(rnd.uniform(t_lo, t_hi)),
            "recent": ts(now - rnd.uniform(3600, 13 * 86400)),
            "recent29": ts(now - rnd.uniform(3600, 29 * 86400))}
    if "{dead_job}" in path:
        vals["dead_job"] = dead.pop()
    path, sep, body = path.partition(" <<")
    for k, v in vals.items():
        path = path.replace("{" + k + "}", urllib.parse.quote(v, safe=""))
        body = body.replace("{" + k + "}", v)
    return path + sep + body

conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
conn.connect()
conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def get(path):
    method, body = "GET", None
    if path.startswith("POST "):
        method, path = "POST", path[5:]
        path, _, body = path.partition(" <<")
    headers = {"Authorization": "Bearer " + key}
    if body:
        headers["Content-Type"] = "application/json"
    t = time.perf_counter()
    conn.request(method, path, body=body or None, headers=headers)
    r = conn.getresponse()
    answer = r.read()
    ms = (time.perf_counter() - t) * 1000
    if r.status not in ((200,) if method == "GET" else (200, 201, 202)):
        raise SystemExit(f"{method} {path}: {r.status} {answer[:300]!r}")
    return ms, answer

rows, failed = [], False
for line in open(templates):
    label, tpl = line.rstrip("\n").split("|", 1)
    follow = tpl.endswith(" +next")
    tpl = tpl[:-6] if follow else tpl
    lat = []
    for _ in range(n):
        if time.monotonic() > deadline:
            raise SystemExit("out of time")
        path = fill(tpl)
        if follow:
            _, body = get(path)
            nxt = json.loads(body)["next"]
            if nxt is None:
                continue
            path += ("&" if "?" in path else "?") + "cursor=" + nxt
        ms, _ = get(path)
        lat.append(ms)
    lat.sort()
    if not lat:
        rows.append(f"| {label} | 0 | | | |")
        continue
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    ok = p99 <= p99_max
    failed |= not ok
    rows.append(f"| {label} | {len(lat)} | {p50:.1f} | {p99:.1f}{'' if ok else ' **over**'} | {lat[-1]:.1f} |")
    print(f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr, flush=True)
print("| endpoint | requests | p50 ms | p99 ms | max ms |")
print("| --- | ---: | ---: | ---: | ---: |")
print("\n".join(rows))
sys.exit(1 if failed else 0)
EOF
echo $! >"$PIDS/timer.pid"
rc=0
wait "$(cat "$PIDS/timer.pid")" || rc=$?
rm -f "$PIDS/timer.pid"
echo
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
echo "Machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}; $JOBS jobs loaded in ${load_s} s; $N requests per endpoint, one connection, loopback."
echo
cat "$TMP/report"
echo
if ((rc != 0)); then
    tail -n 5 "$LOGS/timer.log" >&2
    say "FAILED: a p99 is over ${P99_MAX} ms or a request failed"
    exit 1
fi
say "done"
