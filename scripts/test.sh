#!/usr/bin/env bash
# The test command: installs what the tests need (protoc, etcd, Redis, the official
# client), starts etcd and Redis on free loopback ports, and runs format, lint and every
# test. Work already done (packages, the client venv, builds) is skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$here/.."

ensure_packages protoc:protobuf-compiler cc:gcc etcd:etcd-server redis-server:redis-server python3:python3 \
    dockerd:docker.io docker-registry:docker-registry mmdebstrap:mmdebstrap systemd-analyze:systemd \
    openssl:openssl chromium:chromium chromedriver:chromium-driver
python3 -c 'import venv, ensurepip' 2>/dev/null || ensure_packages _no_such_cmd_:python3-venv
ensure_rust
cache=$(cache_dir)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

# The official client, installed as reference/client-compat.md §2.2 says.
venv="$cache/venv-client-19.6.0a1"
if [ ! -x "$venv/bin/backend.ai" ]; then
    echo "==> installing backend.ai-client==19.6.0a1 into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --no-deps 'backend.ai-client==19.6.0a1'
    "$venv/bin/pip" install -q 'aiohttp==3.8.6' 'yarl==1.9.4' 'multidict==6.0.5' 'async-timeout==4.0.3' \
        attrs namedlist python-dateutil tabulate tqdm humanize 'Click==7.1.2' 2>&1 | grep -v 'requires aiohttp~=3.5.0\|requires async-timeout~=3.0\|dependency resolver' || true
fi
export BAI_CLIENT="$venv/bin/backend.ai"

# etcd and Redis for this run only, on free loopback ports; stopped on exit.
export BAI_SERVICES_DIR
BAI_SERVICES_DIR=$(mktemp -d)
trap '"$here/services.sh" stop >/dev/null; rm -rf "$BAI_SERVICES_DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port)
redis_port=$(free_port)
"$here/services.sh" start "$etcd_port" "$redis_port"
export BAI_TEST_ETCD="127.0.0.1:$etcd_port" BAI_TEST_REDIS="127.0.0.1:$redis_port"

# A Docker engine (started here only if none answers; stopped again on exit if so), the
# local registry, the static runner and the kernel images (built once, then reused).
"$here/services.sh" docker
"$here/services.sh" registry 5000
export BAI_TEST_IMAGE="127.0.0.1:5000/lablup/python:3.11-debian12"
# Every runtime's image (tests/runtimes.rs), in parallel; each is rebuilt only when its
# entry in build.sh changes (about 7 minutes cold on two cores, seconds when cached).
"$here/../packaging/images/build.sh" all
BAI_KRUNNER=$("$here/../packaging/build-krunner.sh")
export BAI_KRUNNER

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test"
log="$BAI_SERVICES_DIR/test.log"
status=0
cargo test --locked --workspace --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
# The Debian package: built with cargo-deb, unpacked into a scratch root, its binary run
# and its systemd units verified.
echo "==> Debian package"
deb_status=0
deb=$("$here/../packaging/build-deb.sh") && "$here/../packaging/check-deb.sh" "$deb" || deb_status=$?
# One closing line over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
[ "$deb_status" = 0 ] || echo "the Debian package check failed ($deb_status)"
[ "$status" = 0 ] || exit "$status"
exit "$deb_status"
