#!/usr/bin/env bash
# Starts or stops a throwaway Redis on loopback for the harness's comparison run
# (`loadtest --target redis://127.0.0.1:PORT`). Installs Debian's redis-server when missing.
#
#   loadtest/scripts/redis.sh start [PORT]   # default port 6390; no persistence
#   loadtest/scripts/redis.sh stop  [PORT]
#
# The server runs daemonized with its pid and log under ${TMPDIR:-/tmp}/nudge-redis-PORT.
set -euo pipefail

cmd=${1:-}
port=${2:-6390}
dir="${TMPDIR:-/tmp}/nudge-redis-${port}"

install() {
    if command -v redis-server >/dev/null 2>&1; then
        return
    fi
    echo "redis.sh: installing Debian's redis-server" >&2
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

case "$cmd" in
start)
    install
    mkdir -p "$dir"
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        echo "redis.sh: already running on 127.0.0.1:$port" >&2
        exit 0
    fi
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
    # Wait (bounded) until it answers.
    for _ in $(seq 1 50); do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            echo "redis.sh: redis-server on 127.0.0.1:$port (pid $(cat "$dir/redis.pid"))"
            exit 0
        fi
        sleep 0.1
    done
    echo "redis.sh: redis-server did not answer; see $dir/redis.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/redis.pid" ]; then
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -rf "$dir"
        echo "redis.sh: stopped the redis-server on 127.0.0.1:$port"
    else
        echo "redis.sh: nothing running on port $port" >&2
    fi
    ;;
*)
    echo "usage: $0 start|stop [PORT]" >&2
    exit 2
    ;;
esac
