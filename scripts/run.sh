#!/usr/bin/env bash
# Builds (once) and runs the appliance on embedded defaults: API and UI on
# http://127.0.0.1:8081, state in ./data, a local agent running kernels in Docker (network
# mode none). Extra arguments go to `serve` (e.g. --service-addr 0.0.0.0:8081). On the first
# start it prints the superadmin's credentials. Stop it with Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cd "$here/.."
ensure_packages protoc:protobuf-compiler cc:gcc dockerd:docker.io mmdebstrap:mmdebstrap
ensure_rust
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cache_dir)/target}"
cargo build --release --locked --bin backend-ai-manager
# The static kernel runner and a Python kernel image for the local agent (only Python,
# for a fast first start; the line printed below says how to build the others).
BACKEND_AGENT__KRUNNER_PATH=$("$here/../packaging/build-krunner.sh")
export BACKEND_AGENT__KRUNNER_PATH
BAI_SERVICES_DIR="$(cache_dir)/services" "$here/services.sh" docker
"$here/../packaging/images/build-python.sh"
echo "Other runtimes (r, lua, nodejs, c, cpp, java, octave, ...): packaging/images/build.sh all (or a name)"
exec "$CARGO_TARGET_DIR/release/backend-ai-manager" serve "$@"
