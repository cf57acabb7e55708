#!/usr/bin/env bash
# `make run`: the whole system on this machine in the foreground. Starts a private Redis and
# PostgreSQL under .run/ (unless REDIS_URL / DATABASE_URL point elsewhere), then the broker,
# two workers and the reconciler loop, shows their logs, and stops everything on Ctrl-C or when
# one of them dies. Settings come from the environment, then .env, then the defaults below.
# Metrics: the broker serves /metrics on its API address; the workers and the reconciler get
# METRICS_LISTEN=127.0.0.1:<port> on consecutive ports from RUN_METRICS_PORT (worker-1, worker-2,
# reconciler; docs/monitoring/prometheus.yml scrapes exactly these).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

BUILD=$ROOT/build
WORKERS=2

say() { echo "run: $*"; }
die()
{
    echo "run: $*" >&2
    exit 1
}
# Hides the password of a URL (scheme://user:password@host...).
mask_url() { sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

bash scripts/deps.sh || die "required packages are missing (see above)"

wh_load_env
: "${RUN_REDIS_PORT:=6380}" "${RUN_PG_PORT:=5433}" "${BROKER_LISTEN:=127.0.0.1:8080}"
: "${RUN_METRICS_PORT:=9101}"
: "${RUN_DIR:=.run}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR=$ROOT/$RUN_DIR
export RUN_REDIS_PORT RUN_PG_PORT BROKER_LISTEN RUN_DIR
PIDS=$RUN_DIR/pids
LOGS=$RUN_DIR/logs

# Build when called without make (make run builds first).
if [[ ! -x "$BUILD/webhook-broker" || ! -x "$BUILD/webhook-worker" ]]; then
    say "binaries missing in $BUILD: running make all"
    make -C "$ROOT" all || die "the build failed (see above); nothing was started"
fi
for bin in webhook-broker webhook-worker; do
    [[ -x "$BUILD/$bin" ]] || die "missing binary $BUILD/$bin (make all did not produce it)"
done

# --- leftovers of a previous run that did not stop cleanly --------------------------------

# Stops the process recorded in FILE if it is alive and its command line contains PATTERN
# (a recycled PID belonging to something else is left alone). SIG as in wh_stop_pidfile.
stop_leftover()
{
    local file=$1 pattern=$2 sig=${3:-TERM} pid cmdline
    [[ -f "$file" ]] || return 0
    pid=$(head -n 1 "$file" | tr -d '[:space:]') || true
    if _wh_alive "$pid"; then
        cmdline=$(tr -s '\0 ' '  ' <"/proc/$pid/cmdline" 2>/dev/null) || true
        cmdline=${cmdline% }
        if [[ "$cmdline" == *"$pattern"* ]]; then
            say "stopping leftover process from a previous run: pid $pid ($cmdline)"
            wh_stop_pidfile "$file" 20 "$sig"
            return 0
        fi
    fi
    rm -f "$file"
}

if [[ -d "$PIDS" ]]; then
    for f in "$PIDS"/*.pid; do
        [[ -e "$f" ]] || continue
        name=$(basename "$f" .pid)
        stop_leftover "$f" "$BUILD/webhook-${name%%-*}"
    done
fi
# Without postgres.pid (stopped between its start and the PID file being written), the
# postmaster's own lock file says which process to stop.
pg_pid_from_lock()
{
    if [[ ! -f "$RUN_DIR/pg/postgres.pid" && -f "$RUN_DIR/pg/data/postmaster.pid" ]]; then
        head -n 1 "$RUN_DIR/pg/data/postmaster.pid" >"$RUN_DIR/pg/postgres.pid"
    fi
}

stop_leftover "$RUN_DIR/redis/redis.pid" redis-server
pg_pid_from_lock
stop_leftover "$RUN_DIR/pg/postgres.pid" "-D $RUN_DIR/pg/data" INT

# --- metrics ports ----------------------------------------------------------------------------

# worker-1, worker-2, ... then the reconciler, on consecutive loopback ports from
# RUN_METRICS_PORT; each must be free (a METRICS_LISTEN of .env is replaced: the processes
# cannot share one address).
have_reconciler=0
if [[ -x "$BUILD/webhook-reconciler" ]]; then have_reconciler=1; fi
metrics_count=$((WORKERS + have_reconciler))
if [[ ! "$RUN_METRICS_PORT" =~ ^[1-9][0-9]{0,4}$ ]] || ((RUN_METRICS_PORT < 1 ||
    RUN_METRICS_PORT + metrics_count - 1 > 65535)); then
    die "RUN_METRICS_PORT=$RUN_METRICS_PORT: not a port from which $metrics_count ports follow"
fi
if command -v ss >/dev/null 2>&1; then
    for ((p = RUN_METRICS_PORT; p < RUN_METRICS_PORT + metrics_count; p++)); do
        if [[ -n "$(ss -Hltn "( sport = :$p )" 2>/dev/null)" ]]; then
            die "port $p is in use; make run needs $metrics_count free ports from" \
                "RUN_METRICS_PORT=$RUN_METRICS_PORT for the metrics of the workers and the" \
                "reconciler: set RUN_METRICS_PORT (environment or .env) to another one"
        fi
    done
fi
metrics_addr() { echo "127.0.0.1:$((RUN_METRICS_PORT + $1))"; }

# --- clean-up on every exit -----------------------------------------------------------------

daemons=()      # names of started daemons; PID in $PIDS/<name>.pid
started_redis=0
started_pg=0
tail_pid=

cleanup()
{
    local rc=$? name stoppers=()
    trap '' INT TERM
    trap - EXIT
    say "stopping..."
    # The broker first (it stops accepting triggers and commits what it has), then the rest.
    if [[ ${#daemons[@]} -gt 0 ]]; then
        wh_stop_pidfile "$PIDS/broker.pid" 20
        for name in "${daemons[@]}"; do
            [[ "$name" == broker ]] && continue
            wh_stop_pidfile "$PIDS/$name.pid" 20 &
            stoppers+=($!)
        done
        [[ ${#stoppers[@]} -eq 0 ]] || wait "${stoppers[@]}" || true
    fi
    if ((started_redis)); then
        wh_stop_pidfile "$RUN_DIR/redis/redis.pid" 20
    fi
    if ((started_pg)); then
        pg_pid_from_lock
        wh_stop_pidfile "$RUN_DIR/pg/postgres.pid" 30 INT # fast shutdown
    fi
    if [[ -n "$tail_pid" ]]; then
        sleep 0.3 # let tail print the last lines
        kill "$tail_pid" 2>/dev/null || true
        wait "$tail_pid" 2>/dev/null || true
    fi
    say "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# --- servers ----------------------------------------------------------------------------------

mkdir -p "$PIDS" "$LOGS"
if [[ -z "${REDIS_URL:-}" ]]; then
    say "starting Redis on 127.0.0.1:$RUN_REDIS_PORT (data in $RUN_DIR/redis)"
    started_redis=1
    wh_start_redis "$RUN_DIR/redis" "$RUN_REDIS_PORT" || die "could not start Redis"
    export REDIS_URL=redis://127.0.0.1:$RUN_REDIS_PORT
fi
if [[ -z "${DATABASE_URL:-}" ]]; then
    say "starting PostgreSQL on 127.0.0.1:$RUN_PG_PORT (data in $RUN_DIR/pg)"
    started_pg=1
    wh_start_pg "$RUN_DIR/pg" "$RUN_PG_PORT" || die "could not start PostgreSQL"
    export DATABASE_URL=postgresql://webhooks@127.0.0.1:$RUN_PG_PORT/webhooks
fi

# --- API key ----------------------------------------------------------------------------------

# The management API requires a key. Without WEBHOOK_API_KEYS, make run creates a development
# key once (kept in $RUN_DIR/api-key, readable by this user only) and uses it every run.
KEY_FILE=$RUN_DIR/api-key
if [[ -z "${WEBHOOK_API_KEYS:-}" ]]; then
    if [[ ! -s "$KEY_FILE" ]]; then
        mkdir -p "$RUN_DIR"
        (umask 077 && printf 'dev-%s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" \
            >"$KEY_FILE")
        say "created a development API key in $KEY_FILE"
    fi
    WEBHOOK_API_KEYS=$(tr -d '[:space:]' <"$KEY_FILE")
    export WEBHOOK_API_KEYS
    api_key=$WEBHOOK_API_KEYS
else
    api_key='<your key>'
fi

# --- secrets key ------------------------------------------------------------------------------

# Signing secrets are stored encrypted with SECRETS_KEY, which the broker and workers require.
# Without one, make run creates a key once (32 random bytes as hex, in $RUN_DIR/secrets-key,
# mode 0600, never committed: .run/ is ignored) and uses it every run: losing it makes the
# stored secrets unreadable.
SECRETS_KEY_FILE=$RUN_DIR/secrets-key
if [[ -z "${SECRETS_KEY:-}" ]]; then
    if [[ ! -s "$SECRETS_KEY_FILE" ]]; then
        mkdir -p "$RUN_DIR"
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$SECRETS_KEY_FILE" &&
            echo >>"$SECRETS_KEY_FILE")
        say "created a secrets key in $SECRETS_KEY_FILE (keep it: stored secrets need it)"
    fi
    chmod 600 "$SECRETS_KEY_FILE"
    SECRETS_KEY=$(tr -d '[:space:]' <"$SECRETS_KEY_FILE")
    export SECRETS_KEY
fi

# --- SSRF guard -------------------------------------------------------------------------------

# The guard refuses loopback and private addresses, which are exactly what a developer's test
# receivers use: make run allows them unless WEBHOOK_ALLOW_PRIVATE_NETWORKS is set (in the
# environment or .env; an explicit 0 keeps the guard on).
if [[ -z "${WEBHOOK_ALLOW_PRIVATE_NETWORKS:-}" ]]; then
    export WEBHOOK_ALLOW_PRIVATE_NETWORKS=1
    guard_note="OFF for development: make run set WEBHOOK_ALLOW_PRIVATE_NETWORKS=1, so loopback
run:             and private webhook URLs are accepted (set it to 0 to run with the guard on)"
elif [[ "$WEBHOOK_ALLOW_PRIVATE_NETWORKS" =~ ^(1|true|yes|on)$ ]]; then
    guard_note="OFF (WEBHOOK_ALLOW_PRIVATE_NETWORKS=$WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
else
    guard_note="on: only public addresses${WEBHOOK_ALLOWED_CIDRS:+ and $WEBHOOK_ALLOWED_CIDRS} (WEBHOOK_ALLOW_PRIVATE_NETWORKS=$WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
fi

# --- daemons ----------------------------------------------------------------------------------

names=(broker)
for ((i = 1; i <= WORKERS; i++)); do names+=("worker-$i"); done
if ((have_reconciler)); then names+=(reconciler); fi

# Each daemon writes to its own log file; one tail shows them all, each line prefixed with the
# daemon's name. tail's header lines ("==> file <==", after a blank line) say which file the
# following lines come from. tail exits by itself if this script dies (--pid).
prefix_logs()
{
    local line name=log blank=0
    trap '' INT # keep showing the shutdown logs after Ctrl-C
    while IFS= read -r line; do
        if [[ "$line" =~ ^==\>\ .*/([^/]*)\.log\ \<==$ ]]; then
            name=${BASH_REMATCH[1]}
            blank=0
        elif [[ -z "$line" ]]; then
            blank=$((blank + 1)) # held back: it may be the blank line before a header
        else
            for (( ; blank > 0; blank--)); do echo "[$name]"; done
            printf '[%s] %s\n' "$name" "$line"
        fi
    done
}
logfiles=()
for name in "${names[@]}"; do
    : >"$LOGS/$name.log"
    logfiles+=("$LOGS/$name.log")
