#!/usr/bin/env python3
"""Static checks of the Grafana dashboard and the Prometheus alert rules.

alerts.yml and alerts_test.yml are read with PyYAML (scripts/ops_yaml.py).
Run from the repo root:

    python3 scripts/check_dashboard.py                 # check, exit 1 on any problem
    python3 scripts/check_dashboard.py --list-metrics  # print metric names, one a line
    python3 scripts/check_dashboard.py --list-metrics --base
    python3 scripts/check_dashboard.py --promql-rules OUT.json   # check, then write
                                   # the panel exprs as a rules file for promtool

--list-metrics prints every metric name the dashboard and alerts.yml query, as
written in the expressions (so histograms appear as `..._bucket`), sorted and
de-duplicated, nothing else on stdout. Recording rules defined in alerts.yml and
Prometheus' own series (`up`, `ALERTS`) are left out: every printed name must
appear as a sample name in the /metrics output of a running gateway
(`stampede_*`) or origin-sim (`origin_*`). With --base, names are reduced to the
metric family listed in README.md (Metrics section) (`_bucket`/`_sum`/`_count` stripped).

Checks, dashboard (grafana/dashboards/stampede.json):
  * valid JSON, schemaVersion >= 39, a uid;
  * panel ids unique; every panel has a gridPos (x, y, w, h; x + w <= 24) and
    panels do not overlap;
  * every panel's and every target's datasource is {"type": "prometheus",
    "uid": "prometheus"}; annotation queries likewise (the built-in Grafana
    annotation excepted); every query variable likewise;
  * a `gateway` variable from label_values(stampede_requests_total, gateway);
  * every $variable used in an expr is defined (or a Grafana $__ built-in).
Checks, alerts.yml (and alerts_test.yml):
  * every alert has summary, description, runbook_url annotations and a
    severity label (critical | warning | info);
  * runbook_url is docs/RUNBOOK.md#<anchor> and the anchor exists there;
  * alerts_test.yml has, for every alert, a case where it fires and one where
    it does not (`exp_alerts: []`).
Checks, every expr (dashboard and alerts.yml):
  * every metric name is in README.md (Metrics section) (after stripping _bucket, _sum,
    _count), a recording rule of alerts.yml, or `up` / `ALERTS`;
  * every label in a selector exists on that metric (METRICS.md labels, plus
    `gateway` on gateway metrics, `job`, `instance`, `le` on `_bucket`) and
    literal values of enumerated labels (e.g. outcome="miss") are listed.
"""

from __future__ import annotations

import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ops_yaml import load as load_yaml_subset, yaml  # noqa: E402

