#!/usr/bin/env bash
# The benchmark suite: the appliance against baselines measured in the same run (docker
# run, docker exec, the unsigned root route). Prints figures and ratios; never fails on
# time. Needs what the tests need (Docker, the kernel image, the static runner), which
# this script prepares the same way.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$here/.."
ensure_packages protoc:protobuf-compiler cc:gcc dockerd:docker.io docker-registry:docker-registry mmdebstrap:mmdebstrap wrk:wrk
ensure_rust
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cache_dir)/target}"
export BAI_SERVICES_DIR
BAI_SERVICES_DIR=$(mktemp -d)
trap '"$here/services.sh" stop >/dev/null; rm -rf "$BAI_SERVICES_DIR"' EXIT
"$here/services.sh" docker
"$here/services.sh" registry 5000
export BAI_TEST_IMAGE="127.0.0.1:5000/lablup/python:3.11-debian12"
"$here/../packaging/images/build-python.sh" "$BAI_TEST_IMAGE"
BAI_KRUNNER=$("$here/../packaging/build-krunner.sh")
export BAI_KRUNNER
cargo bench --locked --bench appliance