done
tail -n +1 -F --pid=$$ "${logfiles[@]}" 2>/dev/null > >(prefix_logs) &
tail_pid=$!


# Exits (through cleanup) when a started daemon or server is gone.
check_alive()
{
    local name pid rc
    for name in "${daemons[@]}"; do
        pid=$(cat "$PIDS/$name.pid")
        if ! _wh_alive "$pid"; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            say "$name (pid $pid) exited unexpectedly with status $rc; see $LOGS/$name.log"
            exit 1
        fi
    done
    if ((started_redis)) && ! _wh_alive "$(cat "$RUN_DIR/redis/redis.pid" 2>/dev/null)"; then
        say "Redis exited unexpectedly; see $RUN_DIR/redis/redis.log"
        exit 1
    fi
    if ((started_pg)) && ! _wh_alive "$(cat "$RUN_DIR/pg/postgres.pid" 2>/dev/null)"; then
        say "PostgreSQL exited unexpectedly; see $RUN_DIR/pg/postgres.log"
        exit 1
    fi
}

broker_url=http://$BROKER_LISTEN
broker_url=${broker_url/\/\/0.0.0.0:/\/\/127.0.0.1:}

wh_start_daemon broker "$BUILD/webhook-broker"
# The broker applies the schema migrations; start the others once it answers.
deadline=$((SECONDS + 30))
until wh_wait_http "$broker_url/healthz" 1 2>/dev/null; do
    check_alive
    ((SECONDS < deadline)) || die "the broker did not answer $broker_url/healthz within 30s"
