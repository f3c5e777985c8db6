"""The playground's routes without Ray: the page and its assets, their own CSP, the
open paths under API keys, the config switch, and the model card's capabilities."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from common.config import ImageServingArgs
from common.sizes import OPENAI_SIZES
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from serve_app.routes.playground import ASSETS, PAGE_CSP, load_assets
from tests.support.fakes import FakeHandle

KEY = "sk-unit-playground-0123456789"


async def _ok() -> bool:
    return True


def make_client(
    tmp_path: Path, keys: bool = False, enabled: bool = True, **model: Any
) -> TestClient:
    args: dict[str, Any] = {
        "models": [{"id": "tiny", "source": "builtin:tiny-sdxl", "aliases": ["dall-e-3"], **model}],
        "storage": {"local_dir": str(tmp_path / "images")},
        "a1111": {"options_dir": str(tmp_path / "options"), "auth_env": None},
        "playground": {"enabled": enabled},
    }
    if keys:
        (tmp_path / "keys").write_text(KEY)
        args["ingress"] = {"api_keys": {"keys_file": str(tmp_path / "keys")}}
    handles = {"tiny": FakeHandle(ready=_ok)}
    ingress = Ingress(args, handles, FakeHandle(ready=_ok), "k" * 32)  # type: ignore[arg-type]
    return TestClient(asgi_app(ingress))


@pytest.mark.parametrize("path", ["/", "/playground"])
def test_page_is_served_with_its_own_csp(tmp_path: Path, path: str) -> None:
    response = make_client(tmp_path).get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert "sandbox" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert 'src="playground/app.js"' in response.text


@pytest.mark.parametrize("name", ["app.js", "style.css"])
def test_assets_are_served_with_their_types(tmp_path: Path, name: str) -> None:
    response = make_client(tmp_path).get(f"/playground/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == ASSETS[name]
    assert response.content == load_assets()[name]


def test_csp_allows_only_the_own_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in PAGE_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'"
    assert directives["img-src"] == "'self' data: blob:"
    assert "unsafe-inline" not in PAGE_CSP and "unsafe-eval" not in PAGE_CSP


def test_page_has_no_inline_script_style_or_handlers() -> None:
    html = load_assets()["index.html"].decode()
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and "style=" not in html
    # Every URL is relative, so the page works under a route prefix.
    assert not re.search(r'(?:src|href)="/', html)


def test_every_control_has_a_label() -> None:
    html = load_assets()["index.html"].decode()
    labelled = set(re.findall(r'<label[^>]*\sfor="([^"]+)"', html))
    labelled |= set(re.findall(r'aria-label="[^"]+"[^>]*\sid="([^"]+)"', html))
    labelled |= set(re.findall(r'\sid="([^"]+)"[^>]*aria-label="', html))
    controls = re.findall(
        r'<(?:input|select|textarea)(?![^>]*type="(?:radio|checkbox)")[^>]*\sid="([^"]+)"', html
    )
    assert controls and set(controls) <= labelled, set(controls) - labelled


def test_page_and_assets_need_no_key_but_the_api_does(tmp_path: Path) -> None:
    client = make_client(tmp_path, keys=True)
    for path in ("/", "/playground", "/playground/app.js", "/playground/style.css"):
        assert client.get(path).status_code == 200, path
    refused = client.get("/v1/models")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"
    assert client.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_disabled_playground_serves_nothing(tmp_path: Path) -> None:
    client = make_client(tmp_path, enabled=False)
    for path in ("/", "/playground", "/playground/app.js"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "unknown_url"


def test_playground_is_on_by_default_and_strict() -> None:
    args = ImageServingArgs.model_validate({"models": [{"id": "m", "source": "builtin:x"}]})
    assert args.playground.enabled is True
    with pytest.raises(ValueError, match="extra"):
        ImageServingArgs.model_validate(
            {"models": [{"id": "m", "source": "builtin:x"}], "playground": {"enabld": False}}
        )


def test_playground_is_not_in_the_openapi_document(tmp_path: Path) -> None:
    paths = make_client(tmp_path).get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/playground") for p in paths)


def test_model_cards_carry_capabilities(tmp_path: Path) -> None:
    client = make_client(tmp_path, max_steps=12, default_steps=3, max_side=1024)
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert set(cards) == {"tiny", "dall-e-3"} and cards["dall-e-3"]["root"] == "tiny"
    caps = cards["dall-e-3"]["capabilities"]
    assert caps == cards["tiny"]["capabilities"]
    assert (caps["max_steps"], caps["default_steps"], caps["max_images"]) == (12, 3, 10)
    assert caps["sizes"] == list(OPENAI_SIZES)
    assert caps["free_size"]["max_side"] == 1024 and caps["free_size"]["multiple"] == 8
    assert "Euler a" in caps["samplers"] and "DPM++ 2M" in caps["samplers"]
    one = client.get("/v1/models/tiny").json()
    assert one["capabilities"] == caps
