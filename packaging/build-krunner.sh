#!/usr/bin/env bash
# Builds backend-ai-krunner as a fully static x86-64 executable (glibc crt-static), so it
# runs inside any Linux image it is bind-mounted into. Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cache_dir)/target}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -p backend-ai-krunner \
    --target x86_64-unknown-linux-gnu >&2
echo "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/backend-ai-krunner"
