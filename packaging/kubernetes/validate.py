#!/usr/bin/env python3
"""Validates the Kubernetes manifests offline, as the test command runs it.

- Built-in kinds (Namespace, RBAC, ConfigMap, DaemonSet, the CRDs themselves) against the
  upstream OpenAPI schemas with kubernetes-validate --strict, for the oldest and the newest
  Kubernetes release egret supports; any warning or failure fails.
- egret's objects (the examples) against the openAPIV3Schema of the committed CRDs with
  jsonschema: types, required fields, patterns, enums, item counts, unknown fields (the
  apiserver prunes them; here they are an error, since an example must not teach a typo).
  The CEL rules are checked by the egret-crd tests with kube's evaluator.

Usage: validate.py DIR (the packaging/kubernetes directory). Needs kubernetes-validate and
jsonschema (scripts/setup installs them in a cached virtualenv).
"""

import pathlib
import subprocess
import sys

import jsonschema
import yaml

OLDEST, NEWEST = "1.33.0", "1.37.0"


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def strict(schema):
    """The schema with additionalProperties false wherever it lists properties and
    allows no other keys, and nullable honoured, so jsonschema reads it as the apiserver
    prunes and validates."""
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if isinstance(v, (dict, list)) else v for k, v in schema.items()}
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def main(directory):
    directory = pathlib.Path(directory)
    failures = []
    builtin = [directory / "crds.yaml", directory / "agent.yaml", directory / "uninstall.yaml",
               directory / "gateway-rbac.yaml"]
    builtin += [
        p for p in sorted((directory / "examples").glob("*.yaml"))
        if all(not d.get("apiVersion", "").startswith("egret.dev/") for d in documents(p))
    ]
    for version in (OLDEST, NEWEST):
        run = subprocess.run(
            ["kubernetes-validate", "--strict", "-k", version, *map(str, builtin)],
            capture_output=True, text=True, check=False,
        )
        bad = [line for line in (run.stdout + run.stderr).splitlines()
               if line.startswith(("WARN", "ERROR")) or "failed" in line]
        if run.returncode != 0 or bad:
            failures.append(f"kubernetes-validate {version}:\n" + "\n".join(bad or [run.stderr]))
        else:
            print(f"built-in kinds valid for Kubernetes {version}: "
                  + ", ".join(p.name for p in builtin))

    schemas = {}
    for crd in documents(directory / "crds.yaml"):
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            key = (f"{group}/{version['name']}", crd["spec"]["names"]["kind"])
            schema = strict(version["schema"]["openAPIV3Schema"])
            # The apiserver fills these in; the schema leaves them out.
            for field in ("apiVersion", "kind", "metadata"):
                schema.setdefault("properties", {})[field] = {"type": "string"} \
                    if field != "metadata" else {"type": "object"}
            schemas[key] = schema
    checked = 0
    for path in sorted((directory / "examples").glob("*.yaml")):
        for doc in documents(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if not key[0].startswith("egret.dev/"):
                continue
            if key not in schemas:
                failures.append(f"{path.name}: no CRD for {key}")
                continue
            errors = sorted(jsonschema.Draft7Validator(schemas[key]).iter_errors(doc), key=str)
            for error in errors:
                where = ".".join(str(p) for p in error.absolute_path) or "(root)"
                failures.append(f"{path.name}: {doc['metadata']['name']}: {where}: {error.message}")
            checked += 1
    if checked == 0:
        failures.append("no egret.dev example was checked")
    print(f"{checked} egret.dev example objects checked against crds.yaml")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent))
