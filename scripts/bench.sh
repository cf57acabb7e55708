#!/usr/bin/env bash
# `make bench`: end-to-end throughput and latency of the broker on this machine, with durable
# settings. Starts a private Redis and PostgreSQL in a temporary directory, the broker, two
# workers and the bench receiver on free loopback ports, runs five scenarios with
# build/bench/loadgen, prints a Markdown table, and stops everything by PID on exit.
#
#   (a) 20000 triggers, 1 subscriber, as fast as accepted
#   (b) 2000 triggers, 10 subscribers, as fast as accepted
#   (c) 500 triggers/s for 20 s, 1 subscriber
#   (d) 200 triggers, 100 subscribers, as fast as accepted (fan-out)
#   (e) 20 triggers, 1000 subscribers, as fast as accepted (fan-out)
#
# Environment: WH_BUILD_DIR (set by make; default ./build), BENCH_QUICK=1 (tiny versions of the
# scenarios, a smoke test), BENCH_BIG=1 (make bench-big: scenario a, then BENCH_BIG_JOBS finished
# jobs, default 10 million, loaded into the log, then scenario a again), BENCH_KEEP=1 (keep the temporary directory with the logs),
# WH_PG_OPTS (extra PostgreSQL settings, see scripts/lib.sh; empty by default: durable),
# BENCH_SCENARIOS="d e" (run only the scenarios with these labels, to compare builds quickly),
# BENCH_CLUSTER=1 (a 3-master Redis Cluster without replicas instead of one Redis, the same
# persistence settings on each master; QUEUE_PARTITIONS=BENCH_PARTITIONS, default 16),
# BENCH_CONCURRENCY (the load generator's requests in flight, 1 to 4096, default 64).
# Exit status 0 when every scenario ran and lost nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

BUILD=${WH_BUILD_DIR:-$ROOT/build}
WORKERS=2
QUICK=${BENCH_QUICK:-0}
CONCURRENCY=${BENCH_CONCURRENCY:-64}
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] && ((CONCURRENCY >= 1 && CONCURRENCY <= 4096)) ||
    { echo "bench: BENCH_CONCURRENCY must be 1 to 4096 (got \"$CONCURRENCY\")" >&2; exit 2; }

say() { echo "bench: $*"; }
die()
{
    echo "bench: $*" >&2
    exit 1
}

# label | triggers | subscribers | rate (0 = as fast as accepted) | duration s (paced only)
BIG=${BENCH_BIG:-0}
BIG_JOBS=${BENCH_BIG_JOBS:-10000000}
if [[ "$BIG" == 1 ]]; then
    # make bench-big: scenario a on the empty log, then BIG_JOBS finished jobs loaded, then a
    # again: the ratio of the two is what a grown log costs.
    SCENARIOS=("a|20000|1|0|0" "load" "a-big|20000|1|0|0")
    LG_WAIT=120 LG_STALL=30 LG_MAX=600
elif [[ "$QUICK" == 1 ]]; then
    SCENARIOS=("a|500|1|0|0" "b|100|10|0|0" "c|0|1|100|3" "d|10|100|0|0" "e|2|1000|0|0")
    LG_WAIT=30 LG_STALL=10 LG_MAX=120
else
    SCENARIOS=("a|20000|1|0|0" "b|2000|10|0|0" "c|0|1|500|20" "d|200|100|0|0" "e|20|1000|0|0")
    LG_WAIT=120 LG_STALL=30 LG_MAX=600
