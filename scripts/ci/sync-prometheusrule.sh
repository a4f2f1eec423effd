#!/usr/bin/env bash
# Writes deploy/k8s/overlays/production/prometheusrule.yaml from
# dashboards/alerts.yml: the PrometheusRule's spec IS the rule file, indented,
# so the two can never disagree.
#   scripts/ci/sync-prometheusrule.sh          # regenerate
#   scripts/ci/sync-prometheusrule.sh --check  # exit 1 if out of date (CI)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/dashboards/alerts.yml"
DST="$ROOT/deploy/k8s/overlays/production/prometheusrule.yaml"

render() {
    cat <<'HDR'
# GENERATED from dashboards/alerts.yml by scripts/ci/sync-prometheusrule.sh:
# do not edit here. Edit dashboards/alerts.yml (and its promtool tests), then
# run the script.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: trailkeep
  labels:
    app.kubernetes.io/name: trailkeep
    # Match your Prometheus' ruleSelector (kube-prometheus-stack: release=<name>).
    role: alert-rules
spec:
HDR
    # Drop the file's leading comment block; indent the rest under spec.
    awk 'BEGIN{body=0} /^groups:/{body=1} body' "$SRC" | sed 's/^\(.\)/  \1/'
}

if [[ "${1:-}" == "--check" ]]; then
    if ! diff -u "$DST" <(render) >/dev/null 2>&1; then
        echo "sync-prometheusrule: $DST differs from dashboards/alerts.yml; run scripts/ci/sync-prometheusrule.sh" >&2
        diff -u "$DST" <(render) | head -20 >&2 || true
        exit 1
    fi
    exit 0
fi
render > "$DST"
echo "wrote $DST"
