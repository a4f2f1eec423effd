#!/usr/bin/env python3
"""Helpers for scripts/ci/check-metrics.sh.

    metrics_queries.py queries DASHBOARDS_DIR ALERTS_YML > queries.tsv
        One line per PromQL expression: origin<TAB>expr, with Grafana template
        variables substituted ($source etc. -> .*, $__rate_interval -> 1m,
        $__range -> 5m) and label_values(...) variable queries turned into
        `group by (label) (selector)`. Exits 1 on an unknown $variable.

    metrics_queries.py names EXPOSITION QUERIES_TSV OPTIONAL_TXT METRICS_RS
        Compares trailkeep_* names referenced in the queries with the sample
        names of the exposition (histograms: _bucket/_sum/_count). Prints
        PASS/WARN/FAIL lines; exits 1 on any FAIL.
"""
import json
import re
import sys
from pathlib import Path

BUILTIN = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m",
           "__range_s": "300", "__interval_ms": "15000"}


def substitute(expr, variables, origin):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        if name in variables:
            return ".*"  # regex match-all, as Grafana's "All" with allValue .*
        raise SystemExit(f"FAIL metrics: {origin}: unknown template variable ${name} in {expr!r}")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def dashboard_queries(path):
    d = json.loads(path.read_text())
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    out = []
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if m:
            q = f"group by ({m.group(2)}) ({m.group(1)})"
        elif q.startswith(("label_names(", "metrics(", "query_result(")):
            raise SystemExit(f"FAIL metrics: {path.name}: variable {v['name']}: unsupported query {q!r}")
        out.append((f"{path.name} variable ${v['name']}", substitute(q, variables, path.name)))
    panels = []
    for p in d.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    for p in panels:
        for t in p.get("targets", []):
            if "expr" in t:
                origin = f"{path.name} panel \"{p.get('title')}\" {t.get('refId', '')}"
                out.append((origin, substitute(t["expr"], variables, origin)))
    return out


def alert_queries(path):
    import yaml
    out = []
    for g in yaml.safe_load(path.read_text())["groups"]:
        for r in g["rules"]:
            out.append((f"{path.name} {r.get('alert') or r.get('record')}", r["expr"]))
    return out


def cmd_queries(dash_dir, alerts):
    rows = []
    for f in sorted(Path(dash_dir).glob("*.json")):
        rows += dashboard_queries(f)
    rows += alert_queries(Path(alerts))
    for origin, expr in rows:
        print(f"{origin}\t{' '.join(expr.split())}")


def cmd_names(exposition, queries_tsv, optional_txt, metrics_rs):
    samples = set()
    for line in Path(exposition).read_text().splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)", line)
        if m and not line.startswith("#"):
            samples.add(m.group(1))
    optional = {}
    for line in Path(optional_txt).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, why = line.partition("#")
            optional[name.strip()] = why.strip()
    defined = set(re.findall(r'(?:opts|HistogramOpts::new)\("([a-z_]+)"', Path(metrics_rs).read_text()))
    referenced = {}
    for line in Path(queries_tsv).read_text().splitlines():
        origin, expr = line.split("\t", 1)
        for n in re.findall(r"\btrailkeep_[a-zA-Z0-9_:]+", expr):
            referenced.setdefault(n, origin)
    fail = False
    warned = 0
    for n in sorted(referenced):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n in samples:
            continue
        short = base[len("trailkeep_"):]
        if n in optional or base in optional:
            if short in defined:
                print(f"WARN metrics: {n} not exposed by this run ({optional.get(n) or optional.get(base)}); defined in metrics.rs")
                warned += 1
                continue
            print(f"FAIL metrics: {n} is listed as optional but not defined in src/telemetry/metrics.rs")
            fail = True
            continue
        print(f"FAIL metrics: {referenced[n]} references {n}, which the service does not expose")
        fail = True
    exposed_tk = {s for s in samples if s.startswith("trailkeep_")}
    unused = sorted(f"trailkeep_{d}" for d in defined
                    if not any(r == f"trailkeep_{d}" or r.startswith(f"trailkeep_{d}_") for r in referenced))
    if unused:
        print(f"NOTE metrics: defined but used by no panel or alert: {', '.join(unused)}")
    if not fail:
        print(f"PASS metrics: {len(referenced) - warned} of {len(referenced)} trailkeep_* names in dashboard and alert "
              f"queries are exposed, {warned} optional (see WARN); exposition has {len(exposed_tk)} trailkeep_* sample names")
    return 1 if fail else 0


if __name__ == "__main__":
    if sys.argv[1] == "queries":
        cmd_queries(*sys.argv[2:4])
    elif sys.argv[1] == "names":
        sys.exit(cmd_names(*sys.argv[2:6]))
    else:
        sys.exit(__doc__)
