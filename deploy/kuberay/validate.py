"""Check the RayService manifest offline, the way the API server and Ray would.

    python -m deploy.kuberay.validate [--crds DIR] [MANIFEST]

1. The manifest against the KubeRay CRD's ``openAPIV3Schema``: CRD ``default``
   values are filled in first (as the API server does), then unknown fields are
   errors (as with ``kubectl apply --validate=strict``) except under
   ``x-kubernetes-preserve-unknown-fields``. ``x-kubernetes-list-type`` uniqueness
   and int32/int64 ranges are checked too. CEL rules (``x-kubernetes-validations``)
   cannot be run offline: transition rules (``oldSelf``) do not apply on create,
   and a manifest that sets a field carrying any other rule is reported.
2. ``serveConfigV2`` against Ray Serve's ``ServeDeploySchema``, and each
   application's ``args`` against our ``ImageServingArgs``, which checks every
   ``autoscaling_config`` as Ray's ``AutoscalingConfig`` plus the unknown keys and
   ``min_replicas > max_replicas`` that Ray lets through (``DeploymentOptions``).

The CRDs (KubeRay v1.7.0) come from ``--crds``, else ``$KUBERAY_CRD_DIR``, else
``../shared/crds`` next to the repository.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(__file__).with_name("rayservice.yaml")
CRD_DIR_ENV = "KUBERAY_CRD_DIR"
DEFAULT_CRD_DIR = ROOT.parent / "shared" / "crds"
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
PRESERVE = "x-kubernetes-preserve-unknown-fields"

# The API server validates a custom resource's top-level metadata as ObjectMeta
# (the CRD schema just says "object"). The fields a manifest may set:
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def crd_dir(explicit: str | Path | None = None) -> Path:
    """Where the CRDs are: the argument, ``$KUBERAY_CRD_DIR``, or ``../shared/crds``."""
    chosen = explicit or os.environ.get(CRD_DIR_ENV)
    path = Path(chosen) if chosen else DEFAULT_CRD_DIR
    missing = [name for name in CRD_FILES.values() if not (path / name).is_file()]
    if missing:
        source = "given" if explicit else (f"${CRD_DIR_ENV}" if chosen else "the default")
        raise FileNotFoundError(f"KubeRay CRDs {missing} not found in {path} ({source})")
    return path


def crd_schema(directory: Path, kind: str, version: str = "v1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one served CRD version (a fresh copy)."""
    return copy.deepcopy(_crd_schema(directory, kind, version))


