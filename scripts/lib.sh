# shellcheck shell=bash
# Shared helpers for scripts/run.sh and scripts/bench.sh: start private Redis and PostgreSQL
# servers on loopback, stop processes by PID file, load .env, wait for HTTP endpoints.
# Source it; it sets no shell options. Functions return non-zero and print to stderr on error.
#
# Servers are started in their own session (setsid) so that a Ctrl-C in the terminal reaches
# only the calling script, which then stops everything in order from its trap. Start your own
# background processes the same way: "${WH_DETACH[@]}" cmd args... &   ($! is cmd's PID).
# With job control on (interactive shell) background jobs get their own process group anyway,
# and setsid would fork, so WH_DETACH is empty there.
if [[ $- == *m* ]]; then
    WH_DETACH=()
else
    WH_DETACH=(setsid)
fi

# Prints the directory holding the PostgreSQL server binaries (initdb, postgres, pg_isready...).
wh_pg_bindir()
{
    pg_config --bindir
}

# Runs CMD as the postgres user when root (PostgreSQL refuses to run as root), else directly.
wh_as_pg_user()
{
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Time limits below are "at least N seconds": $SECONDS ticks in whole seconds, hence the + 1.

# True when PID names a live process (a zombie counts as dead).
_wh_alive()
{
    local pid=$1 state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ "$state" != "Z" ]]
}

# Prints the last lines of a log file to stderr, indented.
_wh_log_tail()
{
    local file=$1
    [[ -f "$file" ]] || return 0
    echo "---- last lines of $file ----" >&2
    tail -n 20 "$file" | sed 's/^/  /' >&2
}

# Stops the process whose PID is in FILE: SIGNAL (default TERM), up to TIMEOUT_S seconds (default
# 20), then SIGKILL, and waits until it is gone. Removes FILE. Always returns 0.
# Usage: wh_stop_pidfile FILE [timeout_s] [signal]
wh_stop_pidfile()
{
    local file=$1 timeout=${2:-20} sig=${3:-TERM} pid deadline
    [[ -f "$file" ]] || return 0
    pid=$(head -n 1 "$file" 2>/dev/null | tr -d '[:space:]') || true
    if _wh_alive "$pid"; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        deadline=$((SECONDS + timeout + 1))
        while _wh_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if _wh_alive "$pid"; then
            echo "wh_stop_pidfile: pid $pid ($file) still running after ${timeout}s: SIGKILL" >&2
            kill -s KILL "$pid" 2>/dev/null || true
            while _wh_alive "$pid"; do sleep 0.1; done
        fi
    fi
    # Reap it when it is our child (no-op otherwise).
    if [[ "$pid" =~ ^[0-9]+$ ]]; then
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    return 0
}

# Starts redis-server on 127.0.0.1:PORT with its data, log and PID file in DIR, in the
# background, and waits until it answers PING. Extra arguments go to redis-server.
# Usage: wh_start_redis DIR PORT [redis-server args...]
wh_start_redis()
{
    local dir=$1 port=$2 pid deadline info
    shift 2
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1 # redis chdirs to --dir: keep every path absolute
    # Start-up errors before the log file is open go to stderr: append them to the same log.
    # shellcheck disable=SC2094
    "${WH_DETACH[@]}" redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
        --daemonize no --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" \
        </dev/null >>"$dir/redis.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/redis.pid"
    deadline=$((SECONDS + 10 + 1))
    while ((SECONDS < deadline)); do
        if ! _wh_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            echo "wh_start_redis: redis-server on port $port exited during start-up" >&2
            _wh_log_tail "$dir/redis.log"
            rm -f "$dir/redis.pid"
            return 1
        fi
        if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]; then
            # Make sure the PONG came from our server, not another one already on the port.
            info=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r') || true
            if [[ "$info" == *"process_id:$pid"* ]]; then
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "wh_start_redis: redis-server on port $port did not answer PING within 10s" >&2
    _wh_log_tail "$dir/redis.log"
    wh_stop_pidfile "$dir/redis.pid" 5
    return 1
}