done
for ((i = 1; i <= WORKERS; i++)); do
    wh_start_daemon "worker-$i" env "METRICS_LISTEN=$(metrics_addr $((i - 1)))" \
        "$BUILD/webhook-worker"
done
if ((have_reconciler)); then
    wh_start_daemon reconciler env "METRICS_LISTEN=$(metrics_addr "$WORKERS")" \
        "$BUILD/webhook-reconciler" --interval 60
fi

# The console and every /metrics address, for the summary below.
metrics_lines="run: metrics     $broker_url/metrics   (broker)"
for ((i = 1; i <= WORKERS; i++)); do
    metrics_lines+=$'\n'"run:             http://$(metrics_addr $((i - 1)))/metrics   (worker-$i)"
done
if ((have_reconciler)); then
    metrics_lines+=$'\n'"run:             http://$(metrics_addr "$WORKERS")/metrics   (reconciler)"
fi

cat <<EOF
run: ----------------------------------------------------------------------------------------
run: broker      $broker_url   (health: $broker_url/healthz, readiness: $broker_url/readyz)
run: console     $broker_url/   (open it in a browser and type the API key below)
$metrics_lines
run:             (Prometheus + Grafana: docs/monitoring/, README "Monitoring")
run: Redis       $(mask_url "$REDIS_URL")
run: PostgreSQL  $(mask_url "$DATABASE_URL")
run: processes   ${names[*]}   (PIDs in $PIDS)
run: logs        $LOGS/*.log   (shown below, prefixed with the process name)
run: API key     $api_key   (Authorization: Bearer ...; $KEY_FILE unless WEBHOOK_API_KEYS is set)
run: SSRF guard  $guard_note
run: try it:
  curl -sS -X POST $broker_url/api/v0/webhooks -H "Authorization: Bearer $api_key" \\
       -H 'Content-Type: application/json' \\
       -d '{"eventName":"book.created","webhookUrl":"http://127.0.0.1:9000/hooks"}'
  curl -sS -X POST $broker_url/api/v0/trigger-event/book.created -H "Authorization: Bearer $api_key" \\
       -H 'Content-Type: application/json' -d '{"id":1,"title":"Dune"}'
run: stop with Ctrl-C
run: ----------------------------------------------------------------------------------------
EOF
while :; do
    check_alive
    sleep 1 &
    wait $! || true # returns at once when INT/TERM arrives, so the trap runs without delay
done
