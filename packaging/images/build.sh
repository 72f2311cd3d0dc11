#!/usr/bin/env bash
# Builds kernel images offline from Debian bookworm packages: for each runtime, mmdebstrap a
# root with the runtime's packages, add a `work` user (uid 1000), `docker import` it with the
# ai.backend.* labels the agent and the runner read, and push it to the local registry when
# one answers.
#   packaging/images/build.sh [--force] [--jobs N] [--registry HOST:PORT] RUNTIME... | all
#   packaging/images/build.sh --list            # runtime, image and aliases, one a line
#   packaging/images/build.sh --image RUNTIME   # the image reference a runtime builds
# RUNTIME is one of the names `--list` prints (python, c, cpp, golang, rust, java, haskell,
# lua, nodejs, octave, php, r, scheme, git); `all` is every one of them. Julia is not packaged
# in Debian bookworm and is not built here (README: "Kernel runtimes" says how to add it).
#
# An image is skipped when it exists and its `ai.backend.appliance.build-hash` label matches
# the hash of this script's common part and the runtime's entry, so editing one entry
# rebuilds only that runtime. `--force` rebuilds regardless. Builds run in parallel
# (`--jobs`, default 3: downloading and unpacking overlap well on two cores); each logs to
# $cache/image-logs/RUNTIME.log and the script ends with one line per runtime and its time.
#
# The images carry `ai.backend.aliases` (the short names users type: `r`, `lua`, `c`, ...);
# the manager resolves those names to the images found on its Docker engine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/lib.sh"

RUNTIMES="python c cpp golang rust java haskell lua nodejs octave php r scheme git"

