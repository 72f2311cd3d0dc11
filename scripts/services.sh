#!/usr/bin/env bash
# Starts or stops the services development and tests use, all on loopback:
#   scripts/services.sh start [ETCD_PORT REDIS_PORT]   etcd and Redis (default 8120 8110)
#   scripts/services.sh docker                         a Docker engine, if none answers
#   scripts/services.sh registry [PORT]                a Docker registry (default 5000)
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

docker_engine() {
    ensure_packages dockerd:docker.io
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$dir"
    # No default bridge and no iptables: containers run with network mode none (or a
    # network the operator creates), never on docker0.
    dockerd --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
        --pidfile "$dir/dockerd.pid.own" >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/dockerd.pid"
    local i
    for i in $(seq 1 300); do
        docker info >/dev/null 2>&1 && { echo "Docker engine started"; return 0; }
        sleep 0.1
    done
    echo "error: dockerd did not start (log: $dir/dockerd.log)" >&2
    return 1
}

registry() {
    local port=${1:-5000} store
    ensure_packages docker-registry:docker-registry
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 0
    fi
    mkdir -p "$dir"
    store="$(cache_dir)/registry"
    mkdir -p "$store"
    cat >"$dir/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $store
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    wait_port "$port" registry
    echo "Docker registry on 127.0.0.1:$port"
}

stop() {
    local name pid
    for name in etcd redis registry dockerd; do
        if [ -f "$dir/$name.pid" ]; then
            pid=$(cat "$dir/$name.pid")
            if kill "$pid" 2>/dev/null; then
                # Wait for it to be gone (dockerd takes containerd down with it), so a
                # service started next does not collide with one still shutting down.
                for _ in $(seq 1 300); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
                echo "stopped $name ($pid)"
            fi
            rm -f "$dir/$name.pid"
        fi
    done
}

case "${1:-}" in
    start) shift; start "$@" ;;
    docker) docker_engine ;;
    registry) shift; registry "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 start [ETCD_PORT REDIS_PORT] | docker | registry [PORT] | stop" >&2; exit 2 ;;
esac
