"""The dialect routes on the ingress app with fake handles (no Ray): dispatch, A1111 auth,
per-client options, and each dialect's own error shape."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from common.job import EncodedImage, GenerationJob
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from tests.support.fakes import FakeHandle, resolved, wired

GENERATIONS = "/v1/images/generations"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


class App:
    """The real ingress routes over fake model and encoder handles that record jobs."""

    def __init__(self, tmp_path: Path, credentials: str | None = None) -> None:
        self.jobs: list[tuple[str, GenerationJob]] = []
        a1111: dict[str, Any] = {"options_dir": str(tmp_path / "options"), "auth_env": None}
        if credentials is not None:
            (tmp_path / "auth").write_text(credentials)
            a1111["auth_file"] = str(tmp_path / "auth")
        args = {
            "models": [
                {"id": "tiny", "source": "builtin:tiny-sdxl", "aliases": ["dall-e-3"]},
                {"id": "other", "source": "builtin:tiny-sdxl"},
            ],
            "storage": {"local_dir": str(tmp_path / "images")},
            "a1111": a1111,
        }
        handles = {
            name: FakeHandle(generate=self._generate(name), ready=_ok) for name in args_ids(args)
        }
        encoder = FakeHandle(encode=_encode, ready=_ok)
        ingress = Ingress(args, wired(handles, encoder), encoder, "k" * 32)  # type: ignore[arg-type]
        self.client = TestClient(asgi_app(ingress))

    def _generate(self, name: str):
        async def generate(job: GenerationJob) -> np.ndarray:
            self.jobs.append((name, job))
            return np.zeros((job.n, 8, 8, 3), np.uint8)

        return generate


def args_ids(args: dict[str, Any]) -> list[str]:
    return [m["id"] for m in args["models"]]


async def _ok() -> bool:
    return True


async def _encode(pixels: Any, spec: Any) -> list[EncodedImage]:
    result = await resolved(pixels)
    return [EncodedImage(b64_json="AA==") for _ in result]


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


@pytest.mark.parametrize(
    "body,headers,dialect,keys",
    [
        (
            {"prompt": "x"},
            {},
            "openai",
            {"created", "data", "background", "output_format", "size", "usage"},
        ),
        ({"prompt": "x", "steps": 4}, {}, "together", {"id", "model", "object", "data"}),
        (
            {"prompt": "x", "seed_increment": 1},
            {},
            "imagine",
            {"id", "model", "object", "created", "data"},
        ),
        ({"prompt": "x"}, {"user-agent": "Together/Python 3.1.1"}, "together", None),
    ],
)
def test_one_route_three_dialects(
    app: App, body: dict[str, Any], headers: dict[str, str], dialect: str, keys: set[str] | None
) -> None:
    response = app.client.post(GENERATIONS, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegen-dialect"] == dialect
    if keys is not None:
        assert set(response.json()) == keys


@pytest.mark.parametrize(
    "body,status,param",
    [
        ({"prompt": "x", "steps": 0}, 400, "steps"),
        ({"prompt": "x", "width": 512, "image_url": "http://127.0.0.1/x.png"}, 400, "image_url"),
        ({"prompt": "x", "cache_interval": 0}, 400, "cache_interval"),
        ({"prompt": "x", "steps": 3, "cache_interval": 2}, 400, None),
        ({"prompt": "x", "steps": 3, "model": "nope"}, 404, "model"),
    ],
)
def test_generations_errors_use_the_openai_shape(
    app: App, body: dict[str, Any], status: int, param: str | None
) -> None:
    response = app.client.post(GENERATIONS, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_sd_models_and_options_as_open_webui_uses_them(app: App) -> None:
    models = app.client.get("/sdapi/v1/sd-models").json()
    assert [m["model_name"] for m in models] == ["tiny", "other"]
    options = app.client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == models[0]["title"]
    # Open WebUI: POST the whole options dict back with the checkpoint changed.
    options["sd_model_checkpoint"] = models[1]["title"]
    assert app.client.post("/sdapi/v1/options", json=options).json() is None
    assert app.client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == models[1]["title"]
    # Open WebUI sends an empty Authorization header when no auth is configured.
    response = app.client.post(
        "/sdapi/v1/txt2img", json={"prompt": "x", "batch_size": 2}, headers={"authorization": ""}
    )
    assert response.status_code == 200 and len(response.json()["images"]) == 2
    assert app.jobs[-1][0] == "other"


def test_override_settings_wins_for_one_request(app: App) -> None:
    body = {"prompt": "x", "override_settings": {"sd_model_checkpoint": "other"}}
    assert app.client.post("/sdapi/v1/txt2img", json=body).status_code == 200
    assert app.client.post("/sdapi/v1/txt2img", json={"prompt": "x"}).status_code == 200
    assert [name for name, _ in app.jobs] == ["other", "tiny"]


def test_options_are_per_client_by_auth_user(tmp_path: Path) -> None:
    app = App(tmp_path, credentials="alice:wonder, bob:builder")
    alice, bob = basic("alice", "wonder"), basic("bob", "builder")
    set_other = {"sd_model_checkpoint": "other"}
    assert app.client.post("/sdapi/v1/options", json=set_other, headers=alice).status_code == 200
    assert (
        app.client.get("/sdapi/v1/options", headers=alice)
        .json()["sd_model_checkpoint"]
        .startswith("other [")
    )
    assert (
        app.client.get("/sdapi/v1/options", headers=bob)
        .json()["sd_model_checkpoint"]
        .startswith("tiny [")
    )
    app.client.post("/sdapi/v1/txt2img", json={"prompt": "x"}, headers=alice)
    app.client.post("/sdapi/v1/txt2img", json={"prompt": "x"}, headers=bob)
    assert [name for name, _ in app.jobs] == ["other", "tiny"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": ""},
        basic("alice", "wrong"),
        basic("mallory", "wonder"),
        {"authorization": "Basic !!!"},
        {"authorization": "Bearer wonder"},
    ],
)
def test_basic_auth_refuses_in_a1111_shape(tmp_path: Path, headers: dict[str, str]) -> None:
    app = App(tmp_path, credentials="alice:wonder")
    for method, path in (("GET", "/sdapi/v1/sd-models"), ("POST", "/sdapi/v1/txt2img")):
        response = app.client.request(method, path, json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Basic"
        assert response.json() == {
            "error": "HTTPException",
            "detail": "Incorrect username or password",
            "body": "",
            "errors": "401: Incorrect username or password",
        }
        assert "wonder" not in response.text
    assert app.jobs == []


def test_auth_does_not_touch_the_openai_route(tmp_path: Path) -> None:
    app = App(tmp_path, credentials="alice:wonder")
    assert app.client.post(GENERATIONS, json={"prompt": "x"}).status_code == 200


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("POST", "/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "DPM fast"}, 400),
        ("POST", "/sdapi/v1/txt2img", {"prompt": "x", "batch_size": "two"}, 422),
        ("POST", "/sdapi/v1/txt2img", ["not", "an", "object"], 422),
        ("POST", "/sdapi/v1/txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}}, 404),
        ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "nope"}, 404),
        ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": 3}, 422),
        ("GET", "/sdapi/v1/unknown", None, 404),
        ("DELETE", "/sdapi/v1/options", None, 405),
    ],
)
def test_a1111_errors_use_a1111_shape(
    app: App, method: str, path: str, body: Any, status: int
) -> None:
    response = app.client.request(method, path, json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    assert app.jobs == []


def test_samplers_listing(app: App) -> None:
    names = [s["name"] for s in app.client.get("/sdapi/v1/samplers").json()]
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM", "LMS", "UniPC"} <= set(names)
    assert "Karras" in [s["label"] for s in app.client.get("/sdapi/v1/schedulers").json()]


def test_openai_sampler_extension_swaps_the_scheduler(app: App) -> None:
    response = app.client.post(GENERATIONS, json={"prompt": "x", "sampler": "Euler a"})
    assert response.status_code == 200, response.text
    job = app.jobs[-1][1]
    assert job.scheduler is not None
    assert job.scheduler.class_name == "EulerAncestralDiscreteScheduler"
    bad = app.client.post(GENERATIONS, json={"prompt": "x", "sampler": "Nope"})
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["param"] == "sampler" and error["code"] == "unknown_sampler"
    assert "Euler a" in error["message"]
