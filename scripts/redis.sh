#!/usr/bin/env bash
# A throwaway Redis for tests and local development: `scripts/redis.sh start|stop|status`.
#
# Listens on 127.0.0.1:${ROOST_REDIS_PORT:-6390} (not 6379, so it never clashes with a system
# Redis), keeps its pidfile and log under the git-ignored target/redis/, and persists nothing
# (`--save ''`, no AOF): every start is empty. `start` installs redis-server with apt-get when it
# is missing (CI runs as root on a fresh machine), is a no-op when it is already running, and
# returns only once the server answers PING. Tests find it at redis://127.0.0.1:<port>
# (ROOST_REDIS_URL overrides that in the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${ROOST_REDIS_PORT:-6390}"
DIR="$PWD/target/redis/$PORT"
PIDFILE="$DIR/redis.pid"
LOGFILE="$DIR/redis.log"

# Answers 0 when something on the port replies +PONG to a PING.
ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]
    else
        # No client: speak RESP over bash's /dev/tcp.
        (
            exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 reply <&3 || exit 1
            [ "${reply%$'\r'}" = "+PONG" ]
        ) 2>/dev/null
    fi
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    echo "redis-server not found; installing it with apt-get" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: installing redis-server needs root (apt-get install redis-server)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
    # The Debian package may start a system service on 6379; ours is separate, leave it alone.
}

start() {
    if pid="$(running_pid)"; then
        if ping; then
            echo "redis already running on 127.0.0.1:$PORT (pid $pid)"
            return 0
        fi
    elif ping; then
        echo "error: something else already answers on 127.0.0.1:$PORT; set ROOST_REDIS_PORT" >&2
        exit 1
    fi
    install_redis
    mkdir -p "$DIR"
    rm -f "$PIDFILE"
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DIR" \
        --save '' --appendonly no \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" \
        --protected-mode yes
    # Wait (at most ~10 s) until it answers.
    for _ in $(seq 1 100); do
        if ping; then
            echo "redis running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"
            return 0
        fi
        sleep 0.1
    done
    echo "error: redis-server did not answer PING on 127.0.0.1:$PORT within 10 s; log follows" >&2
    tail -n 20 "$LOGFILE" >&2 || true
    exit 1
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        echo "redis not running (no live pid in $PIDFILE)"
        rm -f "$PIDFILE"
        return 0
    fi
    kill "$pid"
    # Wait (at most ~10 s) for it to exit, then insist.
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "redis (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "redis stopped (was pid $pid)"
}

status() {
    if pid="$(running_pid)" && ping; then
        echo "redis running on 127.0.0.1:$PORT (pid $pid)"
    else
        echo "redis not running on 127.0.0.1:$PORT"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status   (port: ROOST_REDIS_PORT, default 6390)" >&2
        exit 2
        ;;
esac
