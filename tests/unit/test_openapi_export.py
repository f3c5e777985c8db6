"""``docs/openapi.json`` is what the app serves, and every route documents itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from serve_app.asgi.openapi import ApiRoute
from serve_app.ingress import Ingress
from serve_app.routes import all_routes, asgi_app
from serve_app.routes.openapi_export import REGENERATE, app_args, export_args, main, render
from tests.support.fakes import FakeHandle

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


def ingress_for_serve_config(tmp_path: Path) -> Ingress:
    """The ingress of ``serve_config.yaml`` over fake handles (no Ray), state in tmp_path."""
    args: dict[str, Any] = export_args(app_args(ROOT / "serve_config.yaml"), str(tmp_path))
    handles = {m["id"]: FakeHandle() for m in args["models"]}
    return Ingress(args, handles, FakeHandle(), "k" * 32)  # type: ignore[arg-type]


@pytest.fixture
def ingress(tmp_path: Path) -> Ingress:
    return ingress_for_serve_config(tmp_path)


def test_committed_document_is_what_the_app_serves(ingress: Ingress) -> None:
    served = TestClient(asgi_app(ingress)).get("/openapi.json")
    assert served.status_code == 200
    assert COMMITTED.read_text() == render(served.json()), (
        f"docs/openapi.json drifted from GET /openapi.json; regenerate it: {REGENERATE}"
    )


def test_every_route_declares_its_operation(ingress: Ingress) -> None:
    routes = all_routes(ingress)
    # A plain Route must opt out explicitly (the playground's static page and assets).
    plain = [
        r.path
        for r in routes
        if isinstance(r, Route) and not isinstance(r, ApiRoute) and r.include_in_schema
    ]
    assert not plain, f"routes without an Operation (use serve_app.asgi.openapi.ApiRoute): {plain}"
    document = json.loads(COMMITTED.read_text())
    summaries = {
        f"{method.upper()} {path}": op["summary"]
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }
    generic = [key for key, summary in summaries.items() if summary == key]
    assert not generic, f"operations with only the generic summary: {generic}"
    # One operation per documented (route, method), plus the document's own route.
    documented = [r for r in routes if not isinstance(r, Route) or r.include_in_schema]
    assert len(summaries) == len(documented) + 1


def test_export_command_prints_the_committed_document(capsys: pytest.CaptureFixture[str]) -> None:
    main([str(ROOT / "serve_config.yaml")])
    assert capsys.readouterr().out == COMMITTED.read_text()
