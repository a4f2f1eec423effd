#!/usr/bin/env bash
# Builds the exact trailkeep binary the container image carries: a fully
# static x86_64 Linux executable (release profile), then smoke-tests it.
#
#   scripts/build-static.sh            # build + smoke test
#   scripts/build-static.sh --no-smoke # build only
#
# Target choice: x86_64-unknown-linux-musl when that target is installed
# (rustup target list --installed); otherwise the glibc target linked
# statically with `-C target-feature=+crt-static` (glibc's libc.a, from
# libc6-dev). Both give a binary with no dynamic loader and no shared
# libraries, so it runs on distroless/static or scratch. The Dockerfile runs
# this same script in its build stage, so image and CI build the same way.
#
# Prints the path of the binary on the last line of stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SMOKE=1
[[ "${1:-}" == "--no-smoke" ]] && SMOKE=0

if rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-linux-musl'; then
    TARGET=x86_64-unknown-linux-musl
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
else
    TARGET=x86_64-unknown-linux-gnu
    # --target is passed explicitly so RUSTFLAGS reach only the final
    # artifacts, not build scripts or proc-macros (those stay dynamic).
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi

echo "build-static: target ${TARGET} (RUSTFLAGS=${RUSTFLAGS# })" >&2
start=$(date +%s)
cargo build --release --locked --target "$TARGET" --bin trailkeep >&2
BIN="$ROOT/target/$TARGET/release/trailkeep"
echo "build-static: built in $(( $(date +%s) - start ))s: $BIN ($(du -h "$BIN" | cut -f1))" >&2

# --- verify it is static ---------------------------------------------------
desc="$(file -b "$BIN")"
echo "build-static: file: $desc" >&2
case "$desc" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-static: FAIL: $BIN is not statically linked" >&2; exit 1 ;;
esac
# ldd prints "not a dynamic executable" (static) or "statically linked"
# (static-pie); anything else means shared libraries are needed.
ldd_out="$(ldd "$BIN" 2>&1 || true)"
if ! grep -qE 'not a dynamic executable|statically linked' <<< "$ldd_out"; then
    echo "build-static: FAIL: $BIN needs shared libraries:" >&2
    echo "$ldd_out" >&2
    exit 1
fi
echo "build-static: ldd: $(echo $ldd_out) (ok)" >&2

# --- smoke test ---------------------------------------------------------------
if [[ "$SMOKE" == 1 ]]; then
    "$ROOT/scripts/ci/smoke-binary.sh" "$BIN" >&2
fi

echo "$BIN"
