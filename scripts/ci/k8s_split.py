#!/usr/bin/env python3
"""Splits a rendered kustomize stream for scripts/ci/check-k8s.sh.

    k8s_split.py RENDERED OUTDIR ALERTS_YML

Writes OUTDIR/core.yaml (built-in Kubernetes kinds, for
`kubernetes-validate --strict`) and checks the Prometheus-operator custom
resources here, because no Kubernetes schema covers them:

- PrometheusRule: its spec must equal dashboards/alerts.yml exactly (parsed
  YAML); the spec is also written to OUTDIR/prometheusrule-spec.yml for
  `promtool check rules`.
- ServiceMonitor: the keys used must be known ServiceMonitor fields
  (monitoring.coreos.com/v1), its selector must match a Service of the
  render and each endpoint port must name a port of that Service.

- The trailkeep config in the ConfigMap agrees with the StatefulSet: the
  journal lives on the PVC mount, every `{ file = ... }` secret is under the
  Secret's mount, telemetry.listen's port is the container's metrics port,
  and pipeline.shutdown_grace is below terminationGracePeriodSeconds. The
  config is written to OUTDIR/config.toml for `trailkeep check`.

Any other custom kind is an error (add a check here first).
Exit 1 on any problem, printing each.
"""
import re
import sys
import tomllib
from pathlib import Path

import yaml

SM_SPEC = {"jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector",
           "namespaceSelector", "sampleLimit", "targetLimit", "labelLimit",
           "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
           "scrapeProtocols", "fallbackScrapeProtocol", "keepDroppedTargets",
           "scrapeClass", "bodySizeLimit", "selectorMechanism"}
SM_ENDPOINT = {"port", "targetPort", "path", "scheme", "params", "interval",
               "scrapeTimeout", "tlsConfig", "bearerTokenFile", "bearerTokenSecret",
               "authorization", "honorLabels", "honorTimestamps", "trackTimestampsStaleness",
               "basicAuth", "oauth2", "metricRelabelings", "relabelings", "proxyUrl",
               "followRedirects", "enableHttp2", "filterRunning", "noProxy",
               "proxyFromEnvironment", "proxyConnectHeader"}
PR_SPEC = {"groups"}


def main():
    rendered, outdir, alerts = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    outdir.mkdir(parents=True, exist_ok=True)
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    errors, core = [], []
    services = [d for d in docs if d.get("kind") == "Service"]
    for d in docs:
        api, kind = d.get("apiVersion", ""), d.get("kind", "")
        name = d.get("metadata", {}).get("name", "?")
        where = f"{kind}/{name}"
        if api == "monitoring.coreos.com/v1" and kind == "PrometheusRule":
            spec = d.get("spec") or {}
            if set(spec) - PR_SPEC:
                errors.append(f"{where}: unknown spec keys {sorted(set(spec) - PR_SPEC)}")
            want = yaml.safe_load(alerts.read_text())
            if spec != want:
                errors.append(f"{where}: spec differs from {alerts} (run scripts/ci/sync-prometheusrule.sh)")
            (outdir / "prometheusrule-spec.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
            print(f"  {where}: spec == {alerts.name} ({sum(len(g['rules']) for g in spec.get('groups', []))} rules)")
        elif api == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
            spec = d.get("spec") or {}
            if set(spec) - SM_SPEC:
                errors.append(f"{where}: unknown spec keys {sorted(set(spec) - SM_SPEC)}")
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            if not sel:
                errors.append(f"{where}: spec.selector.matchLabels is required here")
            matched = [s for s in services
                       if sel and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            if not matched:
                errors.append(f"{where}: selector {sel} matches no Service in the render")
            if not spec.get("endpoints"):
                errors.append(f"{where}: spec.endpoints is empty")
            for i, ep in enumerate(spec.get("endpoints") or []):
                if set(ep) - SM_ENDPOINT:
                    errors.append(f"{where}: endpoints[{i}] unknown keys {sorted(set(ep) - SM_ENDPOINT)}")
                ports = {p.get("name") for s in matched for p in s["spec"].get("ports", [])}
                if ep.get("port") not in ports:
                    errors.append(f"{where}: endpoints[{i}].port {ep.get('port')!r} is not a port of {[s['metadata']['name'] for s in matched]}")
            job = spec.get("jobLabel")
            if job and not all(s["metadata"].get("labels", {}).get(job) == "trailkeep" for s in matched):
                errors.append(f"{where}: jobLabel {job} does not yield job=\"trailkeep\" (alerts.yml expects it)")
            print(f"  {where}: selector matches {[s['metadata']['name'] for s in matched]}, endpoints ok")
        elif "/" in api and not api.split("/")[0].endswith(".k8s.io") and api.split("/")[0] not in ("apps", "batch", "policy", "autoscaling"):
            errors.append(f"{where}: custom kind {api} without a check in k8s_split.py")
        else:
            core.append(d)
    errors += check_config(docs, outdir)
    (outdir / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    for e in errors:
        print(f"  ERROR {e}")
    return 1 if errors else 0


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(text).strip())
    if not m:
        raise ValueError(f"unsupported duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def secret_files(node, path=""):
    if isinstance(node, dict):
        if set(node) == {"file"}:
            yield path, node["file"]
        for k, v in node.items():
            yield from secret_files(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from secret_files(v, f"{path}[{i}]")


def check_config(docs, outdir):
    errors = []
    sts = [d for d in docs if d.get("kind") == "StatefulSet"]
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and "config.toml" in (d.get("data") or {})]
    if len(sts) != 1 or len(cms) != 1:
        return [f"expected one StatefulSet and one ConfigMap with config.toml, got {len(sts)} and {len(cms)}"]
    st, cm = sts[0], cms[0]
    text = cm["data"]["config.toml"]
    (outdir / "config.toml").write_text(text)
    cfg = tomllib.loads(text)
    pod = st["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    pvcs = {t["metadata"]["name"] for t in st["spec"].get("volumeClaimTemplates", [])}
    cm_vol = [n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    if not cm_vol or mounts.get(cm_vol[0]) != "/etc/trailkeep":
        errors.append("ConfigMap is not mounted at /etc/trailkeep")
    data_mounts = [mounts[n] for n in pvcs if n in mounts]
    jpath = cfg.get("journal", {}).get("path", "")
    if not any(jpath.startswith(m.rstrip("/") + "/") for m in data_mounts):
        errors.append(f"journal.path {jpath} is not on a PVC mount {data_mounts}")
    secret_mounts = [mounts[n] for n, v in vols.items() if "secret" in v and n in mounts]
    refs = list(secret_files(cfg))
    for key, f in refs:
        if not any(f.startswith(m.rstrip("/") + "/") for m in secret_mounts):
            errors.append(f"{key}: secret file {f} is not under a Secret mount {secret_mounts}")
    listen = cfg.get("telemetry", {}).get("listen", "0.0.0.0:9464")
    port = int(listen.rsplit(":", 1)[1])
    cports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if cports.get("metrics") != port:
        errors.append(f"telemetry.listen port {port} != container port metrics {cports.get('metrics')}")
    grace = seconds(cfg.get("pipeline", {}).get("shutdown_grace", "8s"))
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    if not grace + 5 <= tgp:
        errors.append(f"pipeline.shutdown_grace {grace}s must be at least 5s below terminationGracePeriodSeconds {tgp}")
    print(f"  config.toml: journal on PVC, {len(refs)} secret files under {secret_mounts}, "
          f"metrics port {port}, shutdown_grace {grace:g}s < terminationGracePeriodSeconds {tgp}")
    return errors


if __name__ == "__main__":
    sys.exit(main())
