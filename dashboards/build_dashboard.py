#!/usr/bin/env python3
"""Writes dashboards/trailkeep.json, the Grafana dashboard for trailkeep.

The JSON is the artifact (import it into Grafana, or provision it); this
script is how it is kept consistent: edit here, run it, commit both.
`--check` exits 1 when the committed JSON differs from what this writes
(scripts/ci/ops-checks.sh runs that).

Every query uses the template variables $source, $tenant, $sink (multi-value,
"All" = regex .*) and the datasource variable ${datasource}.
"""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "trailkeep.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
STREAM_SEL = 'source=~"$source", tenant=~"$tenant"'
SINK_SEL = 'sink=~"$sink"'

_next_id = [0]


def pid():
    _next_id[0] += 1
    return _next_id[0]


def target(expr, legend, ref="A", instant=False):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return t


def thresholds(steps):
    return {
        "mode": "absolute",
        "steps": [{"color": c, "value": v} for c, v in steps],
    }


def timeseries(title, desc, targets, pos, unit="short", steps=None, min0=True,
               stack=False, bars=False):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0 if min0 else None,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if not min0:
        del custom["axisSoftMin"]
    fc = {"defaults": {"unit": unit, "custom": custom,
                       "color": {"mode": "palette-classic"}},
          "overrides": []}
    if steps:
        fc["defaults"]["thresholds"] = thresholds(steps)
        custom["thresholdsStyle"] = {"mode": "line"}
    return {
        "id": pid(),
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "fieldConfig": fc,
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom",
                       "showLegend": True, "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def stat(title, desc, expr, pos, unit="short", steps=None, reduce="lastNotNull",
         mappings=None):
    return {
        "id": pid(),
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": thresholds(steps or [("green", None)]),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": [reduce], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
        "targets": [target(expr, "", instant=True)],
    }


def state_timeline(title, desc, expr, legend, pos, ok_text, bad_text):
    return {
        "id": pid(),
        "type": "state-timeline",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": thresholds([("green", None), ("red", 1)]),
                "mappings": [{
                    "type": "value",
                    "options": {
                        "0": {"text": ok_text, "color": "green", "index": 0},
                        "1": {"text": bad_text, "color": "red", "index": 1},
                    },
                }],
                "custom": {"fillOpacity": 70, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False,
                       "calcs": []},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": [target(expr, legend)],
    }