fi
if [[ -n "${BENCH_SCENARIOS:-}" ]]; then
    only=()
    for spec in "${SCENARIOS[@]}"; do
        [[ " $BENCH_SCENARIOS " == *" ${spec%%|*} "* ]] && only+=("$spec")
    done
    ((${#only[@]})) || die "BENCH_SCENARIOS=$BENCH_SCENARIOS names no scenario"
    SCENARIOS=("${only[@]}")
fi
MAX_SEQ=100000 # receiver: highest seq tracked (>= the largest scenario)
PATHS=1000     # receiver: paths /r/0 .. /r/999 (>= the largest K)

for bin in webhook-broker webhook-worker bench/receiver bench/loadgen; do
    [[ -x "$BUILD/$bin" ]] || die "missing $BUILD/$bin: run make bench (or make all) first"
done
command -v python3 >/dev/null || die "python3 is needed to find free ports"

# Sets VAR to a TCP port free on 127.0.0.1 right now and not handed out before. Usage: free_port VAR
USED_PORTS=" "
free_port()
{
    local p
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
            return 1
        if [[ "$USED_PORTS" != *" $p "* ]]; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    return 1
}

# --- clean-up on every exit -----------------------------------------------------------------

TMP=$(mktemp -d /tmp/wh-bench.XXXXXX)
chmod 0711 "$TMP" # PostgreSQL runs as user postgres when we are root: it must reach $TMP/pg
PIDS=$TMP/pids
LOGS=$TMP/logs
mkdir -p "$PIDS" "$LOGS"
daemons=() # names; PID in $PIDS/<name>.pid
started_redis=0
CLUSTER=${BENCH_CLUSTER:-0}
redis_dirs=("$TMP/redis") # one per redis-server started (three for BENCH_CLUSTER=1)
started_pg=0

cleanup()
{
    local rc=$? name stoppers=()
    trap '' INT TERM
    trap - EXIT
    say "stopping..."
    wh_stop_pidfile "$PIDS/loadgen.pid" 5
    wh_stop_pidfile "$PIDS/receiver.pid" 5
    # The broker first (it stops accepting triggers), then the workers in parallel.
    wh_stop_pidfile "$PIDS/broker.pid" 20
    for name in "${daemons[@]}"; do
        [[ "$name" == broker || "$name" == receiver ]] && continue
        wh_stop_pidfile "$PIDS/$name.pid" 20 &
        stoppers+=($!)
    done
    [[ ${#stoppers[@]} -eq 0 ]] || wait "${stoppers[@]}" || true
    if ((started_redis)); then
        for d in "${redis_dirs[@]}"; do wh_stop_pidfile "$d/redis.pid" 20; done
    fi
    ((started_pg)) && wh_stop_pidfile "$TMP/pg/postgres.pid" 30 INT # fast shutdown
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        say "kept $TMP (logs in $LOGS)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# Returns 1 (and says which, with its last log lines) when a started process is gone.
check_alive()
{
    local name pid ok=0
    for name in "${daemons[@]}"; do
        pid=$(cat "$PIDS/$name.pid")
        if ! _wh_alive "$pid"; then
            say "$name (pid $pid) is not running any more"
            _wh_log_tail "$LOGS/$name.log"
            ok=1
        fi
    done
    if ((started_redis)); then
        for d in "${redis_dirs[@]}"; do
            if ! _wh_alive "$(cat "$d/redis.pid" 2>/dev/null)"; then
                say "Redis ($d) is not running any more"
                ok=1
            fi
        done
    fi
    if ((started_pg)) && ! _wh_alive "$(cat "$TMP/pg/postgres.pid" 2>/dev/null)"; then
        say "PostgreSQL is not running any more"
        ok=1
    fi
    return $ok
}

# --- machine and servers ----------------------------------------------------------------------

cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
machine="$(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr)"
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
say "machine: $machine, ${mem_total:-? GiB} RAM"
say "temporary directory: $TMP"

redis_port='' pg_port='' broker_port=''
free_port redis_port || die "no free port"
free_port pg_port || die "no free port"
free_port broker_port || die "no free port"

if [[ "$CLUSTER" == 1 ]]; then
    # Three masters, no replicas (a replica would only add replication work on the same two
    # cores), every slot assigned by redis-cli --cluster create.
    # A cluster node also listens on its port + 10000 (the cluster bus): both must be free,
    # so the ports are picked below 55536.
    redis_ports=()
    redis_dirs=()
    extra_port=
    for i in 1 2 3; do
        for _ in $(seq 50); do
            free_port extra_port || die "no free port" # (free_port's own local is named p)
            ((extra_port < 55536)) && python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
                "$((extra_port + 10000))" 2>/dev/null && break
            extra_port=
        done
        [[ -n "$extra_port" ]] || die "no free port pair for a cluster node"
        redis_ports+=("$extra_port")
    done
    redis_port=${redis_ports[0]}
    started_redis=1
    for i in 0 1 2; do
        redis_dirs+=("$TMP/redis-$i")
        say "starting Redis Cluster node $((i + 1)) of 3 on 127.0.0.1:${redis_ports[$i]}"
        wh_start_redis "$TMP/redis-$i" "${redis_ports[$i]}" --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 ||
            die "could not start Redis"
    done
    redis-cli --cluster create "${redis_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 \
        --cluster-yes >"$LOGS/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed"
    deadline=$((SECONDS + 30))
    until redis-cli -p "$redis_port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
        ((SECONDS < deadline)) || die "the Redis Cluster did not reach cluster_state:ok in 30 s"
        sleep 0.2
    done
    export QUEUE_PARTITIONS=${BENCH_PARTITIONS:-16}
else
    say "starting Redis on 127.0.0.1:$redis_port"
    started_redis=1
    wh_start_redis "$TMP/redis" "$redis_port" || die "could not start Redis"
fi
redis_settings=
for key in appendonly appendfsync save maxmemory-policy; do
    value=$(redis-cli -h 127.0.0.1 -p "$redis_port" config get "$key" | sed -n 2p)
    redis_settings+="${redis_settings:+ }$key=${value:-\"\"}"
done
say "Redis $(redis-server --version | awk '{print $3}'): $redis_settings"

say "starting PostgreSQL on 127.0.0.1:$pg_port${WH_PG_OPTS:+ (WH_PG_OPTS=$WH_PG_OPTS)}"
started_pg=1
wh_start_pg "$TMP/pg" "$pg_port" || die "could not start PostgreSQL"
pg_settings=$("$(wh_pg_bindir)/psql" -X -tA -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -F= -c "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN
            ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
             'shared_buffers', 'max_connections', 'server_version') ORDER BY name" |
    paste -sd ' ')
say "PostgreSQL: $pg_settings"

if [[ "$CLUSTER" == 1 ]]; then
    REDIS_URL=redis-cluster://$(IFS=,; echo "${redis_ports[*]/#/127.0.0.1:}")
    export REDIS_URL
    redis_settings+=" cluster=3 masters, QUEUE_PARTITIONS=$QUEUE_PARTITIONS"
else
    export REDIS_URL=redis://127.0.0.1:$redis_port
fi
export DATABASE_URL=postgresql://webhooks@127.0.0.1:$pg_port/webhooks
export WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 LOG_LEVEL=warn
# A throw-away API key for this run: the broker requires one, the load generator sends it.
WEBHOOK_API_KEYS="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export WEBHOOK_API_KEYS
SECRETS_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export SECRETS_KEY
broker_url=http://127.0.0.1:$broker_port

say "starting the broker on 127.0.0.1:$broker_port"
BROKER_LISTEN=127.0.0.1:$broker_port wh_start_daemon broker "$BUILD/webhook-broker"
deadline=$((SECONDS + 30))
until wh_wait_http "$broker_url/readyz" 1 2>/dev/null; do
    check_alive || die "the broker did not start"
    ((SECONDS < deadline)) || die "the broker did not answer $broker_url/readyz within 30s"
done
for ((i = 1; i <= WORKERS; i++)); do
    wh_start_daemon "worker-$i" "$BUILD/webhook-worker"
done

# The receiver exits by itself after the longest the scenarios can take.
rcv_max=$((${#SCENARIOS[@]} * (LG_MAX + 10) + 60))
: >"$TMP/receiver.out"
"${WH_DETACH[@]}" "$BUILD/bench/receiver" --port 0 --paths "$PATHS" --max-seq "$MAX_SEQ" \
    --max-seconds "$rcv_max" </dev/null >"$TMP/receiver.out" 2>>"$LOGS/receiver.log" &
echo $! >"$PIDS/receiver.pid"
daemons+=(receiver)
rcv_port=
for _ in $(seq 50); do
    rcv_port=$(awk '/^port / {print $2; exit}' "$TMP/receiver.out" || true)
    [[ -n "$rcv_port" ]] && break
    sleep 0.1
done
[[ -n "$rcv_port" ]] || { check_alive || true; die "the receiver did not print its port"; }
say "receiver on 127.0.0.1:$rcv_port; $WORKERS workers started"
sleep 0.5
check_alive || die "a process died during start-up"

# --- scenarios ----------------------------------------------------------------------------------

rows=()
cpu_rows=()
# make bench-big: BIG_JOBS jobs (with their events and attempts, scripts/bench-queries.sql) all
# finished, vacuumed and analyzed, loaded while the broker and workers are idle.
load_big()
{
    local psql=("$(wh_pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL") t0=$SECONDS
    echo
    say "loading $BIG_JOBS finished jobs (scripts/bench-queries.sql), then VACUUM ANALYZE..."
    "${psql[@]}" -v jobs="$BIG_JOBS" -f scripts/bench-queries.sql >"$LOGS/load.log" 2>&1 &&
        "${psql[@]}" -c "UPDATE jobs SET status = 'delivered', next_attempt_at = NULL
                         WHERE status IN ('queued', 'retrying') AND subscription_id IN
                         (SELECT id FROM subscriptions WHERE event_name LIKE 'bench.ev.%')" \
            -c "VACUUM ANALYZE jobs" >>"$LOGS/load.log" 2>&1 &&
        # Once more, now that the indexes are back: while they were being rebuilt, the broker's
        # metrics sample scanned jobs for up to its 25 s (decision 51), holding back the horizon
        # under which the first VACUUM marks pages all-visible, and the next samples then fetched
        # the heap for most dead jobs (88,000 of 200,000), about 2.6 s every 5 s during a-big.
        "${psql[@]}" -c "VACUUM jobs" >>"$LOGS/load.log" 2>&1 ||
        { sed 's/^/  /' "$LOGS/load.log" >&2; say "the load failed"; return 1; }
    say "loaded in $((SECONDS - t0)) s: $("${psql[@]}" -tA -c "SELECT count(*) || ' jobs, ' ||
        pg_size_pretty(pg_total_relation_size('jobs')) || ' with indexes' FROM jobs")"
}
failed=0
# CPU seconds used so far by each process kind (scripts/bench-cpu.py), before and after each
# scenario; PostgreSQL's is the postmaster's whole tree. The "before" snapshot is taken by the
# load generator between its registrations and its first trigger (--before-triggers), so the
# K subscriptions' creation is not counted as the cost of the deliveries.
cpu_snap_cmd()
{
    local workers=() i
    for ((i = 1; i <= WORKERS; i++)); do workers+=("$(cat "$PIDS/worker-$i.pid")"); done
    printf '%q ' python3 "$ROOT/scripts/bench-cpu.py" snap "$1" "broker=$(cat "$PIDS/broker.pid")" \
        "workers=$(IFS=,; echo "${workers[*]}")" "redis=$(for d in "${redis_dirs[@]}"; do cat "$d/redis.pid"; done | paste -sd,)" \
        "postgres=$(head -n1 "$TMP/pg/postgres.pid")+" "receiver=$(cat "$PIDS/receiver.pid")"
}
cpu_snap()
{
    eval "$(cpu_snap_cmd "$1")"
}
for spec in "${SCENARIOS[@]}"; do
    if [[ "$spec" == load ]]; then
        load_big || { failed=1; break; }
        continue
    fi
    IFS='|' read -r label events subs rate duration <<<"$spec"
    if [[ "$rate" == 0 ]]; then
        desc="$label: $events triggers, K=$subs, max rate"
    else
        desc="$label: $rate triggers/s for $duration s, K=$subs"
    fi
    echo
    say "scenario $desc"
    out=$TMP/scenario-$label.out
    rc=0
    # In the background so that a signal to this script runs the trap at once (the load
    # generator stops by itself on SIGINT/SIGTERM and after --max-seconds).
    "$BUILD/bench/loadgen" --broker "$broker_url" --api-key "$WEBHOOK_API_KEYS" \
        --receiver-base "http://127.0.0.1:$rcv_port" \
        --subscribers "$subs" --events "$events" --rate "$rate" --duration "$duration" \
        --concurrency "$CONCURRENCY" \
        --event-name "bench.$label.$(date +%s).$$" --label "$label" \
        --wait-seconds "$LG_WAIT" --stall-seconds "$LG_STALL" --max-seconds "$LG_MAX" \
        --before-triggers "$(cpu_snap_cmd "$TMP/cpu-$label.before")" \
        >"$out" 2>"$TMP/scenario-$label.err" </dev/null &
    echo $! >"$PIDS/loadgen.pid"
    wait $! || rc=$?
    rm -f "$PIDS/loadgen.pid"
    cat "$out"
    [[ -s "$TMP/scenario-$label.err" ]] && sed 's/^/  loadgen: /' "$TMP/scenario-$label.err" >&2
    result=$(grep -m1 '^RESULT ' "$out" || true)
    if [[ -z "$result" ]]; then
        rows+=("| $desc | failed (loadgen exit $rc) | | | | | | | |")
        failed=1
    else
        declare -A r=()
        for kv in ${result#RESULT }; do
            r[${kv%%=*}]=${kv#*=}
        done
        rows+=("| $desc | ${r[accepted_per_s]:-?} | ${r[trig_p99_ms]:-?} | ${r[deliveries_per_s]:-?} | ${r[p50_ms]:-?} | ${r[p99_ms]:-?} | ${r[max_ms]:-?} | ${r[lost]:-?} | ${r[duplicates]:-?} |")
        cpu_snap "$TMP/cpu-$label.after"
        declare -A c=()
        for kv in $(python3 scripts/bench-cpu.py diff "$TMP/cpu-$label.before" \
            "$TMP/cpu-$label.after" "${r[unique]:-0}"); do
            c[${kv%%=*}]=${kv#*=}
        done
        cpu_rows+=("| $label | ${r[unique]:-?} | ${c[broker]:-?} | ${c[workers]:-?} | ${c[redis]:-?} | ${c[postgres]:-?} | ${c[kernel]:-?} | ${c[total]:-?} | ${c[receiver]:-?} | ${c[idle]:-?} / ${c[steal]:-?} |")
        unset c
        [[ "$rc" == 0 ]] || failed=1
        unset r
    fi
    if ! check_alive; then
        failed=1
        say "a process died: the remaining scenarios are skipped"
        break
    fi
done

# --- PostgreSQL's own commit latency ----------------------------------------------------------

# The floor under trigger-to-receipt latency: one-row INSERT transactions committed by
# pgbench at the paced scenario's rate, on the same server with the same settings, after the
# scenarios (so on the same grown tables and WAL). The p99 of the logged transaction times.
pg_rate=500 pg_seconds=10
[[ "$QUICK" == 1 ]] && pg_rate=100 pg_seconds=3
pg_commit=
if ((failed == 0)) && [[ -z "${BENCH_SCENARIOS:-}" || " $BENCH_SCENARIOS " == *" c "* ]]; then
    say "PostgreSQL alone: one-row INSERT commits at $pg_rate/s for $pg_seconds s (pgbench)"
    echo "CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());" |
        "$(wh_pg_bindir)/psql" -X -q "$DATABASE_URL" >/dev/null
    echo "INSERT INTO bench_commit DEFAULT VALUES;" >"$TMP/pgbench.sql"
    mkdir -p "$TMP/pgbench"
    if (cd "$TMP/pgbench" && timeout 60 "$(wh_pg_bindir)/pgbench" -n -c 4 -j 2 -R "$pg_rate" \
        -T "$pg_seconds" -l -f "$TMP/pgbench.sql" "$DATABASE_URL" >"$TMP/pgbench.out" 2>&1); then
        # log lines: client transaction µs script epoch_s epoch_µs schedule_lag_µs
        pg_commit=$(cat "$TMP"/pgbench/pgbench_log.* | awk '{print $3}' | sort -n |
            awk '{v[NR] = $1} END {if (NR) printf "%d commits, p50 %.2f ms, p99 %.2f ms", NR, v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000}')
    else
        say "pgbench failed:"
        sed 's/^/  /' "$TMP/pgbench.out" >&2
    fi
    "$(wh_pg_bindir)/psql" -X -q "$DATABASE_URL" -c "DROP TABLE IF EXISTS bench_commit" >/dev/null || true
fi

# --- report -----------------------------------------------------------------------------------

echo
for name in "${daemons[@]}"; do
    if [[ -s "$LOGS/$name.log" ]]; then
        say "$name logged $(wc -l <"$LOGS/$name.log") lines at LOG_LEVEL=warn; the last ones:"
        tail -n 5 "$LOGS/$name.log" | sed 's/^/  /'
    fi
done
echo
note=
[[ "$QUICK" == 1 ]] && note=" BENCH_QUICK=1: a smoke test, not a measurement."
echo "Machine: $machine, ${mem_total:-? GiB} RAM. Redis: $redis_settings; PostgreSQL: $pg_settings;" \
    "$WORKERS workers; loopback only.$note"
echo
echo "Answer p99: the trigger's HTTP answer (202, after the commit); p50/p99/max: trigger to receipt."
echo
echo "| scenario | accepted triggers/s | answer p99 ms | deliveries/s | p50 ms | p99 ms | max ms | lost | duplicates |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
[[ -n "$pg_commit" ]] && echo "PostgreSQL alone at $pg_rate commits/s (pgbench, one-row INSERT): $pg_commit." && echo
echo "CPU µs per delivery, from /proc (utime + stime; PostgreSQL: the postmaster and all its"
echo "processes; kernel: the kworker/jbd2 threads, machine-wide); total leaves out the receiver."
echo "Idle / steal: the machine's idle time and the time its hypervisor gave to other guests, in %"
echo "of all CPUs over the same window; runs with more steal are slower (scripts/bench-cpu.py)."
echo
echo "| scenario | deliveries | broker | workers | Redis | PostgreSQL | kernel | total | receiver | idle / steal % |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${cpu_rows[@]}"
echo
if ((failed)); then
    say "FAILED: a scenario lost deliveries or did not complete (see above)"
    exit 1
fi
say "done"
