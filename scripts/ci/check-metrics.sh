#!/usr/bin/env bash
# Live check of dashboards and alert rules against what trailkeep exposes.
#
#  1. Runs `trailkeep demo --data-dir DIR --metrics-listen 127.0.0.1:PORT
#     --linger 90s` (simulators in-process, pipeline catches up, then keeps
#     serving /metrics). $TRAILKEEP_BIN selects the binary (default: the
#     static release binary of scripts/build-static.sh, else target/debug).
#     If the binary has no `demo --metrics-listen` yet, a stub serving
#     scripts/ci/testdata/metrics-stub.prom stands in, loudly (NOTE line);
#     REQUIRE_DEMO=1 turns that into a FAIL.
#  2. Starts a real Prometheus server (Debian package `prometheus`) on
#     loopback scraping it every second, and waits for several scrapes.
#  3. promtool check metrics on the exposition.
#  4. Every dashboard panel query, every template-variable query and every
#     alert expression is evaluated with `promtool query instant` (template
#     variables substituted with the match-all regex .*): any error FAILS.
#  5. Every trailkeep_* name those queries reference must be in the
#     exposition (histogram _bucket/_sum/_count included), unless listed in
#     scripts/ci/metrics-optional.txt (WARN) and defined in metrics.rs.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${VENV:-$ROOT/.tools/venv}/bin/python"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
fail=0
pass() { echo "PASS metrics: $*"; }
bad() { echo "FAIL metrics: $*"; fail=1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
MPORT="$(free_port)"
PPORT="$(free_port)"

# --- 1. the service ---------------------------------------------------------
BIN="${TRAILKEEP_BIN:-}"
if [[ -z "$BIN" ]]; then
    for c in target/x86_64-unknown-linux-musl/release/trailkeep target/x86_64-unknown-linux-gnu/release/trailkeep target/debug/trailkeep; do
        [[ -x "$c" ]] && { BIN="$c"; break; }
    done
fi
if [[ -n "$BIN" ]] && "$BIN" demo --help 2>/dev/null | grep -q -- '--metrics-listen'; then
    echo "metrics: running $BIN demo (metrics on 127.0.0.1:$MPORT)"
    "$BIN" demo --data-dir "$WORK/demo" --metrics-listen "127.0.0.1:$MPORT" --linger 90s \
        > "$WORK/demo.log" 2>&1 &
    PIDS+=($!)
    SOURCE="demo"
else
    if [[ "${REQUIRE_DEMO:-0}" == 1 ]]; then
        bad "${BIN:-no binary} has no \`demo --metrics-listen\` (REQUIRE_DEMO=1)"; exit 1
    fi
    echo "NOTE metrics: ${BIN:-no trailkeep binary} has no \`demo --metrics-listen\` yet: serving the stub exposition scripts/ci/testdata/metrics-stub.prom instead"
    mkdir -p "$WORK/stub" && cp scripts/ci/testdata/metrics-stub.prom "$WORK/stub/metrics"
    python3 -m http.server "$MPORT" --bind 127.0.0.1 --directory "$WORK/stub" > "$WORK/stub.log" 2>&1 &
    PIDS+=($!)
    SOURCE="stub"
fi
for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$MPORT/metrics" -o "$WORK/exposition.prom" 2>/dev/null \
        && grep -q '^trailkeep_' "$WORK/exposition.prom" && break
    sleep 0.5
done
if ! grep -q '^trailkeep_' "$WORK/exposition.prom" 2>/dev/null; then
    bad "no trailkeep_ metrics on 127.0.0.1:$MPORT/metrics after 60s"
    tail -20 "$WORK/demo.log" 2>/dev/null
    exit 1
fi
pass "$SOURCE serves /metrics on 127.0.0.1:$MPORT"
if [[ "$SOURCE" == demo ]]; then
    # The Kubernetes probes: /healthz 200; /readyz 200, or 503 with reasons.
    hz="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/healthz")"
    rz="$(curl -s -o "$WORK/readyz" -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz")"
    if [[ "$hz" == 200 && ( "$rz" == 200 || ( "$rz" == 503 && -s "$WORK/readyz" ) ) ]]; then
        pass "probe endpoints: /healthz $hz, /readyz $rz ($(head -1 "$WORK/readyz"))"
    else
        bad "probe endpoints: /healthz $hz, /readyz $rz"
    fi
fi

# --- 2. a real Prometheus ------------------------------------------------------
cat > "$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: trailkeep
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PPORT" --log.level=warn > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PPORT"
scrapes=0
for _ in $(seq 1 60); do
    scrapes="$(promtool query instant -o json "$PROM" 'count_over_time(up{job="trailkeep"}[1m])' 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(float(r[0]["value"][1])) if r else 0)' 2>/dev/null || echo 0)"
    up="$(promtool query instant -o json "$PROM" 'up{job="trailkeep"}' 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["value"][1] if r else 0)' 2>/dev/null || echo 0)"
    [[ "$up" == 1 && "${scrapes:-0}" -ge 5 ]] && break
    sleep 1
done
if [[ "$up" != 1 ]]; then
    bad "Prometheus did not scrape trailkeep successfully (up=$up)"; tail -20 "$WORK/prometheus.log"; exit 1
fi
pass "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') scraped the $SOURCE $scrapes times (up == 1)"
curl -fsS "http://127.0.0.1:$MPORT/metrics" -o "$WORK/exposition.prom"

# --- 3. exposition lint ----------------------------------------------------------
if promtool check metrics < "$WORK/exposition.prom" > "$WORK/checkmetrics.log" 2>&1; then
    pass "promtool check metrics ($(grep -c '^# TYPE trailkeep_' "$WORK/exposition.prom") trailkeep_ families)"
else
    bad "promtool check metrics"; cat "$WORK/checkmetrics.log"
fi

# --- 4. every query evaluates ------------------------------------------------------
if ! "$PY" scripts/ci/metrics_queries.py queries dashboards dashboards/alerts.yml > "$WORK/queries.tsv"; then
    bad "could not extract queries"; exit 1
fi
n=0; nerr=0; nempty=0
while IFS=$'\t' read -r origin expr; do
    n=$((n + 1))
    if ! out="$(promtool query instant -o json "$PROM" "$expr" 2>&1)"; then
        bad "$origin: query failed: $expr"; echo "    $out"; nerr=$((nerr + 1)); continue
    fi
    if [[ "$out" == "[]" || -z "$out" ]]; then nempty=$((nempty + 1)); fi
done < "$WORK/queries.tsv"
if [[ $nerr == 0 ]]; then
    pass "$n queries (dashboard panels, variables, alert rules) evaluated without error ($((n - nempty)) returned data, $nempty empty)"
fi

# --- 5. referenced names are exposed -------------------------------------------------
"$PY" scripts/ci/metrics_queries.py names "$WORK/exposition.prom" "$WORK/queries.tsv" \
    scripts/ci/metrics-optional.txt src/telemetry/metrics.rs || fail=1

exit $fail
