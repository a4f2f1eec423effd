#!/usr/bin/env bash
# Renders every kustomize overlay offline and checks it:
#   1. kubectl kustomize deploy/k8s/overlays/<name>
#   2. custom resources (ServiceMonitor, PrometheusRule) checked by
#      scripts/ci/k8s_split.py: no Kubernetes schema covers them, so they are
#      excluded from step 3 and checked on their own (PrometheusRule spec ==
#      dashboards/alerts.yml + promtool check rules; ServiceMonitor keys and
#      selector/port wiring); plus config.toml <-> StatefulSet consistency
#   3. kubernetes-validate --strict against Kubernetes $K8S_VERSION (built-in
#      kinds only)
#   4. checkov --skip-download (justified skips are annotations in the
#      manifests: checkov.io/skipN: CKV_...=reason)
#   5. `trailkeep check -c` on the ConfigMap's config.toml (secret paths
#      pointed at dummy files), when $TRAILKEEP_BIN is set and has `check`
#   6. dashboards/alerts.yml and the PrometheusRule are in sync
# Expects the tools installed by scripts/ci/ops-checks.sh (.tools/venv).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.tools/venv}"
K8S_VERSION="${K8S_VERSION:-1.37.0}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
fail=0
pass() { echo "PASS k8s: $*"; }
bad() { echo "FAIL k8s: $*"; fail=1; }

if scripts/ci/sync-prometheusrule.sh --check; then
    pass "PrometheusRule is generated from dashboards/alerts.yml"
else
    bad "PrometheusRule out of sync with dashboards/alerts.yml"
fi

for dir in deploy/k8s/overlays/*/; do
    name="$(basename "$dir")"
    o="$OUT/$name"
    mkdir -p "$o"
    if ! kubectl kustomize "$dir" > "$o/rendered.yaml" 2> "$o/kustomize.err"; then
        bad "$name: kubectl kustomize failed"; cat "$o/kustomize.err"; continue
    fi
    pass "$name: rendered $(grep -c '^kind:' "$o/rendered.yaml") objects"

    if "$VENV/bin/python" scripts/ci/k8s_split.py "$o/rendered.yaml" "$o" dashboards/alerts.yml; then
        pass "$name: custom resources and config wiring"
    else
        bad "$name: custom resources or config wiring"
    fi
    if [[ -f "$o/prometheusrule-spec.yml" ]]; then
        if promtool check rules "$o/prometheusrule-spec.yml" > "$o/promtool.log" 2>&1; then
            pass "$name: promtool check rules on the PrometheusRule spec"
        else
            bad "$name: promtool check rules on the PrometheusRule spec"; cat "$o/promtool.log"
        fi
    fi

    if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$o/core.yaml" > "$o/kv.log" 2>&1 \
        && ! grep -q -E '^(ERROR|WARN)' "$o/kv.log"; then
        pass "$name: kubernetes-validate --strict (Kubernetes $K8S_VERSION, $(grep -c '^kind:' "$o/core.yaml") built-in objects)"
    else
        bad "$name: kubernetes-validate --strict"; cat "$o/kv.log"
    fi

    if "$VENV/bin/checkov" -f "$o/rendered.yaml" --framework kubernetes --skip-download \
        --compact --quiet > "$o/checkov.log" 2>&1; then
        pass "$name: checkov ($(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$o/checkov.log"))"
    else
        bad "$name: checkov"; cat "$o/checkov.log"
    fi

    if [[ -n "${TRAILKEEP_BIN:-}" ]] && "$TRAILKEEP_BIN" --help 2>/dev/null | grep -qw check; then
        sec="$o/secrets"; mkdir -p "$sec"
        grep -o '/var/run/secrets/trailkeep/[A-Za-z0-9._-]*' "$o/config.toml" | sort -u | while read -r f; do
            printf 'dummy-%s\n' "$(basename "$f")" > "$sec/$(basename "$f")"; chmod 600 "$sec/$(basename "$f")"
        done
        sed "s|/var/run/secrets/trailkeep/|$sec/|g; s|/var/lib/trailkeep/|$o/data/|g" "$o/config.toml" > "$o/config.local.toml"
        if "$TRAILKEEP_BIN" check -c "$o/config.local.toml" > "$o/check.log" 2>&1; then
            pass "$name: trailkeep check -c on the ConfigMap's config.toml"
        else
            bad "$name: trailkeep check -c on the ConfigMap's config.toml"; cat "$o/check.log"
        fi
    else
        echo "SKIP k8s: $name: trailkeep check -c (no TRAILKEEP_BIN with a check command)"
    fi
done
exit $fail
