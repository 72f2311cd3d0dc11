#!/usr/bin/env bash
# Starts or stops etcd and Redis on loopback for halfstack development and tests.
#   scripts/services.sh start [ETCD_PORT REDIS_PORT]   (default 8120 8110)
#   scripts/services.sh stop
# State and PIDs live in .test-services/ (or $BAI_SERVICES_DIR). Only processes this
# script started are stopped, by their recorded PIDs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
dir="${BAI_SERVICES_DIR:-$here/../.test-services}"

wait_port() {
    local port=$1 name=$2 i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: $name did not start on 127.0.0.1:$port (log: $dir/$name.log)" >&2
    return 1
}

start() {
    local etcd_port=${1:-8120} redis_port=${2:-8110} peer_port
    peer_port=$((etcd_port + 1))
    ensure_packages etcd:etcd-server redis-server:redis-server
    mkdir -p "$dir"
    if [ ! -f "$dir/etcd.pid" ] || ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
        etcd --name bai-test --data-dir "$dir/etcd-data" \
            --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
            --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
            --initial-cluster "bai-test=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
        echo $! >"$dir/etcd.pid"
        echo "$etcd_port" >"$dir/etcd.port"
    fi
    if [ ! -f "$dir/redis.pid" ] || ! kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
            --dir "$dir" >"$dir/redis.log" 2>&1 &
        echo $! >"$dir/redis.pid"
        echo "$redis_port" >"$dir/redis.port"
    fi
    wait_port "$(cat "$dir/etcd.port")" etcd
    wait_port "$(cat "$dir/redis.port")" redis
    echo "etcd on 127.0.0.1:$(cat "$dir/etcd.port"), Redis on 127.0.0.1:$(cat "$dir/redis.port")"
}

stop() {
    local name pid
    for name in etcd redis; do
        if [ -f "$dir/$name.pid" ]; then
            pid=$(cat "$dir/$name.pid")
            kill "$pid" 2>/dev/null && echo "stopped $name ($pid)" || true
            rm -f "$dir/$name.pid"
        fi
    done
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 start [ETCD_PORT REDIS_PORT] | stop" >&2; exit 2 ;;
esac
