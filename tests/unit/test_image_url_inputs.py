"""Images sent by reference, on the ingress routes over fake handles (no Ray): OpenAI's
JSON-body edits (``images[].image_url``, ``mask.image_url``) and Together's
``image_url``, as data URLs and refused addresses. Multipart edits and A1111 img2img:
``test_edit_routes.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_edit_routes import EDITS, App, data_url, image_bytes, mask_bytes


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def test_json_body_edit_with_image_urls_and_a_mask(app: App) -> None:
    body = {
        "prompt": "x",
        "images": [{"image_url": data_url(image_bytes(64, 48))}],
        "mask": {"image_url": data_url(mask_bytes(64, 48))},
        "size": None,
        "n": None,
        "quality": None,
    }
    response = app.client.post(EDITS, json=body)
    assert response.status_code == 200, response.text
    [job], [spec] = app.jobs, app.specs
    assert job.mode == "inpaint" and spec.overlay is not None
    assert response.json()["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": "x"}, "images"),
        ({"prompt": "x", "images": []}, "images"),
        ({"images": [{"image_url": "data:image/png;base64,AA=="}]}, "prompt"),
        ({"prompt": "x", "images": [{"file_id": "file-1"}]}, "images[0].file_id"),
        ({"prompt": "x", "images": [{}]}, "images[0].image_url"),
        (
            {"prompt": "x", "images": [{"image_url": "http://127.0.0.1/a.png"}]},
            "images[0].image_url",
        ),
    ],
)
def test_json_body_edit_errors_name_the_field(app: App, body: dict[str, Any], param: str) -> None:
    response = app.client.post(EDITS, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_together_image_url_as_a_data_url(app: App) -> None:
    body = {"prompt": "x", "width": 512, "height": 384, "image_url": data_url(image_bytes())}
    response = app.client.post("/v1/images/generations", json={**body, "strength": 0.4})
    assert response.status_code == 200, response.text
    [job] = app.jobs
    assert (job.mode, job.strength, job.init_image.shape) == ("img2img", 0.4, (48, 64, 3))


@pytest.mark.parametrize(
    "url,code",
    [
        ("http://127.0.0.1/x.png", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("file:///etc/passwd", "unsupported_url_scheme"),
    ],
)
def test_together_image_url_refusals(app: App, url: str, code: str) -> None:
    response = app.client.post(
        "/v1/images/generations", json={"prompt": "x", "width": 512, "image_url": url}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image_url"
    assert response.json()["error"]["code"] == code
