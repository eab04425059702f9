#!/usr/bin/env python3
"""deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/rules.yaml.

The PrometheusRule's spec is rules.yaml's `groups:` as text, indented under `spec:`
(comments kept), so the rules the Prometheus Operator loads are the ones promtool tests.
  prometheusrule.py write   rewrite the PrometheusRule
  prometheusrule.py check   exit 1 if the committed one differs from what write makes
Standard library only.
"""

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus" / "rules.yaml"
TARGET = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yaml by deploy/check/prometheusrule.py write:
# do not edit. deploy/check/run fails when this file and rules.yaml differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: paystream
  labels:
    app.kubernetes.io/name: paystream
    app.kubernetes.io/component: pipeline
spec:
"""


def render() -> str:
    lines = RULES.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(("  " + line if line.strip() else "") + "\n" for line in lines[start:])
    return HEADER + body


def main(argv):
    if argv[1:] == ["write"]:
        TARGET.write_text(render())
        return 0
    if argv[1:] == ["check"]:
        if TARGET.read_text() != render():
            print(f"{TARGET} differs from {RULES}: run deploy/check/prometheusrule.py write", file=sys.stderr)
            return 1
        print("prometheusrule.yaml holds exactly the groups of rules.yaml")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
