#!/usr/bin/env python3
"""Queries every Grafana panel expression and checks every rule against a live Prometheus.

  live.py PROMETHEUS_URL NAMESPACE PODS RATE_INTERVAL RANGE METRICS_FILE...

PROMETHEUS_URL scrapes running paystream processes (target labels
namespace=NAMESPACE, pod=one of the comma-separated PODS) with
deploy/prometheus/rules.yaml loaded; METRICS_FILEs are copies of their /metrics. For
each dashboard in deploy/grafana/dashboards:
- each template variable's label_values() query offers NAMESPACE, and one of PODS;
- each panel expression, with $namespace, $pod, $__rate_interval and $__range
  substituted, names only metrics that paystream exports or rules.yaml records, runs
  without error and returns at least one sample that is a number (not NaN). An
  expression that deploy/grafana/generate.py marks `may_be_empty` may return nothing:
  it is reported with its reason, not skipped silently.
Then every rule group of rules.yaml is loaded, every rule has been evaluated with health
"ok", and the target is up. Ends with "N passed, N failed". Needs PyYAML.
"""

import importlib.util
import json
import math
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent


def get(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 400/422 carry the PromQL error as JSON
        return json.load(error)


def generator():
    spec = importlib.util.spec_from_file_location("generate", DEPLOY / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv):
    base, namespace, pods, rate_interval, time_range = argv[1:6]
    pods = pods.split(",")
    pod = "|".join(pods)  # what Grafana makes of a multi-value $pod
    passed, failed = 0, 0

    def check(ok, what, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {what}{': ' + detail if detail else ''}")
        return ok

    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())
    exported = set()
    for metrics_file in argv[6:]:
        for line in Path(metrics_file).read_text().splitlines():
            if line and not line.startswith("#"):
                exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = exported | recorded | {"ALERTS", "up"}

    def substitute(text):
        return (text.replace("$__rate_interval", rate_interval).replace("$__range", time_range)
                .replace("$namespace", namespace).replace("$pod", pod))

    may_be_empty = {(uid, title, expr): reason for uid, title, expr, reason in generator().expressions() if reason}
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    check(bool(dashboards), "dashboards found")
    queried = 0
    for path in dashboards:
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable.get("definition", ""))
            if variable["type"] != "query":
                continue
            if check(bool(match), f"{path.name}: variable {variable['name']} is a label_values() query"):
                selector, label = substitute(match.group(1)), match.group(2)
                values = get(base, f"/api/v1/label/{label}/values", **{"match[]": selector}).get("data") or []
                expected = {"namespace": [namespace], "pod": pods}.get(variable["name"], [])
                check(bool(set(expected) & set(values)), f"{path.name}: variable {variable['name']} offers one of {expected}",
                      str(values))
        for panel in board["panels"]:
            for target in panel["targets"]:
                queried += 1
                where = f"{path.name}: {panel['title']!r} {target['refId']}"
                expr = substitute(target["expr"])
                for name in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{", expr):
                    check(name in known, f"{where}: metric {name} exists", "not exported by paystream nor recorded")
                answer = get(base, "/api/v1/query", query=expr)
                if not check(answer.get("status") == "success", f"{where}: query runs",
                             f"{answer.get('errorType')}: {answer.get('error')}\n    {expr}"):
                    continue
                result = answer["data"]["result"]
                numbers = [v for s in result for v in [float(s["value"][1])] if not math.isnan(v)]
                reason = may_be_empty.get((board["uid"], panel["title"], target["expr"]))
                if reason and not numbers:
                    print(f"EMPTY (allowed: {reason}) {where}")
                    continue
                check(bool(numbers), f"{where}: returns data", f"{len(result)} series, none a number\n    {expr}")
    print(f"live: queried {queried} panel expressions of {len(dashboards)} dashboards")

    groups = get(base, "/api/v1/rules")["data"]["groups"]
    check(sorted(g["name"] for g in groups) == sorted(g["name"] for g in rules["groups"]),
          "every rule group of rules.yaml is loaded", str([g["name"] for g in groups]))
    evaluated = 0
    for group in groups:
        for rule in group["rules"]:
            evaluated += 1
            check(rule.get("health") == "ok", f"rule {group['name']}/{rule['name']} health ok",
                  f"{rule.get('health')} {rule.get('lastError', '')}")
    expected_rules = sum(len(g["rules"]) for g in rules["groups"])
    check(evaluated == expected_rules, f"all {expected_rules} rules loaded", f"{evaluated} loaded")
    firing = [a["labels"]["alertname"] for a in get(base, "/api/v1/alerts")["data"]["alerts"]]
    print(f"live: {evaluated} rules evaluated; alerts pending or firing: {sorted(set(firing)) or 'none'}")
    targets = get(base, "/api/v1/targets")["data"]["activeTargets"]
    check(len(targets) == len(pods) and all(t["health"] == "up" for t in targets), "every paystream target is up",
          str([(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]))
    print(f"live: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