# Creates (first time) and starts a PostgreSQL cluster in DIR/data listening on
# 127.0.0.1:PORT (socket in DIR/sock), waits until it accepts connections, and creates the
# role and database "webhooks" if missing. DIR/postgres.pid gets the postmaster's PID;
# DIR/postgres.log its output. Extra server settings come from WH_PG_OPTS ("-c fsync=off").
# Stop it with: wh_stop_pidfile DIR/postgres.pid 30 INT   (INT = fast shutdown).
# Usage: wh_start_pg DIR PORT
wh_start_pg()
{
    local dir=$1 port=$2 bindir root=0 pg_opts=() old_pid launcher pid status deadline
    local psql exists
    bindir=$(wh_pg_bindir) || { echo "wh_start_pg: pg_config not found" >&2; return 1; }
    [[ "$(id -u)" -eq 0 ]] && root=1
    mkdir -p "$dir/data" "$dir/sock" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    if ((root)); then
        chmod a+x "$dir" || return 1
        chown postgres: "$dir/sock" || return 1
        if [[ ! -f "$dir/data/PG_VERSION" ]]; then
            chown -R postgres: "$dir/data" || return 1
        fi
        if ! runuser -u postgres -- test -w "$dir/data"; then
            local up=$dir/data # find the topmost directory postgres cannot enter
            while [[ "$up" != / ]] && ! runuser -u postgres -- test -x "$(dirname "$up")"; do
                up=$(dirname "$up")
            done
            echo "wh_start_pg: user postgres cannot reach $dir/data: $up is not" \
                "searchable by others (chmod o+x it, or use a directory elsewhere)" >&2
            return 1
        fi
    fi
    chmod 0700 "$dir/data" || return 1

    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        if ! (cd "$dir" && wh_as_pg_user "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
            -E UTF8 --locale=C) >"$dir/initdb.log" 2>&1; then
            echo "wh_start_pg: initdb failed in $dir/data" >&2
            _wh_log_tail "$dir/initdb.log"
            return 1
        fi
    fi

    # A postmaster.pid left by a crashed server is fine (postgres checks it itself), but one
    # whose server still runs means the cluster is already up.
    old_pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null | tr -d '[:space:]') || true
    if _wh_alive "$old_pid"; then
        echo "wh_start_pg: a server already runs on $dir/data (pid $old_pid)" >&2
        return 1
    fi

    if [[ -n "${WH_PG_OPTS:-}" ]]; then
        read -ra pg_opts <<<"$WH_PG_OPTS"
    fi
    local cmd=("$bindir/postgres" -D "$dir/data" -p "$port" -k "$dir/sock"
        -c listen_addresses=127.0.0.1 -c "unix_socket_directories=$dir/sock" "${pg_opts[@]}")
    if ((root)); then
        (cd "$dir" && exec "${WH_DETACH[@]}" runuser -u postgres -- "${cmd[@]}") \
            </dev/null >>"$dir/postgres.log" 2>&1 &
    else
        (cd "$dir" && exec "${WH_DETACH[@]}" "${cmd[@]}") </dev/null >>"$dir/postgres.log" 2>&1 &
    fi
    launcher=$!
    rm -f "$dir/postgres.pid"

    # The postmaster writes its PID to the first line of postmaster.pid and "ready" to the
    # 8th once it accepts connections.
    deadline=$((SECONDS + 30 + 1))
    pid=
    while ((SECONDS < deadline)); do
        if [[ -z "$pid" ]]; then
            pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null | tr -d '[:space:]') || true
            if _wh_alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres ]]; then
                echo "$pid" >"$dir/postgres.pid"
            else
                pid=
            fi
        fi
        if [[ -z "$pid" ]] && ! _wh_alive "$launcher"; then
            break
        fi
        if [[ -n "$pid" ]]; then
            _wh_alive "$pid" || break
            status=$(sed -n 8p "$dir/data/postmaster.pid" 2>/dev/null | tr -d '[:space:]') || true
            if [[ "$status" == ready ]] &&
                "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 2>/dev/null; then
                break
            fi
        fi
        sleep 0.1
    done
    if [[ -z "$pid" ]] || ! _wh_alive "$pid" || [[ "$status" != ready ]] ||
        ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 2>/dev/null; then
        echo "wh_start_pg: PostgreSQL on port $port did not become ready" >&2
        _wh_log_tail "$dir/postgres.log"
        if [[ -n "$pid" ]]; then
            wh_stop_pidfile "$dir/postgres.pid" 10 INT
        else
            kill "$launcher" 2>/dev/null || true
        fi
        wait "$launcher" 2>/dev/null || true
        return 1
    fi

    psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
    exists=$("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'webhooks'") || return 1
    if [[ "$exists" != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE webhooks LOGIN" || return 1
    fi
    exists=$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'webhooks'") || return 1
    if [[ "$exists" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE webhooks OWNER webhooks" || return 1
    fi
    return 0
}

# Exports each KEY=VALUE line of ./.env whose KEY is not set in the environment yet (the
# environment wins). Blank lines and # comments are skipped, an "export " prefix and matching
# surrounding quotes are removed, " #..." after an unquoted value is a comment. Nothing is
# evaluated.
wh_load_env()
{
    local line key value lineno=0
    [[ -f .env ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        lineno=$((lineno + 1))
        line=${line%$'\r'}
        line=${line#"${line%%[![:space:]]*}"} # trim leading blanks
        [[ -z "$line" || "$line" == \#* ]] && continue
        [[ "$line" == "export "* ]] && line=${line#export }
        if [[ ! "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
            echo "wh_load_env: .env line $lineno ignored (not KEY=VALUE)" >&2
            continue
        fi
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        if [[ "$value" =~ ^\"(.*)\"[[:space:]]*$ || "$value" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
            value=${BASH_REMATCH[1]}
        else
            value=${value%%[[:space:]]#*}
            value=${value%"${value##*[![:space:]]}"} # trim trailing blanks
        fi
        [[ -n "${!key+x}" ]] && continue
        export "$key=$value"
    done <.env
}

# Polls URL until it answers 200, for up to TIMEOUT_S seconds (default 30).
# Usage: wh_wait_http URL [timeout_s]
wh_wait_http()
{
    local url=$1 timeout=${2:-30} deadline code
    deadline=$((SECONDS + timeout + 1))
    while :; do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
        [[ "$code" == 200 ]] && return 0
        ((SECONDS < deadline)) || break
        sleep 0.2
    done
    echo "wh_wait_http: $url did not answer 200 within ${timeout}s (last status: ${code:-none})" >&2
    return 1
}

# wh_start_daemon NAME CMD...: starts CMD in its own session (WH_DETACH) with its output in
# $LOGS/NAME.log and its PID in $PIDS/NAME.pid, and adds NAME to the caller's daemons array.
# LOGS, PIDS and daemons are the caller's (run.sh, bench.sh).
wh_start_daemon()
{
    local name=$1
    shift
    "${WH_DETACH[@]}" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$PIDS/$name.pid"
    daemons+=("$name")
}
