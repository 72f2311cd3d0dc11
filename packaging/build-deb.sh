#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: the manager binary, the static kernel runner,
# the systemd units, config/sample.toml as /etc/backend.ai/manager.toml.example, the
# kernel-image build script, shell completions and the man page. Prints the .deb's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cache_dir)/target}"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> installing cargo-deb" >&2
    cargo install --locked cargo-deb >&2
fi
cargo build --locked --release -p backend-ai-manager >&2
krunner=$("$here/build-krunner.sh")
# Generated assets go where the package metadata names them (target/ in the checkout).
gen="$PWD/target/packaging"
rm -rf "$gen" && mkdir -p "$gen/completions"
bin="$CARGO_TARGET_DIR/release/backend-ai-manager"
cp "$krunner" "$gen/backend-ai-krunner"
"$bin" man | gzip -9n > "$gen/backend-ai-manager.1.gz"
"$bin" completions bash > "$gen/completions/backend-ai-manager"
"$bin" completions zsh > "$gen/completions/_backend-ai-manager"
"$bin" completions fish > "$gen/completions/backend-ai-manager.fish"
out="$CARGO_TARGET_DIR/debian"
mkdir -p "$out"
cargo deb --no-build --no-strip -p backend-ai-manager -o "$out" >&2
ls -t "$out"/backend-ai-manager_*.deb | head -1
