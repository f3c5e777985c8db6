"""Write the OpenAPI document the app serves for a config: ``docs/openapi.json``.

    python -m serve_app.routes.openapi_export > docs/openapi.json

The document comes from the same route table as ``GET /openapi.json``
(:func:`serve_app.asgi.openapi.build_document` over :func:`serve_app.routes.all_routes`),
so the committed copy is what a client of ``serve_config.yaml`` sees;
``tests/unit/test_openapi_export.py`` fails when the two drift. Nothing is served
and no handle is called: the routes are built over an ingress whose model and
encoder handles refuse every call, with storage and A1111 options in a scratch
folder and no secrets read (the document depends on none of them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from serve_app.asgi.openapi import build_document
from serve_app.ingress import Ingress
from serve_app.routes import all_routes

DEFAULT_CONFIG = "serve_config.yaml"
REGENERATE = "python -m serve_app.routes.openapi_export > docs/openapi.json"


class _NoHandle:
    """Stands in for a deployment handle: building the routes never calls one."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the OpenAPI export has no deployments (asked for {name!r})")


def app_args(config_path: str | Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """The ``args`` of the config's first (and only) application."""
    config = yaml.safe_load(Path(config_path).read_text())
    return config["applications"][0]["args"]


def export_args(args: dict[str, Any], scratch: str) -> dict[str, Any]:
    """``args`` with what the document does not depend on made inert: a local store and
    A1111 options under ``scratch``, no API keys or A1111 credentials read."""
    args = json.loads(json.dumps(args))  # a deep copy of plain YAML data
    args["storage"] = {"kind": "local", "local_dir": str(Path(scratch) / "images")}
    args.setdefault("ingress", {})["api_keys"] = {"keys_env": None, "keys_file": None}
    a1111 = args.setdefault("a1111", {})
    a1111.update(auth_env=None, auth_file=None, options_dir=str(Path(scratch) / "a1111"))
    return args


def document(args: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document the ingress serves for ``args``."""
    with tempfile.TemporaryDirectory(prefix="imagegen-openapi-") as scratch:
        inert = export_args(args, scratch)
        models = {m["id"]: _NoHandle() for m in inert["models"]}
        ingress = Ingress(inert, models, _NoHandle(), "openapi-export-" + "0" * 16)  # type: ignore[arg-type]
        try:
            return build_document(all_routes(ingress))
        finally:
            if ingress.sweeper is not None:
                ingress.sweeper.stop()


def render(doc: dict[str, Any]) -> str:
    """The committed form: indented, in route order, one trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="serve config YAML")
    options = parser.parse_args(argv)
    sys.stdout.write(render(document(app_args(options.config))))


if __name__ == "__main__":
    main()
