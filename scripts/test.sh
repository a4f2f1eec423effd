#!/usr/bin/env bash
# The test command (README's second command). Installs what the tests need
# into the project (nothing global but Debian packages), then runs every
# test. Works on a fresh machine with the Rust toolchain, node/npm and apt.
set -euo pipefail
cd "$(dirname "$0")/.."

for setup in scripts/ci/install-test-deps.d/*.sh; do
  [ -e "$setup" ] || continue
  echo "==> $setup"
  bash "$setup"
done

echo "==> cargo test"
cargo test --all-targets "$@"
