#!/usr/bin/env python3
"""Checks deploy/grafana/passerelle.json against a running Passerelle (docs/container.md).

    check-dashboard.py --metrics http://127.0.0.1:9090/metrics [--prometheus http://127.0.0.1:9099]

1. The dashboard is valid JSON, every panel has a query, and every query names the
   Prometheus data source variable.
2. Every metric a query uses is a family the proxy's /metrics declares (# TYPE), a
   histogram's _bucket/_sum/_count included.
3. With --prometheus (a Prometheus scraping that proxy): every query, with the dashboard
   variables set to "all", is accepted by Prometheus, and the panels the issue asks for
   (requests by service/outcome, latency, signing time, pools and handshakes,
   certificate days left, reloads, refusals) return data.

Exit 0 when every check passes, 1 otherwise. Standard library only.
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

DEFAULT_DASHBOARD = __file__.rsplit("/", 2)[0] + "/grafana/passerelle.json"
# Panels that must show data once the proxy has served DMP and INSi requests.
MUST_HAVE_DATA = [
    "Requests by service and outcome",
    "Request latency p50 / p99",
    "Upstream latency p50 / p99",
    "Signing time p50 / p99",
    "TLS handshakes / s",
    "New upstream connections / s",
    "Idle pooled connections",
    "Certificate days left",
    "Reloads",
    "Refusals",
]
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$job": ".*",
    "$instance": ".*",
    "$tenant": ".*",
}
# Words of PromQL that look like metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "vector", "or", "and", "unless", "on", "ignoring", "changes",
    "label_values", "time", "le", "bool", "offset", "topk", "bottomk", "abs", "delta",
}


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def queries(dashboard):
    """(where, expr) for every panel query, annotation and variable."""
    out = []

    def walk(panels):
        for p in panels:
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t.get("expr", ""), t, p))
    walk(dashboard.get("panels", []))
    for a in dashboard.get("annotations", {}).get("list", []):
        if "expr" in a:
            out.append(("annotation " + a.get("name", "?"), a["expr"], a, None))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append(("variable $" + v["name"], q, v, None))
    return out


def metric_names(expr):
    expr = re.sub(r"label_values\((.*),\s*\w+\)", r"\1", expr)  # a variable's label
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                   # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)                  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr):
        word = m.group(1)
        if word in PROMQL_WORDS or word.startswith("__"):
            continue
        names.add(word)
    return names


def exported_families(text):
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            families[name] = kind
    return families


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashboard", default=DEFAULT_DASHBOARD)
    ap.add_argument("--metrics", required=True, help="URL of the proxy's /metrics (or a file)")
    ap.add_argument("--prometheus", help="base URL of a Prometheus scraping that proxy")
    args = ap.parse_args()
    failures = []

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    found = queries(dashboard)
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    print(f"dashboard {args.dashboard}: {len(panels)} panels, {len(found)} queries")
    for p in panels:
        if not p.get("targets"):
            failures.append(f"panel {p.get('title')!r} has no query")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            failures.append(f"panel {p.get('title')!r} does not use the $datasource variable")

    if args.metrics.startswith("http"):
        text = fetch(args.metrics)
    else:
        with open(args.metrics) as f:
            text = f.read()
    families = exported_families(text)
    known = set(families)
    for name, kind in families.items():
        if kind == "histogram":
            known |= {name + "_bucket", name + "_sum", name + "_count"}
    used = set()
    for where, expr, _, _ in found:
        for name in metric_names(expr):
            used.add(name)
            if name not in known:
                failures.append(f"{where}: {name} is not exported by the proxy ({expr})")
    unused = sorted(n for n in families if n not in {u.rsplit("_bucket", 1)[0] for u in used})
    print(f"metrics used: {len(used)} of {len(families)} exported families; not shown: {', '.join(unused) or 'none'}")

    if args.prometheus:
        with_data = {}
        for where, expr, target, panel in found:
            if where.startswith("variable"):
                continue
            q = expr
            for k in sorted(VARIABLES, key=len, reverse=True):
                q = q.replace(k, VARIABLES[k])
            url = args.prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                answer = json.loads(fetch(url))
            except Exception as e:  # HTTP 400: a query Prometheus refuses
                body = getattr(e, "read", lambda: b"")().decode(errors="replace")
                failures.append(f"{where}: Prometheus refused {q!r}: {e} {body}")
                continue
            if answer.get("status") != "success":
                failures.append(f"{where}: {answer}")
                continue
            n = len(answer["data"]["result"])
            with_data[where] = with_data.get(where, 0) + n
        for title in MUST_HAVE_DATA:
            if not with_data.get(title):
                failures.append(f"panel {title!r} shows no data")
        shown = sum(1 for v in with_data.values() if v)
        print(f"prometheus: every query accepted; {shown} of {len(with_data)} panels and annotations show data now")

    for f in failures:
        print("FAIL", f)
    print("dashboard check:", "FAIL" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
