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