def row(title, y):
    return {
        "id": pid(),
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def g(x, y, w, h):
    return {"h": h, "w": w, "x": x, "y": y}


def panels():
    p = []
    y = 0
    p.append(row("Overview", y)); y += 1
    p.append(stat(
        "Worst stream lag",
        "Largest lag of any selected stream: now minus the stream's watermark. "
        "Alert TrailkeepStreamLagHigh fires above 1 h for 15 min.",
        f'max(trailkeep_source_lag_seconds{{{STREAM_SEL}}})',
        g(0, y, 4, 4), unit="s",
        steps=[("green", None), ("orange", 1800), ("red", 3600)]))
    p.append(stat(
        "Least horizon headroom",
        "Smallest time left before unread records can fall out of a source's "
        "retention. Alert TrailkeepHorizonHeadroomLow fires under 7 days.",
        f'min(trailkeep_source_horizon_headroom_seconds{{{STREAM_SEL}}})',
        g(4, y, 4, 4), unit="s",
        steps=[("red", None), ("orange", 604800), ("green", 1209600)]))
    p.append(stat(
        "Saturated windows",
        "Streams whose last window hit the source's record cap (RingCentral: "
        "10,000): older records may have been evicted.",
        f'sum(trailkeep_source_window_saturated{{{STREAM_SEL}}}) or vector(0)',
        g(8, y, 4, 4), steps=[("green", None), ("red", 1)]))
    p.append(stat(
        "Horizon gaps (range)",
        "Intervals lost in the dashboard's time range because they fell out "
        "of the source's retention before being read.",
        f'sum(increase(trailkeep_source_gaps_total{{{STREAM_SEL}}}[$__range])) or vector(0)',
        g(12, y, 4, 4), steps=[("green", None), ("red", 0.5)]))
    p.append(stat(
        "Sinks halted",
        "Sinks stopped on a credential or configuration error (/readyz fails "
        "while any is halted).",
        f'sum(trailkeep_sink_halted{{{SINK_SEL}}}) or vector(0)',
        g(16, y, 4, 4), steps=[("green", None), ("red", 1)]))
    p.append(stat(
        "Dead letters (range)",
        "Events sinks gave up on in the time range (see `trailkeep dead-letters`).",
        f'sum(increase(trailkeep_sink_events_total{{{SINK_SEL}, outcome="dead_lettered"}}[$__range])) or vector(0)',
        g(20, y, 4, 4), steps=[("green", None), ("orange", 0.5)]))
    y += 4

    p.append(row("Sources: freshness and horizon", y)); y += 1
    p.append(timeseries(
        "Freshness: lag per stream",
        "Now minus each stream's watermark (end of the last complete window). "
        "Grows by poll_interval + settle_delay between polls; a steady climb "
        "means the stream is stuck.",
        [target(f'max by (source, tenant, stream) (trailkeep_source_lag_seconds{{{STREAM_SEL}}})',
                "{{source}}/{{tenant}}/{{stream}}")],
        g(0, y, 12, 8), unit="s", steps=[("green", None), ("red", 3600)]))
    p.append(timeseries(
        "Horizon headroom per stream",
        "Time left before records not yet read can fall out of the source's "
        "retention (RingCentral: 180 days). Under 7 days: act now.",
        [target(f'min by (source, tenant, stream) (trailkeep_source_horizon_headroom_seconds{{{STREAM_SEL}}})',
                "{{source}}/{{tenant}}/{{stream}}")],
        g(12, y, 12, 8), unit="s", steps=[("red", None), ("green", 604800)]))
    y += 8
    p.append(timeseries(
        "Time since last committed page",
        "Seconds since each stream last committed a page to the journal. "
        "Quiet tenants commit rarely; compare with the lag panel.",
        [target(f'time() - max by (source, tenant, stream) (trailkeep_source_last_success_timestamp_seconds{{{STREAM_SEL}}})',
                "{{source}}/{{tenant}}/{{stream}}")],
        g(0, y, 8, 6), unit="s"))
    p.append(state_timeline(
        "Window saturated",
        "1 while a stream's last window hit the source's record cap.",
        f'max by (source, tenant, stream) (trailkeep_source_window_saturated{{{STREAM_SEL}}})',
        "{{source}}/{{tenant}}/{{stream}}", g(8, y, 8, 6), "ok", "saturated"))
    p.append(timeseries(
        "Horizon gaps",
        "Intervals lost for good because they were past the source's "
        "retention when the stream got to them.",
        [target(f'sum by (source, tenant, stream) (increase(trailkeep_source_gaps_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}}/{{tenant}}/{{stream}}")],
        g(16, y, 8, 6), bars=True))
    y += 6

    p.append(row("Sources: ingest, requests, rate limits, auth", y)); y += 1
    p.append(timeseries(
        "Ingest rate",
        "Records fetched per second (before de-duplication), new events "
        "stored, and duplicates of re-pulled overlap.",
        [target(f'sum by (source, tenant, stream) (rate(trailkeep_source_events_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "fetched {{source}}/{{tenant}}/{{stream}}", "A"),
         target(f'sum by (source, tenant) (rate(trailkeep_journal_events_stored_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "stored {{source}}/{{tenant}}", "B"),
         target(f'sum by (source, tenant) (rate(trailkeep_journal_duplicates_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "duplicates {{source}}/{{tenant}}", "C")],
        g(0, y, 12, 8), unit="ops"))
    p.append(timeseries(
        "Source requests by status",
        "Requests to source APIs per second by HTTP status (0 = no response).",
        [target(f'sum by (source, status) (rate(trailkeep_source_requests_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}} {{status}}")],
        g(12, y, 12, 8), unit="reqps", stack=True))
    y += 8
    p.append(timeseries(
        "Rate-limit hits (429)",
        "429 answers per rate-limit group. trailkeep keeps its own budget from "
        "the response headers, so these should be rare; sustained hits mean "
        "another client shares the app's quota.",
        [target(f'sum by (source, tenant, group) (increase(trailkeep_source_rate_limit_hits_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}}/{{tenant}} {{group}}")],
        g(0, y, 8, 8), bars=True))
    p.append(timeseries(
        "Rate-limit waits",
        "Share of time spent waiting on rate budgets and penalties, per group "
        "(1 = waiting all the time).",
        [target(f'sum by (source, tenant, group) (rate(trailkeep_source_rate_limit_wait_seconds_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}}/{{tenant}} {{group}}")],
        g(8, y, 8, 8), unit="percentunit"))
    p.append(timeseries(
        "Source request latency",
        "p50 / p95 / p99 of source API requests.",
        [target(f'histogram_quantile({q}, sum by (le, source) (rate(trailkeep_source_request_duration_seconds_bucket{{{STREAM_SEL}}}[$__rate_interval])))',
                f"p{int(q * 100)} {{{{source}}}}", ref)
         for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))],
        g(16, y, 8, 8), unit="s"))
    y += 8
    p.append(timeseries(
        "Auth failures",
        "Failed source logins / token refreshes. Streams cannot pull while "
        "their source cannot authenticate (check the secret and the app's "
        "permissions).",
        [target(f'sum by (source, tenant) (increase(trailkeep_auth_refresh_total{{{STREAM_SEL}, outcome="failure"}}[$__rate_interval]))',
                "failures {{source}}/{{tenant}}", "A"),
         target(f'sum by (source, tenant) (increase(trailkeep_auth_refresh_total{{{STREAM_SEL}, outcome="success"}}[$__rate_interval]))',
                "successes {{source}}/{{tenant}}", "B")],
        g(0, y, 8, 8), bars=True))
    p.append(timeseries(
        "Fetch errors by class",
        "Failed window fetches (the worker retries with backoff).",
        [target(f'sum by (source, tenant, class) (increase(trailkeep_source_errors_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}}/{{tenant}} {{class}}")],
        g(8, y, 8, 8), bars=True))
    p.append(timeseries(
        "Malformed records dead-lettered",
        "Source records that could not be normalised (kept in the dead-letter table).",
        [target(f'sum by (source, tenant, stream) (increase(trailkeep_source_rejected_records_total{{{STREAM_SEL}}}[$__rate_interval]))',
                "{{source}}/{{tenant}}/{{stream}}")],
        g(16, y, 8, 8), bars=True))
    y += 8

    p.append(row("Journal and sinks", y)); y += 1
    p.append(timeseries(
        "Journal depth per sink",
        "Events in the journal not yet confirmed by each sink. The journal "
        "absorbs a slow or halted sink; watch this and sink lag together.",
        [target(f'max by (sink) (trailkeep_journal_depth_events{{{SINK_SEL}}})', "{{sink}}")],
        g(0, y, 8, 8)))
    p.append(timeseries(
        "Sink lag",
        "Age of the oldest event each sink has not confirmed (0 = caught up).",
        [target(f'max by (sink) (trailkeep_sink_lag_seconds{{{SINK_SEL}}})', "{{sink}}")],
        g(8, y, 8, 8), unit="s"))
    p.append(timeseries(
        "Sink throughput",
        "Events per second confirmed by each sink, and dead-lettered.",
        [target(f'sum by (sink, outcome) (rate(trailkeep_sink_events_total{{{SINK_SEL}}}[$__rate_interval]))',
                "{{sink}} {{outcome}}")],
        g(16, y, 8, 8), unit="ops"))
    y += 8
    p.append(timeseries(
        "Sink batch latency",
        "Time to deliver one batch, confirmation included (p50 / p95 / p99).",
        [target(f'histogram_quantile({q}, sum by (le, sink) (rate(trailkeep_sink_request_duration_seconds_bucket{{{SINK_SEL}}}[$__rate_interval])))',
                f"p{int(q * 100)} {{{{sink}}}}", ref)
         for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))],
        g(0, y, 8, 8), unit="s"))
    p.append(timeseries(
        "Sink errors and retries",
        "Failed deliveries by error code, and retried requests by reason.",
        [target(f'sum by (sink, code) (increase(trailkeep_sink_errors_total{{{SINK_SEL}}}[$__rate_interval]))',
                "error {{sink}} {{code}}", "A"),
         target(f'sum by (sink, reason) (increase(trailkeep_sink_retries_total{{{SINK_SEL}}}[$__rate_interval]))',
                "retry {{sink}} {{reason}}", "B")],
        g(8, y, 8, 8), bars=True))
    p.append(timeseries(
        "Pending Splunk acks",
        "Splunk HEC ackIds sent and not yet confirmed by the indexers. A "
        "steady climb means indexer acknowledgement is stuck.",
        [target(f'max by (sink) (trailkeep_splunk_pending_acks{{{SINK_SEL}}})', "{{sink}}")],
        g(16, y, 8, 8)))
    y += 8
    p.append(timeseries(
        "Dead letters by reason",
        "Events a sink gave up on, by reason. Inspect and replay with "
        "`trailkeep dead-letters`.",
        [target(f'sum by (sink, reason) (increase(trailkeep_dead_letters_total{{{SINK_SEL}}}[$__rate_interval]))',
                "{{sink}} {{reason}}")],
        g(0, y, 8, 8), bars=True))
    p.append(state_timeline(
        "Sink halted",
        "1 while a sink is halted on a credential or configuration error; "
        "sources keep pulling into the journal meanwhile.",
        f'max by (sink) (trailkeep_sink_halted{{{SINK_SEL}}})',
        "{{sink}}", g(8, y, 8, 8), "running", "halted"))
    p.append(state_timeline(
        "Journal full",
        "1 while the journal is at journal.max_bytes and pulling is paused.",
        'max by (journal) (trailkeep_journal_full)',
        "{{journal}}", g(16, y, 8, 8), "ok", "full"))
    y += 8

    p.append(row("Process", y)); y += 1
    p.append(state_timeline(
        "Scrape target down",
        "Prometheus' `up` for trailkeep targets (shown inverted: 1 = down).",
        '1 - max by (instance) (up{job=~"$job"})',
        "{{instance}}", g(0, y, 12, 6), "up", "down"))
    p.append({
        "id": pid(),
        "type": "table",
        "title": "Running versions",
        "description": "trailkeep_build_info per instance.",
        "datasource": DS,
        "gridPos": g(12, y, 12, 6),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [{"id": "labelsToFields", "options": {}}],
        "targets": [target('max by (instance, version) (trailkeep_build_info)', "", instant=True)],
    })
    return p


def query_var(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"PrometheusVariableQueryEditor-{name}", "qryType": 1},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


def dashboard():
    return {
        "uid": "trailkeep-overview",
        "title": "trailkeep",
        "description": "Audit-trail pull freshness, source horizon, rate limits, journal and sinks. Alerts: dashboards/alerts.yml.",
        "tags": ["trailkeep", "audit"],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": 42,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "weekStart": "",
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "refresh": 1,
                "regex": "",
                "options": [],
                "hide": 0,
                "multi": False,
                "includeAll": False,
                "skipUrlSync": False,
            },
            query_var("job", "Job", "label_values(trailkeep_build_info, job)"),
            query_var("source", "Source", "label_values(trailkeep_source_events_total, source)"),
            query_var("tenant", "Tenant",
                      'label_values(trailkeep_source_events_total{source=~"$source"}, tenant)'),
            query_var("sink", "Sink", "label_values(trailkeep_sink_events_total, sink)"),
        ]},
        "panels": panels(),
    }


def validate(d):
    """Layout sanity Grafana does not enforce: unique ids, panels inside the
    24-column grid and not overlapping."""
    cells, ids = {}, set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"panel {p['title']!r} is wider than the grid"
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def main():
    d = dashboard()
    validate(d)
    text = json.dumps(d, indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run {Path(__file__).name} and commit", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
