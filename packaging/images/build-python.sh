#!/usr/bin/env bash
# Builds the Python kernel image offline: mmdebstrap a Debian bookworm root with python3,
# add a `work` user (uid 1000) and the service definitions, `docker import` it with the
# ai.backend.* labels, and push it to the local registry when one answers.
#   packaging/images/build-python.sh [--force] [IMAGE]
# IMAGE defaults to 127.0.0.1:5000/lablup/python:3.11-debian12. An existing image is kept
# unless --force is given.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/lib.sh"

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
image="${1:-127.0.0.1:5000/lablup/python:3.11-debian12}"
registry="${image%%/*}"

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "image $image exists"
else
    ensure_packages mmdebstrap:mmdebstrap
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "==> building $image (mmdebstrap bookworm + python3)"
    mmdebstrap --quiet --variant=apt --include=python3,procps bookworm "$work/root.tar" \
        --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --home-dir /home/work --shell /bin/bash work' \
        --customize-hook='mkdir -p "$1/etc/backend.ai/service-defs" "$1/opt/backend.ai/bin" "$1/opt/backend.ai/ipc"' \
        --customize-hook='printf "%s\n" "{\"command\": [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]}" > "$1/etc/backend.ai/service-defs/http.json"' \
        --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*'
    docker import \
        --change 'LABEL ai.backend.kernelspec=1' \
        --change 'LABEL ai.backend.features="query batch uid-match user-input"' \
        --change 'LABEL ai.backend.base-distro=debian12' \
        --change 'LABEL ai.backend.runtime-type=python' \
        --change 'LABEL ai.backend.runtime-path=/usr/bin/python3' \
        --change 'LABEL ai.backend.resource.min.cpu=1' \
        --change 'LABEL ai.backend.resource.min.mem=256m' \
        --change 'LABEL ai.backend.service-ports=http:http:8080' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'WORKDIR /home/work' \
        --change 'CMD ["/usr/bin/python3"]' \
        "$work/root.tar" "$image" >/dev/null
    echo "built $image"
fi

if [[ "$registry" == *:* ]] && (exec 3<>"/dev/tcp/${registry%%:*}/${registry##*:}") 2>/dev/null; then
    docker push --quiet "$image" >/dev/null && echo "pushed $image to $registry"
fi
