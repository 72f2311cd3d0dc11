# Shared helpers for the project's scripts (sourced, not run).

# Runs a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages whose commands are missing: pairs of "command:package".
ensure_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Checks that a Rust toolchain new enough for the crate is present.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        ensure_packages cargo:cargo rustc:rustc || true
    fi
    local v
    v=$(rustc --version 2>/dev/null | awk '{print $2}')
    if [ -z "$v" ] || [ "$(printf '%s\n1.87.0\n' "$v" | sort -V | head -1)" != "1.87.0" ]; then
        echo "error: Rust >= 1.87 is required (found: ${v:-none}); install it with rustup (https://rustup.rs)" >&2
        exit 1
    fi
}

# A cache directory outside the checkout, so fresh clones reuse builds and venvs.
cache_dir() {
    local d="${BAI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/backend-ai-manager}"
    mkdir -p "$d"
    echo "$d"
}
