#!/usr/bin/env bash
# Checks a built package: unpacks it into a scratch root (dpkg -x), runs the packaged
# binary, and has systemd-analyze verify the packaged units against that root.
set -euo pipefail
deb=${1:?usage: check-deb.sh PACKAGE.deb}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
"$root/usr/bin/backend-ai-manager" --version
test -x "$root/usr/lib/backend-ai/backend-ai-krunner"
test -f "$root/etc/backend.ai/manager.toml.example"
test -f "$root/usr/share/man/man1/backend-ai-manager.1.gz"
test -f "$root/usr/share/bash-completion/completions/backend-ai-manager"
for unit in backend-ai-manager.service backend-ai-agent.service; do
    test -f "$root/lib/systemd/system/$unit"
done
# systemd-analyze verify checks the units as installed, with their ExecStart pointing at
# the unpacked binary (the package is not installed on this machine).
units=$(mktemp -d)
trap 'rm -rf "$root" "$units"' EXIT
for unit in backend-ai-manager.service backend-ai-agent.service; do
    sed "s|/usr/bin/backend-ai-manager|$root/usr/bin/backend-ai-manager|" \
        "$root/lib/systemd/system/$unit" > "$units/$unit"
done
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$units/backend-ai-manager.service" "$units/backend-ai-agent.service"
echo "package ok: $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) ($(du -h "$deb" | cut -f1))"
