"""A1111's discovery routes, png-info and full request bodies on the real ingress routes
over fake handles (no Ray)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.unit.test_a1111_fields import FULL_BODY
from tests.unit.test_dialect_routes import App

API = "/sdapi/v1"


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/sd-vae", []),
        ("/sd-modules", []),
        ("/prompt-styles", []),
        ("/face-restorers", []),
        ("/realesrgan-models", []),
        ("/hypernetworks", []),
        ("/script-info", []),
        ("/embeddings", {"loaded": {}, "skipped": {}}),
        ("/scripts", {"txt2img": [], "img2img": []}),
    ],
)
def test_discovery_routes_answer_what_is_true(app: App, path: str, expected: object) -> None:
    response = app.client.get(API + path)
    assert response.status_code == 200, response.text
    assert response.json() == expected


def test_upscalers_flags_memory_and_refreshes(app: App) -> None:
    names = [u["name"] for u in app.client.get(f"{API}/upscalers").json()]
    assert names == ["None", "Lanczos", "Nearest"]
    assert app.client.get(f"{API}/cmd-flags").json()["api"] is True
    memory = app.client.get(f"{API}/memory").json()
    assert memory["ram"]["total"] >= memory["ram"]["free"] >= 0 and "error" in memory["cuda"]
    for path in ("/refresh-checkpoints", "/refresh-vae"):
        response = app.client.post(API + path)
        assert (response.status_code, response.json()) == (200, None)


def test_png_info_route(app: App) -> None:
    meta = PngInfo()
    meta.add_text("parameters", "a fox\nSteps: 4, Sampler: Euler, Seed: 9")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=meta)
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = app.client.post(f"{API}/png-info", json={"image": image}).json()
    assert body["info"] == "a fox\nSteps: 4, Sampler: Euler, Seed: 9"
    assert body["parameters"]["Steps"] == "4"
    bad = app.client.post(f"{API}/png-info", json={"image": "%%%"})
    assert bad.status_code == 400 and set(bad.json()) == {"error", "detail", "body", "errors"}


def test_full_a1111_body_generates(app: App) -> None:
    response = app.client.post(f"{API}/txt2img", json=FULL_BODY)
    assert response.status_code == 200, response.text
    refused = app.client.post(f"{API}/txt2img", json={**FULL_BODY, "restore_faces": True})
    assert refused.status_code == 400 and "restore_faces" in refused.json()["detail"]
