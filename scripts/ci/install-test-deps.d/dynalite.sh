#!/usr/bin/env bash
# The DynamoDB sink's tests and benchmark run against dynalite (npm),
# installed into .tools/dynalite (idempotent).
set -euo pipefail
exec "$(dirname "$0")/../install-dynalite.sh"