DS = {"type": "prometheus", "uid": "prometheus"}
DASHBOARD_EXPRS: list = []  # (where, expr) of every panel target, filled by check_dashboard
BUILTIN_SERIES = {"up", "ALERTS"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
SEVERITIES = {"critical", "warning", "info"}

_TOKEN = re.compile(r'''"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|[{}(),]|[A-Za-z_:][A-Za-z0-9_:]*|[0-9][0-9A-Za-z_.]*|\S''')
_MATCHER = re.compile(r'''\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*,?''')


# --------------------------------------------------------------------------
# README.md (Metrics section)


def load_metrics_doc(path: str) -> dict:
    """name -> {"type": str, "labels": {label: set(values) | None}}"""
    metrics = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # The README documents the metrics between these markers.
    if "<!-- metrics:start -->" in text:
        text = text.split("<!-- metrics:start -->", 1)[1].split("<!-- metrics:end -->", 1)[0]
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|([^|]*)\|([^|]*)\|", line)
        if not m:
            continue
        name, mtype, labels_col = m.group(1), m.group(2).strip(), m.group(3)
        labels = {}
        for part in labels_col.split(";"):
            ticks = re.findall(r"`([^`]*)`", part)
            if not ticks:
                continue
            label = ticks[0]
            values = None
            if "as above" in part:
                # "`outcome` (as above)": the values listed for that label earlier
                values = "as above"
            elif "=" in part:
                prose = re.sub(r"`[^`]*`", "", part.split("=", 1)[1])
                if re.fullmatch(r"[\s,]*", prose):
                    values = set(ticks[1:])
            labels[label] = values
        metrics[name] = {"type": mtype, "labels": labels}
    # resolve "(as above)" against the same label name earlier in the file
    seen: dict = {}
    for meta in metrics.values():
        for label, values in meta["labels"].items():
            if values == "as above":
                meta["labels"][label] = seen.get(label)
            elif isinstance(values, set):
                seen.setdefault(label, values)
    return metrics


# --------------------------------------------------------------------------
# PromQL scanning (enough to find metric names and their matchers)


def scan_promql(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Return [(metric name, [(label, op, value), ...]), ...] for each selector."""
    toks = _TOKEN.findall(re.sub(r"\[[^\]]*\]", " ", expr))
    out = []
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "$":  # Grafana variable outside a string: $name or ${name[:fmt]}
            if nxt == "{":
                i = toks.index("}", i) + 1 if "}" in toks[i:] else len(toks)
            else:
                i += 2
            continue
        if t in GROUPING and nxt == "(":
            depth = 0
            while i < len(toks):
                if toks[i] == "(":
                    depth += 1
                elif toks[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
            continue
        if t == "{":
            j = toks.index("}", i) if "}" in toks[i:] else len(toks)
            matchers = _parse_matchers("".join(toks[i + 1 : j]))
            name = next((v for (lab, op, v) in matchers if lab == "__name__" and op == "="), None)
            if name is None:
                raise ValueError(f"selector without a metric name in {expr!r}")
            out.append((name, [m for m in matchers if m[0] != "__name__"]))
            i = j + 1
            continue
        if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", t):
            if nxt == "(" or t in AGGREGATIONS or t.lower() in KEYWORDS:
                i += 1
                continue
            matchers = []
            if nxt == "{":
                j = toks.index("}", i)
                matchers = _parse_matchers("".join(toks[i + 2 : j]))
                i = j
            out.append((t, matchers))
        i += 1
    return out


def _parse_matchers(text: str) -> list[tuple[str, str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _MATCHER.match(text, pos)
        if not m:
            raise ValueError(f"cannot read label matchers {text!r}")
        raw = m.group(3)
        value = raw[1:-1]
        out.append((m.group(1), m.group(2), value))
        pos = m.end()
    return out


def base_name(name: str, metrics: dict) -> str:
    if name in metrics:
        return name
    for suf in HIST_SUFFIXES:
        if name.endswith(suf) and name[: -len(suf)] in metrics:
            return name[: -len(suf)]
    return name


def check_expr(where: str, expr: str, metrics: dict, recorded: set, found: set) -> list[str]:
    errors = []
    try:
        refs = scan_promql(expr)
    except ValueError as e:
        return [f"{where}: {e}"]
    if not refs:
        errors.append(f"{where}: no metric in expr {expr!r}")
    for name, matchers in refs:
        if name in recorded or name in BUILTIN_SERIES:
            continue
        base = base_name(name, metrics)
        if base not in metrics:
            errors.append(f"{where}: metric {name!r} is not documented in README.md (Metrics)")
            continue
        if name != base and "histogram" not in metrics[base]["type"]:
            errors.append(f"{where}: {name!r}: {base} is a {metrics[base]['type']}, not a histogram")
        found.add(name)
        allowed = dict(metrics[base]["labels"])
        allowed.update({"job": None, "instance": None})
        if base.startswith("stampede_"):
            allowed["gateway"] = None
        if name.endswith("_bucket"):
            allowed["le"] = None
        for label, op, value in matchers:
            if label not in allowed:
                errors.append(f"{where}: {name}: label {label!r} is not one of {sorted(allowed)}")
                continue
            values = allowed[label]
            if values is None or "$" in value:
                continue
            if op in ("=", "!="):
                cands = [value] if value else []
            else:
                cands = value.split("|") if re.fullmatch(r"[\w|]+", value) else []
            for v in cands:
                if v not in values:
                    errors.append(f"{where}: {name}{{{label}{op}{value!r}}}: {v!r} is not a documented value of {label} ({sorted(values)})")
    return errors


# --------------------------------------------------------------------------
# docs/RUNBOOK.md anchors


def runbook_anchors(path: str) -> set:
    anchors = set()
    counts: dict = {}
    with open(path, encoding="utf-8") as f:
        in_code = False
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for m in re.finditer(r'<a\s+(?:id|name)="([^"]+)"', line):
                anchors.add(m.group(1))
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                text = re.sub(r"`|\*\*|__", "", m.group(1))
                text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
                slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
                n = counts.get(slug, 0)
                counts[slug] = n + 1
                anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


# --------------------------------------------------------------------------
# alerts.yml / alerts_test.yml


def load_rules(path: str) -> list[dict]:
    doc = load_yaml_subset(path) or {}
    rules = []
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            r = dict(r)
            r["_group"] = g.get("name")
            rules.append(r)
    return rules


def check_alerts(rules_path: str, tests_path: str, runbook_path: str, metrics: dict, recorded: set, found: set) -> list[str]:
    errors = []
    rules = load_rules(rules_path)
    anchors = runbook_anchors(runbook_path) if os.path.exists(runbook_path) else None
    if anchors is None:
        errors.append(f"{runbook_path} not found (alerts link to it)")
    names = []
    for r in rules:
        where = f"{rules_path}: {r.get('alert') or r.get('record')}"
        expr = r.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            errors.append(f"{where}: no expr")
            continue
        errors += check_expr(where, expr, metrics, recorded, found)
        if "alert" not in r:
            continue
        names.append(r["alert"])
        ann = r.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                errors.append(f"{where}: missing annotation {key}")
        sev = (r.get("labels") or {}).get("severity")
        if sev not in SEVERITIES:
            errors.append(f"{where}: severity label {sev!r} not in {sorted(SEVERITIES)}")
        url = ann.get("runbook_url") or ""
        m = re.fullmatch(r"(?:.*/)?docs/RUNBOOK\.md#([\w\-]+)", url)
        if not m:
            errors.append(f"{where}: runbook_url {url!r} is not docs/RUNBOOK.md#<anchor>")
        elif anchors is not None and m.group(1) not in anchors:
            errors.append(f"{where}: runbook_url anchor #{m.group(1)} not found in {runbook_path}")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        errors.append(f"{rules_path}: duplicate alert names {sorted(dup)}")

    tests = load_yaml_subset(tests_path) or {}
    fires, quiet = set(), set()
    for t in tests.get("tests") or []:
        for case in t.get("alert_rule_test") or []:
            name = case.get("alertname")
            if case.get("exp_alerts"):
                fires.add(name)
            else:
                quiet.add(name)
    for n in names:
        if n not in fires:
            errors.append(f"{tests_path}: no test case where {n} fires")
        if n not in quiet:
            errors.append(f"{tests_path}: no test case where {n} does not fire (exp_alerts: [])")
    return errors


# --------------------------------------------------------------------------
# dashboard


def _panels(panels):
    for p in panels:
        yield p
        if p.get("type") == "row":
            yield from _panels(p.get("panels") or [])


def check_dashboard(path: str, metrics: dict, recorded: set, found: set) -> list[str]:
    errors = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: {e}"]
    sv = dash.get("schemaVersion")
    if not isinstance(sv, int) or sv < 39:
        errors.append(f"{path}: schemaVersion {sv!r} < 39")
    if not dash.get("uid"):
        errors.append(f"{path}: no uid")

    variables = {}
    for v in (dash.get("templating") or {}).get("list") or []:
        variables[v.get("name")] = v
        if v.get("type") == "query" and v.get("datasource") != DS:
            errors.append(f"{path}: variable {v.get('name')}: datasource {v.get('datasource')!r} != {DS}")
    gw = variables.get("gateway")
    q = gw.get("query") if gw else None
    q = q.get("query") if isinstance(q, dict) else q
    if not gw or gw.get("type") != "query" or not re.fullmatch(r"\s*label_values\(\s*stampede_requests_total\s*,\s*gateway\s*\)\s*", q or ""):
        errors.append(f"{path}: needs a query variable `gateway` = label_values(stampede_requests_total, gateway)")
    for name, v in variables.items():
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*(?:\{[^}]*\})?)\s*,\s*(\w+)\s*\)\s*", q or "") if v.get("type") == "query" else None
        if m:
            where = f"{path}: variable {name}"
            errors += check_expr(where, m.group(1), metrics, recorded, found)
            base = base_name(re.match(r"[\w:]+", m.group(1)).group(0), metrics)
            if base in metrics and m.group(2) not in set(metrics[base]["labels"]) | {"gateway", "job", "instance"}:
                errors.append(f"{where}: label {m.group(2)!r} not on {base}")

    def check_vars(where, expr):
        errs = []
        for m in re.finditer(r"\$\{?(\w+)", expr):
            if not m.group(1).startswith("__") and m.group(1) not in variables:
                errs.append(f"{where}: undefined variable ${m.group(1)}")
        return errs

    for a in (dash.get("annotations") or {}).get("list") or []:
        if a.get("builtIn"):
            continue
        where = f"{path}: annotation {a.get('name')!r}"
        if a.get("datasource") != DS:
            errors.append(f"{where}: datasource {a.get('datasource')!r} != {DS}")
        if a.get("expr"):
            errors += check_expr(where, a["expr"], metrics, recorded, found)
            DASHBOARD_EXPRS.append((where, a["expr"]))

    ids = {}
    rects = []
    for p in _panels(dash.get("panels") or []):
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        pid = p.get("id")
        if not isinstance(pid, int):
            errors.append(f"{where}: id must be an integer")
        elif pid in ids:
            errors.append(f"{where}: id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = p.get("title")
        gp = p.get("gridPos")
        if not isinstance(gp, dict) or not all(isinstance(gp.get(k), int) for k in "xywh"):
            errors.append(f"{where}: gridPos with integer x, y, w, h required")
        else:
            if gp["w"] <= 0 or gp["h"] <= 0 or gp["x"] < 0 or gp["x"] + gp["w"] > 24:
                errors.append(f"{where}: gridPos {gp} outside the 24-column grid")
            for other_title, o in rects:
                if gp["x"] < o["x"] + o["w"] and o["x"] < gp["x"] + gp["w"] and gp["y"] < o["y"] + o["h"] and o["y"] < gp["y"] + gp["h"]:
                    errors.append(f"{where}: gridPos overlaps panel {other_title!r}")
            rects.append((p.get("title"), gp))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DS:
            errors.append(f"{where}: datasource {p.get('datasource')!r} != {DS}")
        targets = p.get("targets") or []
        if p.get("type") not in ("text", "news", "dashlist") and not targets:
            errors.append(f"{where}: no targets")
        refids = [t.get("refId") for t in targets]
        if len(set(refids)) != len(refids) or None in refids:
            errors.append(f"{where}: refIds must be present and unique: {refids}")
        for t in targets:
            tw = f"{where} target {t.get('refId')}"
            if t.get("datasource") != DS:
                errors.append(f"{tw}: datasource {t.get('datasource')!r} != {DS}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{tw}: empty expr")
                continue
            errors += check_vars(tw, expr)
            errors += check_expr(tw, expr, metrics, recorded, found)
            DASHBOARD_EXPRS.append((tw, expr))
    return errors


def promql_rules_file(path: str) -> None:
    """Write the dashboard's exprs as a Prometheus rules file (JSON is YAML), so
    `promtool check rules` parses them. Grafana variables in range and subquery
    brackets ($__rate_interval, $ttl, ...) become 1m; variables inside label
    matcher strings stay (they are valid strings)."""
    rules = []
    for n, (where, expr) in enumerate(DASHBOARD_EXPRS, 1):
        e = re.sub(r"\$\{?\w+(?::\w+)?\}?(?=\s*[\]:])", "1m", expr)
        rules.append({"record": f"dashboard_expr_check_{n}", "expr": e, "labels": {"panel": where[-120:]}})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}, f, indent=1)


def main(argv: list[str]) -> int:
    list_metrics = "--list-metrics" in argv
    base = "--base" in argv
    rules_out = None
    if "--promql-rules" in argv:
        i = argv.index("--promql-rules")
        rules_out = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    dashboard = "grafana/dashboards/stampede.json"
    rules_path, tests_path = "alerts.yml", "alerts_test.yml"
    metrics_doc, runbook = "README.md", "docs/RUNBOOK.md"
    for a in argv:
        if not a.startswith("--"):
            dashboard = a
    try:
        metrics = load_metrics_doc(metrics_doc)
        if not metrics:
            raise SystemExit(f"check_dashboard: no metrics table found in {metrics_doc}")
        recorded = {r["record"] for r in load_rules(rules_path) if "record" in r}
        found: set = set()
        errors = check_dashboard(dashboard, metrics, recorded, found)
        errors += check_alerts(rules_path, tests_path, runbook, metrics, recorded, found)
    except (OSError, yaml.YAMLError) as e:
        errors, found = [str(e)], set()
    if list_metrics:
        if errors:
            for e in errors:
                print(f"check_dashboard: {e}", file=sys.stderr)
            return 1
        names = {base_name(n, metrics) for n in found} if base else found
        for n in sorted(names):
            print(n)
        return 0
    if errors:
        for e in errors:
            print(f"check_dashboard: {e}", file=sys.stderr)
        return 1
    if rules_out:
        promql_rules_file(rules_out)
        print(f"check_dashboard: wrote {len(DASHBOARD_EXPRS)} dashboard exprs to {rules_out} (for promtool check rules)")
    fams = sorted({base_name(n, metrics) for n in found})
    unused = sorted(set(metrics) - set(fams))
    print(f"check_dashboard: {dashboard}, {rules_path}, {tests_path}: ok; {len(found)} series names, {len(fams)} of {len(metrics)} documented metrics used"
          + (f" (not used: {', '.join(unused)})" if unused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
