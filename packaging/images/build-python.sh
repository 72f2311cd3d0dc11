#!/usr/bin/env bash
# Builds the Python kernel image (kept for the scripts and tests that call it; the work is
# done by build.sh, which builds every runtime):
#   packaging/images/build-python.sh [--force] [IMAGE]
# IMAGE defaults to 127.0.0.1:5000/lablup/python:3.11-debian12; another name is a tag of
# that image (pushed when its registry answers). An image that is up to date is kept
# unless --force is given.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
args=()
if [ "${1:-}" = "--force" ]; then args+=(--force); shift; fi
image="${1:-127.0.0.1:5000/lablup/python:3.11-debian12}"
registry="${image%%/*}"
"$here/build.sh" "${args[@]}" --registry "$registry" python
built=$("$here/build.sh" --registry "$registry" --image python)
if [ "$image" != "$built" ]; then
    docker tag "$built" "$image"
    if [[ "$registry" == *:* ]] && (exec 3<>"/dev/tcp/${registry%%:*}/${registry##*:}") 2>/dev/null; then
        docker push --quiet "$image" >/dev/null && echo "pushed $image to $registry"
    fi
fi