@functools.cache
def _crd_schema(directory: Path, kind: str, version: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((directory / CRD_FILES[kind]).read_text(), Loader=loader)
    if crd["spec"]["names"]["kind"] != kind:
        raise ValueError(f"{CRD_FILES[kind]} defines {crd['spec']['names']['kind']}, not {kind}")
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", False):
            return entry["schema"]["openAPIV3Schema"]
    raise ValueError(f"{kind} CRD serves no version {version!r}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in ``default`` values like the API server, recursively; returns a copy."""
    value = copy.deepcopy(value)
    _fill(schema, value)
    return value


def _fill(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _fill(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in properties:
                    _fill(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _fill(schema["items"], item)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema as JSON Schema that rejects unknown fields.

    Objects get ``additionalProperties: false`` unless they declare a map
    (``additionalProperties``) or preserve unknown fields; ``nullable`` becomes a
    ``null`` type.
    """
    node = {key: value for key, value in schema.items() if key != "default"}
    if isinstance(node.get("properties"), dict):
        node["properties"] = {k: strict_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = strict_schema(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        node["items"] = strict_schema(node["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            node[key] = [strict_schema(sub) for sub in node[key]]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("type") == "object" and not node.get(PRESERVE):
        node.setdefault("additionalProperties", False)
    return node


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]) -> Iterator:
    if not isinstance(instance, list) or list_type == "atomic":
        return
    if list_type == "set":
        keys = [yaml.safe_dump(item, sort_keys=True) for item in instance]
    else:  # map: items are unique by their key fields
        fields = schema.get("x-kubernetes-list-map-keys", [])
        keys = [tuple(repr(item.get(f)) for f in fields) for item in instance]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        yield ValidationError(f"duplicate entries in a list of type {list_type}: {duplicates}")


def _cel_rules(
    validator: Any, rules: list[dict], instance: Any, schema: dict[str, Any]
) -> Iterator:
    for rule in rules:
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: only checked on update
        yield ValidationError(
            f"this field carries a CEL rule that cannot be checked offline: {rule['rule']!r} "
            f"({rule.get('message', '')}); leave it unset or check it on a cluster"
        )


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    for name, (low, high) in INT_RANGES.items():
        checker.checks(name)(
            lambda v, low=low, high=high: not isinstance(v, int) or low <= v <= high
        )
    return checker


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel_rules},
)


def crd_errors(
    manifest: dict[str, Any], schema: dict[str, Any], *, defaults: bool = True
) -> list[str]:
    """Every way ``manifest`` fails the CRD schema, as ``path: message`` lines."""
    schema = copy.deepcopy(schema)
    schema.setdefault("properties", {})["metadata"] = OBJECT_META
    document = apply_defaults(schema, manifest) if defaults else manifest
    validator = CRDValidator(strict_schema(schema), format_checker=_format_checker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def serve_config_errors(serve_config: dict[str, Any]) -> list[str]:
    """``serveConfigV2`` as Ray Serve and this project would read it."""
    from pydantic import ValidationError as PydanticError
    from ray.serve.schema import ServeDeploySchema

    from common.config import ImageServingArgs
    from common.model_config import DeploymentOptions

    try:
        schema = ServeDeploySchema.model_validate(serve_config)
    except PydanticError as exc:
        return [f"serveConfigV2: {exc}"]
    errors = []
    for app in schema.applications:
        try:
            # Models, encoder and ingress: each autoscaling_config is checked by
            # DeploymentOptions as Ray's AutoscalingConfig, plus unknown keys and
            # min_replicas > max_replicas.
            ImageServingArgs.model_validate(app.args)
        except PydanticError as exc:
            errors.append(f"serveConfigV2 application {app.name!r} args: {exc}")
        for deployment in app.deployments:  # per-deployment overrides, if any
            options = deployment.model_dump(exclude_unset=True)
            if "autoscaling_config" in options:
                try:
                    DeploymentOptions(autoscaling_config=options["autoscaling_config"])
                except PydanticError as exc:
                    errors.append(f"serveConfigV2 deployment {deployment.name!r}: {exc}")
    return errors


def manifest_errors(manifest: dict[str, Any], directory: Path) -> list[str]:
    """The RayService against its CRD, its cluster against RayCluster's, and its
    serveConfigV2 against Ray Serve's schema and ours."""
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("ray.io/v1", "RayService"):
        return [f"expected apiVersion ray.io/v1, kind RayService; got {manifest.get('kind')}"]
    errors = crd_errors(manifest, crd_schema(directory, "RayService"))
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": manifest["metadata"]["name"]},
        "spec": manifest["spec"]["rayClusterConfig"],
    }
    errors += [
        f"as RayCluster: {e}" for e in crd_errors(cluster, crd_schema(directory, "RayCluster"))
    ]
    serve_config = manifest["spec"].get("serveConfigV2")
    if not isinstance(serve_config, str):
        return [*errors, "spec.serveConfigV2: missing (a YAML string)"]
    return errors + serve_config_errors(yaml.safe_load(serve_config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", nargs="?", default=str(MANIFEST))
    parser.add_argument("--crds", help=f"CRD folder (default: ${CRD_DIR_ENV} or ../shared/crds)")
    args = parser.parse_args(argv)
    manifest = yaml.safe_load(Path(args.manifest).read_text())
    errors = manifest_errors(manifest, crd_dir(args.crds))
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{args.manifest}: {'valid' if not errors else f'{len(errors)} error(s)'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