# One entry per runtime: repository, tag, Debian packages, runtime path, aliases, minimum
# memory, the environment variables that get the CPU count, and extra image settings
# (`env` lines and shell run in the chroot after the packages are in).
entry_python() {
    repo=lablup/python tag=3.11-debian12
    packages="python3 python-is-python3 python3-numpy python3-pandas python3-matplotlib procps jupyter-notebook python3-ipykernel"
    runtime_path=/usr/bin/python3 aliases="python,python3" min_mem=256m
    corecount="OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
    service_ports="jupyter:http:8888,http:http:8080"
    env="MPLBACKEND=Agg MPLCONFIGDIR=/var/cache/matplotlib"
    # The font cache is built once here rather than on every kernel's first plot.
    setup='mkdir -p /var/cache/matplotlib && MPLCONFIGDIR=/var/cache/matplotlib MPLBACKEND=Agg python3 -c "import matplotlib.pyplot" && chmod -R a+rwX /var/cache/matplotlib
mkdir -p /etc/backend.ai/service-defs && printf "%s\n" "{\"command\": [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]}" > /etc/backend.ai/service-defs/http.json'
}
entry_c() {
    repo=lablup/c tag=gcc12-debian12
    packages="gcc libc6-dev make procps"
    runtime_path=/usr/bin/gcc aliases="c,gcc" min_mem=256m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_cpp() {
    repo=lablup/cpp tag=gcc12-debian12
    packages="g++ make procps"
    runtime_path=/usr/bin/g++ aliases="cpp,c++,g++" min_mem=256m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_golang() {
    repo=lablup/golang tag=1.19-debian12
    packages="golang-go procps"
    runtime_path=/usr/bin/go aliases="golang,go" min_mem=512m corecount="GOMAXPROCS,NPROC"
    service_ports=""
    # The build cache goes to /tmp, not into the user's work directory.
    env="CGO_ENABLED=0 GOCACHE=/tmp/.go-build GOPATH=/tmp/.go GOFLAGS=-mod=mod GO111MODULE=auto"
    setup=""
}
entry_rust() {
    repo=lablup/rust tag=1.63-debian12
    packages="rustc cargo procps"
    runtime_path=/usr/bin/rustc aliases="rust,rustc" min_mem=512m corecount="NPROC"
    service_ports="" env="CARGO_HOME=/tmp/.cargo" setup=""
}
entry_java() {
    repo=lablup/java tag=17-debian12
    packages="default-jdk-headless procps"
    runtime_path=/usr/bin/java aliases="java,jdk" min_mem=512m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_haskell() {
    repo=lablup/haskell tag=ghc9.0-debian12
    packages="ghc procps"
    runtime_path=/usr/bin/ghc aliases="haskell,ghc" min_mem=512m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_lua() {
    # 5.3, not 5.4: bookworm's lua-posix (signal handling for interrupts) stops at 5.3.
    repo=lablup/lua tag=5.3-debian12
    packages="lua5.3 lua-posix procps"
    runtime_path=/usr/bin/lua5.3 aliases="lua,lua5.3" min_mem=128m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_nodejs() {
    repo=lablup/nodejs tag=18-debian12
    packages="nodejs procps"
    runtime_path=/usr/bin/node aliases="nodejs,node,javascript,js" min_mem=256m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_octave() {
    repo=lablup/octave tag=7.3-debian12
    packages="octave procps"
    runtime_path=/usr/bin/octave-cli aliases="octave,matlab" min_mem=512m
    corecount="OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
    service_ports="" env="" setup=""
}
entry_php() {
    repo=lablup/php tag=8.2-debian12
    packages="php-cli procps"
    runtime_path=/usr/bin/php aliases="php" min_mem=128m corecount="NPROC"
    service_ports="" env="" setup=""
}
entry_r() {
    repo=lablup/r-base tag=4.2-debian12
    # Jupyter with the IR kernel is the image's app.
    packages="r-base-core procps jupyter-notebook r-cran-irkernel"
    runtime_path=/usr/bin/R aliases="r,R,r-base" min_mem=256m
    corecount="OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
    service_ports="jupyter:http:8888" env="" setup=""
}
entry_scheme() {
    repo=lablup/scheme tag=guile3.0-debian12
    packages="guile-3.0 procps"
    runtime_path=/usr/bin/guile aliases="scheme,guile" min_mem=128m corecount="NPROC"
    # Guile compiles nothing to the user's home: auto-compilation is off.
    service_ports="" env="GUILE_AUTO_COMPILE=0" setup=""
}
entry_git() {
    repo=lablup/git tag=2.39-debian12
    packages="git bash less nano openssh-client procps"
    runtime_path=/bin/bash aliases="git,shell,bash" min_mem=128m corecount="NPROC"
    service_ports="" env="" setup=""
}

force=0 jobs=3 registry=127.0.0.1:5000
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1; shift ;;
        --jobs) jobs="$2"; shift 2 ;;
        --registry) registry="$2"; shift 2 ;;
        --list)
            for rt in $RUNTIMES; do "entry_$rt"; echo "$rt $registry/$repo:$tag $aliases"; done
            exit 0 ;;
        --image)
            declare -F "entry_${2:-}" >/dev/null || { echo "unknown runtime '${2:-}'" >&2; exit 2; }
            "entry_$2"; echo "$registry/$repo:$tag"; exit 0 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--force] [--jobs N] RUNTIME... | all (runtimes: $RUNTIMES)" >&2; exit 2; }
wanted=()
for rt in "$@"; do
    if [ "$rt" = all ]; then wanted+=($RUNTIMES); continue; fi
    if [ "$rt" = julia ]; then
        echo "julia is not packaged in Debian bookworm; see README.md (Kernel runtimes) for building a Julia image" >&2
        exit 2
    fi
    declare -F "entry_$rt" >/dev/null || { echo "unknown runtime '$rt' (runtimes: $RUNTIMES)" >&2; exit 2; }
    wanted+=("$rt")
done

# What an image's build depends on: the common build function and the runtime's entry.
build_hash() {
    { declare -f build_one; declare -f "entry_$1"; } | sha256sum | cut -c1-16
}

build_one() {
    local rt="$1" image hash work labels=() e
    "entry_$rt"
    image="$registry/$repo:$tag"
    hash=$(build_hash "$rt")
    # A registry that outlives the Docker engine's store (CI caches) may have it already.
    if [ "$force" = 0 ] && ! docker image inspect "$image" >/dev/null 2>&1 && [[ "$registry" == *:* ]] &&
        (exec 3<>"/dev/tcp/${registry%%:*}/${registry##*:}") 2>/dev/null; then
        docker pull --quiet "$image" >/dev/null 2>&1 || true
    fi
    if [ "$force" = 0 ] && [ "$(docker image inspect --format '{{ index .Config.Labels "ai.backend.appliance.build-hash" }}' "$image" 2>/dev/null)" = "$hash" ]; then
        echo "image $image exists"
    else
        work=$(mktemp -d)
        # shellcheck disable=SC2064
        trap "rm -rf '$work'" RETURN
        echo "==> building $image (mmdebstrap bookworm + $packages)"
        printf '%s\n' "$setup" > "$work/setup.sh"
        # An image whose service ports name `jupyter` gets Jupyter Notebook as an app (README:
        # "Apps in the browser"): on loopback inside the container, with no token or password
        # of its own (the manager's app proxy is the gate), rooted at /home/work.
        if [[ ",$service_ports" == *",jupyter:"* ]]; then
            cat >> "$work/setup.sh" <<'JUPYTER'
cat > /etc/backend.ai/service-defs/jupyter.json <<'JSON'
{"command": ["jupyter-notebook", "--no-browser", "--ip=127.0.0.1", "--port={port}",
             "--NotebookApp.token=", "--NotebookApp.password=",
             "--NotebookApp.allow_remote_access=True", "--NotebookApp.notebook_dir=/home/work",
             "--NotebookApp.quit_button=False"],
 "env": {"JUPYTER_RUNTIME_DIR": "/tmp/.jupyter-runtime", "JUPYTER_CONFIG_DIR": "/tmp/.jupyter-config"},
 "start-timeout": 90}
JSON
JUPYTER
        fi
        # Every step checks its own status: this function also runs where `set -e` is off.
        mmdebstrap --quiet --variant=apt --include="${packages// /,}" bookworm "$work/root.tar" \
            --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --home-dir /home/work --shell /bin/bash work' \
            --customize-hook='mkdir -p "$1/etc/backend.ai/service-defs" "$1/opt/backend.ai/bin" "$1/opt/backend.ai/ipc"' \
            --customize-hook="cp '$work/setup.sh' \"\$1/tmp/setup.sh\" && chroot \"\$1\" sh -e /tmp/setup.sh && rm \"\$1/tmp/setup.sh\"" \
            --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' || return 1
        labels=(
            --change 'LABEL ai.backend.kernelspec=1'
            --change 'LABEL ai.backend.features="query batch uid-match user-input"'
            --change 'LABEL ai.backend.base-distro=debian12'
            --change "LABEL ai.backend.runtime-type=$rt"
            --change "LABEL ai.backend.runtime-path=$runtime_path"
            --change 'LABEL ai.backend.resource.min.cpu=1'
            --change "LABEL ai.backend.resource.min.mem=$min_mem"
            --change "LABEL ai.backend.envs.corecount=$corecount"
            --change "LABEL ai.backend.aliases=$aliases"
            --change "LABEL ai.backend.appliance.build-hash=$hash"
            --change 'ENV LANG=C.UTF-8'
            --change 'WORKDIR /home/work'
            --change "CMD [\"$runtime_path\"]"
        )
        [ -z "$service_ports" ] || labels+=(--change "LABEL ai.backend.service-ports=$service_ports")
        for e in $env; do labels+=(--change "ENV $e"); done
        docker import "${labels[@]}" "$work/root.tar" "$image" >/dev/null || return 1
        echo "built $image"
    fi
    if [[ "$registry" == *:* ]] && (exec 3<>"/dev/tcp/${registry%%:*}/${registry##*:}") 2>/dev/null; then
        docker push --quiet "$image" >/dev/null || return 1
        echo "pushed $image to $registry"
    fi
}

ensure_packages mmdebstrap:mmdebstrap
if [ ${#wanted[@]} = 1 ]; then
    build_one "${wanted[0]}" || { echo "building ${wanted[0]} failed" >&2; exit 1; }
    exit 0
fi
logs="$(cache_dir)/image-logs"
mkdir -p "$logs"
failed=0
for rt in "${wanted[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    rm -f "$logs/$rt.status"
    (
        start=$SECONDS
        if build_one "$rt" > "$logs/$rt.log" 2>&1; then rc=0; else rc=$?; fi
        echo "$rc $((SECONDS - start))" > "$logs/$rt.status"
    ) &
done
wait
for rt in "${wanted[@]}"; do
    read -r rc secs < "$logs/$rt.status" 2>/dev/null || rc=1 secs='?'
    if [ "$rc" = 0 ]; then
        echo "$rt: ok (${secs}s) $(grep -m1 '^built\|^image .* exists' "$logs/$rt.log")"
    else
        echo "$rt: FAILED (log: $logs/$rt.log)"; tail -5 "$logs/$rt.log" | sed 's/^/    /'
        failed=1
    fi
done
echo "images done in ${SECONDS}s"
exit "$failed"
