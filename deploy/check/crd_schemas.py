#!/usr/bin/env python3
"""JSON Schemas, one per custom resource kind and version, from the CRDs in crds/.

  crd_schemas.py schemas OUT_DIR        writes OUT_DIR/<kind>-<group>-<version>.json
  crd_schemas.py split RENDERED OUT_DIR  writes the rendered manifests' built-in objects
      to OUT_DIR/core.yaml (for kubernetes-validate) and each custom resource to
      OUT_DIR/<kind>-<group>-<version>/<name>.json (for check-jsonschema); fails on a
      kind that is neither built in nor in crds/

A CRD's openAPIV3Schema is nearly a JSON Schema. Like kubeconform's openapi2jsonschema
--strict, this closes every object that lists its properties (additionalProperties:
false, unless it says x-kubernetes-preserve-unknown-fields), so a misspelled field
fails as it does with `kubectl apply --validate=strict`; it turns
x-kubernetes-int-or-string into integer-or-string and `nullable` into a null type, and
pins apiVersion and kind. A `pattern` with a Go inline flag ((?i)) is
dropped: ECMA-262 regular expressions cannot say it. Needs PyYAML.
"""

import json
import sys
from pathlib import Path

import yaml

CRDS = Path(__file__).resolve().parent / "crds"


def strict(node):
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    # Go's inline flags, such as (?i), are not ECMA-262 regular expressions: JSON Schema
    # cannot say them. Such a field keeps its type check only.
    if "(?" in str(node.get("pattern", "")):
        del node["pattern"]
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


def schemas():
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            schema.setdefault("properties", {})
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["properties"]["metadata"] = {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            }
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            yield f"{group}/{version['name']}", kind, schema


def split(rendered, out):
    custom = {(api_version, kind) for api_version, kind, _ in schemas()}
    core = []
    for doc in yaml.safe_load_all(Path(rendered).read_text()):
        if not doc:
            continue
        key = (doc["apiVersion"], doc["kind"])
        if key in custom:
            folder = out / f"{doc['kind']}-{doc['apiVersion'].replace('/', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{doc['metadata']['name']}.json").write_text(json.dumps(doc, indent=1))
        elif "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].split("/")[0].endswith(".k8s.io"):
            sys.exit(f"{rendered}: {doc['kind']} {doc['apiVersion']} is a custom resource with no CRD in {CRDS}")
        else:
            core.append(doc)
    (out / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))


def main(argv):
    if len(argv) == 3 and argv[1] == "schemas":
        out = Path(argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for api_version, kind, schema in schemas():
            name = f"{kind}-{api_version.replace('/', '-')}.json"
            (out / name).write_text(json.dumps(schema, indent=1))
        return
    if len(argv) == 4 and argv[1] == "split":
        out = Path(argv[3])
        out.mkdir(parents=True, exist_ok=True)
        split(argv[2], out)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
