"""Write the RayService's ``serveConfigV2`` from ``serve_config.yaml``.

    python -m deploy.kuberay.generate           # rewrite deploy/kuberay/rayservice.yaml
    python -m deploy.kuberay.generate --check   # exit 1 if the manifest is out of date

``serve_config.yaml`` is the one source of truth for what runs. The generator takes
it, deep-merges ``gpu_overrides.yaml``'s ``every_model`` into every model (a GPU per
model replica), puts its ``storage`` in place of the app's (S3: a cluster has more
than one pod, where ``storage.kind: local`` is refused), and replaces the
``serveConfigV2: |`` block of the manifest with the result. The rest of the manifest
(the cluster) is hand-written and left as it is.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "serve_config.yaml"
MANIFEST = Path(__file__).with_name("rayservice.yaml")
OVERRIDES = Path(__file__).with_name("gpu_overrides.yaml")

KEY_LINE = "  serveConfigV2: |"
BODY_INDENT = " " * 4
HEADER = (
    "# Generated from serve_config.yaml (+ deploy/kuberay/gpu_overrides.yaml) by\n"
    "# `python -m deploy.kuberay.generate`. Do not edit here.\n"
)
OVERRIDE_KEYS = {"every_model", "storage"}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursing into nested mappings; inputs are untouched."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def cluster_serve_config(serve_config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """serve_config.yaml as the cluster runs it: overrides merged into every model, and
    the cluster's ``storage`` in place of the app's."""
    unknown = sorted(set(overrides) - OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown keys in {OVERRIDES.name}: {unknown}")
    config = copy.deepcopy(serve_config)
    for app in config["applications"]:
        models = app["args"]["models"]
        app["args"]["models"] = [
            deep_merge(model, overrides.get("every_model", {})) for model in models
        ]
        if "storage" in overrides:
            app["args"]["storage"] = copy.deepcopy(overrides["storage"])
    return config


def render_block(config: dict[str, Any]) -> str:
    """The indented body of ``serveConfigV2: |``."""
    text = HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)
    return "".join(BODY_INDENT + line if line.strip() else "\n" for line in text.splitlines(True))


def replace_block(manifest: str, block: str) -> str:
    """Swap the body under ``serveConfigV2: |`` (every line indented deeper) for ``block``."""
    lines = manifest.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == KEY_LINE]
    if len(starts) != 1:
        raise ValueError(f"expected exactly one line {KEY_LINE.strip()!r} in the manifest")
    start = end = starts[0] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(BODY_INDENT)):
        end += 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def render(manifest: str, serve_config: dict[str, Any], overrides: dict[str, Any]) -> str:
    return replace_block(manifest, render_block(cluster_serve_config(serve_config, overrides)))


def render_files(
    manifest: Path = MANIFEST, serve_config: Path = SERVE_CONFIG, overrides: Path = OVERRIDES
) -> tuple[str, str]:
    """(current manifest text, what the generator would write)."""
    current = manifest.read_text()
    expected = render(
        current,
        yaml.safe_load(serve_config.read_text()),
        yaml.safe_load(overrides.read_text()) or {},
    )
    return current, expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the manifest is stale")
    args = parser.parse_args(argv)
    current, expected = render_files()
    if current == expected:
        print(f"{MANIFEST.relative_to(ROOT)} is up to date")
        return 0
    if args.check:
        print(
            f"{MANIFEST.relative_to(ROOT)} is out of date with serve_config.yaml; "
            "run: python -m deploy.kuberay.generate",
            file=sys.stderr,
        )
        return 1
    MANIFEST.write_text(expected)
    print(f"wrote serveConfigV2 in {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
