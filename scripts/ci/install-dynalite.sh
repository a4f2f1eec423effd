#!/usr/bin/env bash
# Installs dynalite (a DynamoDB API implementation on LevelDB, from npm) into
# the project-local folder .tools/dynalite, for the DynamoDB sink's tests and
# benchmark. Idempotent: does nothing when the pinned version is present.
#
#   scripts/ci/install-dynalite.sh          # install (needs node >= 18 + npm)
#   DYNALITE_VERSION=3.2.2 scripts/ci/...   # another version
#
# The tests find it at .tools/dynalite/node_modules/dynalite/cli.js (or at
# $TRAILKEEP_DYNALITE, a path to that cli.js).
set -euo pipefail

VERSION="${DYNALITE_VERSION:-4.0.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/dynalite"
CLI="$DEST/node_modules/dynalite/cli.js"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-dynalite: '$tool' not found; install Node.js 18 or newer first" >&2
    exit 1
  fi
done

if [ -f "$CLI" ] && [ -f "$DEST/.installed-$VERSION" ]; then
  echo "dynalite $VERSION already installed at $DEST"
  exit 0
fi

mkdir -p "$DEST"
if [ ! -f "$DEST/package.json" ]; then
  printf '{\n  "name": "trailkeep-test-tools",\n  "private": true\n}\n' > "$DEST/package.json"
fi
npm install --prefix "$DEST" --no-audit --no-fund --save-exact "dynalite@$VERSION"
rm -f "$DEST"/.installed-*
touch "$DEST/.installed-$VERSION"
echo "dynalite $VERSION installed: node $CLI --port PORT"
