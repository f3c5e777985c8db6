"""Edits, variations, Together image_url and A1111 img2img on the ingress routes, over fake
handles that record the jobs and specs (no Ray): translation, limits and the error table."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from common.job import EncodedImage, EncodeSpec, GenerationJob
from deployments.encoder.codec import paste_outside_mask
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from tests.support.fakes import FakeHandle, resolved, wired

EDITS, VARIATIONS = "/v1/images/edits", "/v1/images/variations"
UPLOAD_LIMIT = 256 * 1024


def image_bytes(
    width: int = 64, height: int = 64, fmt: str = "PNG", mode: str = "RGB", seed: int = 0
) -> bytes:
    channels = 4 if mode == "RGBA" else 3
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format=fmt)
    return buffer.getvalue()


def mask_bytes(width: int = 64, height: int = 64, alpha: bool = True) -> bytes:
    """Opaque, with a transparent (alpha 0) square in the middle."""
    rgba = np.full((height, width, 4), 255, np.uint8)
    rgba[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4, 3] = 0
    image = Image.fromarray(rgba, "RGBA")
    buffer = io.BytesIO()
    (image if alpha else image.convert("RGB")).save(buffer, format="PNG")
    return buffer.getvalue()


class App:
    def __init__(self, tmp_path: Path) -> None:
        self.jobs: list[GenerationJob] = []
        self.specs: list[EncodeSpec] = []
        args = {
            "models": [{"id": "tiny", "source": "builtin:tiny-sdxl", "generation_scale": 0.125}],
            "storage": {"local_dir": str(tmp_path / "images")},
            "a1111": {"options_dir": str(tmp_path / "options"), "auth_env": None},
            "images": {"max_upload_bytes": UPLOAD_LIMIT, "max_input_pixels": 1 << 20},
        }
        model = FakeHandle(generate=self._generate, ready=_ok)
        encoder = FakeHandle(encode=self._encode, ready=_ok)
        ingress = Ingress(args, wired({"tiny": model}, encoder), encoder, "k" * 32)  # type: ignore[arg-type]
        self.client = TestClient(asgi_app(ingress))

    async def _generate(self, job: GenerationJob) -> np.ndarray:
        self.jobs.append(job)
        return np.zeros((job.n, job.gen_height, job.gen_width, 3), np.uint8)

    async def _encode(self, pixels: Any, spec: EncodeSpec) -> list[EncodedImage]:
        self.specs.append(spec)
        return [EncodedImage(b64_json="AA==") for _ in await resolved(pixels)]


async def _ok() -> bool:
    return True


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def files(*images: bytes, field: str = "image", mask: bytes | None = None) -> list[Any]:
    parts: list[Any] = [(field, (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    if mask is not None:
        parts.append(("mask", ("mask.png", mask, "image/png")))
    return parts


def test_single_image_is_img2img(app: App) -> None:
    response = app.client.post(
        EDITS, data={"prompt": "a hat", "n": "2", "size": "512x512"}, files=files(image_bytes())
    )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "512x512" and len(response.json()["data"]) == 2
    [job] = app.jobs
    assert (job.mode, job.strength, job.n, job.prompt) == ("img2img", 0.75, 2, "a hat")
    assert job.init_image.shape == (128, 128, 3) and job.init_image.dtype == np.uint8
    assert (app.specs[0].width, app.specs[0].height, app.specs[0].overlay) == (512, 512, None)


@pytest.mark.parametrize("field", ["image", "image[]"])
def test_image_lists_use_the_first_image(app: App, field: str) -> None:
    first, second = image_bytes(seed=1), image_bytes(seed=2)
    response = app.client.post(EDITS, data={"prompt": "x"}, files=files(first, second, field=field))
    assert response.status_code == 200, response.text
    lanczos = Image.Resampling.LANCZOS
    expected = np.asarray(Image.open(io.BytesIO(first)).convert("RGB").resize((128, 128), lanczos))
    assert np.array_equal(app.jobs[0].init_image, expected)


def test_mask_makes_an_inpaint_job_with_an_overlay(app: App) -> None:
    response = app.client.post(
        EDITS,
        data={"prompt": "x", "size": "256x256"},
        files=files(image_bytes(), mask=mask_bytes()),
    )
    assert response.status_code == 200, response.text
    [job], [spec] = app.jobs, app.specs
    assert (job.mode, job.strength) == ("inpaint", 1.0)
    assert job.mask.shape == (128, 128) and job.mask[64, 64] == 255 and job.mask[2, 2] == 0
    assert spec.overlay is not None and spec.overlay.image.shape == (256, 256, 3)
    assert spec.overlay.mask[128, 128] == 255 and spec.overlay.mask[5, 5] == 0


@pytest.mark.parametrize(
    "fields,strength",
    [
        ({"input_fidelity": "high"}, 0.5),
        ({"input_fidelity": "low"}, 0.75),
        ({"strength": "0.3"}, 0.3),
    ],
)
def test_strength_from_input_fidelity_or_extension(
    app: App, fields: dict[str, str], strength: float
) -> None:
    response = app.client.post(EDITS, data={"prompt": "x", **fields}, files=files(image_bytes()))
    assert response.status_code == 200, response.text
    assert app.jobs[0].strength == strength


@pytest.mark.parametrize(
    "width,height,size",
    [(64, 64, "1024x1024"), (96, 64, "1536x1024"), (64, 96, "1024x1536"), (200, 64, "1536x1024")],
)
def test_size_auto_follows_the_input_aspect(app: App, width: int, height: int, size: str) -> None:
    response = app.client.post(EDITS, data={"prompt": "x"}, files=files(image_bytes(width, height)))
    assert response.status_code == 200 and response.json()["size"] == size


def test_free_size_as_open_webui_may_send(app: App) -> None:
    response = app.client.post(
        EDITS, data={"prompt": "x", "size": "768x512"}, files=files(image_bytes(), field="image[]")
    )
    assert response.status_code == 200 and response.json()["size"] == "768x512"
    assert (app.jobs[0].gen_width, app.jobs[0].gen_height) == (96, 64)


def test_variations(app: App) -> None:
    response = app.client.post(
        VARIATIONS, data={"n": "2", "size": "256x256"}, files=files(image_bytes())
    )
    assert response.status_code == 200, response.text
    [job] = app.jobs
    assert (job.mode, job.prompt, job.strength, job.n) == ("img2img", "", 0.6, 2)


def truncated_png() -> bytes:
    data = image_bytes()
    return data[: len(data) // 2]


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def huge_header_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (2000, 2000)).save(buffer, format="PNG")  # tiny file, 4 MP
    return buffer.getvalue()


@pytest.mark.parametrize(
    "route,data,parts,status,param,code",
    [
        (EDITS, {"prompt": "x"}, files(truncated_png()), 400, "image", "invalid_image"),
        (EDITS, {"prompt": "x"}, files(b"not an image"), 400, "image", "invalid_image"),
        (EDITS, {"prompt": "x"}, files(gif()), 400, "image", "unsupported_image_format"),
        (EDITS, {"prompt": "x"}, files(huge_header_png()), 400, "image", "image_too_large"),
        (
            EDITS,
            {"prompt": "x"},
            files(image_bytes(seed=1), truncated_png(), field="image[]"),
            400,
            "image[1]",
            "invalid_image",
        ),
        (
            EDITS,
            {"prompt": "x"},
            files(image_bytes(), mask=mask_bytes(32, 32)),
            400,
            "mask",
            "mask_size_mismatch",
        ),
        (
            EDITS,
            {"prompt": "x"},
            files(image_bytes(), mask=mask_bytes(alpha=False)),
            400,
            "mask",
            "invalid_mask",
        ),
        (
            EDITS,
            {"prompt": "x"},
            files(*[image_bytes(8, 8)] * 17, field="image[]"),
            400,
            "image",
            "too_many_images",
        ),
        (
            EDITS,
            {"prompt": "x"},
            files(image_bytes(300, 300, seed=3)),
            413,
            None,
            "request_too_large",
        ),
        (EDITS, {"prompt": "x"}, [], 400, "image", "missing_required_parameter"),
        (EDITS, {}, files(image_bytes()), 400, "prompt", "missing_required_parameter"),
        (EDITS, {"prompt": "x", "size": "big"}, files(image_bytes()), 400, "size", "invalid_size"),
        (EDITS, {"prompt": "x", "strength": "0"}, files(image_bytes()), 400, "strength", None),
        (
            EDITS,
            {"prompt": "x", "strength": "0.01"},
            files(image_bytes()),
            400,
            "strength",
            "invalid_value",
        ),
        (EDITS, {"prompt": "x", "model": "nope"}, files(image_bytes()), 404, "model", None),
        (VARIATIONS, {}, files(image_bytes(), mask=mask_bytes()), 400, "mask", None),
        (VARIATIONS, {"prompt": "x"}, files(image_bytes()), 400, "prompt", None),
    ],
)
def test_bad_uploads(
    app: App,
    route: str,
    data: dict[str, str],
    parts: list[Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    response = app.client.post(route, data=data, files=parts or {"unused": ("", b"", "")})
    if not parts:  # no image at all: one unrelated empty file part keeps it multipart
        response = app.client.post(
            route, data=data, headers={"content-type": "multipart/form-data; boundary=x"},
            content=b"--x\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--x--\r\n",
        )  # fmt: skip
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    if code is not None:
        assert error["code"] == code
    assert app.jobs == []


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def a1111_payload(**overrides: Any) -> dict[str, Any]:
    """As the ``webuiapi`` client / A1111 UI scripts post it."""
    return {
        "init_images": [base64.b64encode(image_bytes(96, 64)).decode()],
        "prompt": "a boat",
        "negative_prompt": "",
        "denoising_strength": 0.6,
        "width": 768,
        "height": 512,
        "steps": 10,
        "cfg_scale": 7,
        "seed": 5,
        "sampler_name": "Euler a",
        "mask_blur": 4,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
        "include_init_images": False,
        **overrides,
    }


def test_a1111_img2img(app: App) -> None:
    response = app.client.post("/sdapi/v1/img2img", json=a1111_payload())
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 1 and body["parameters"]["init_images"] is None
    [job] = app.jobs
    assert (job.mode, job.strength, job.seeds, job.gen_width) == ("img2img", 0.6, (5,), 96)


def test_a1111_inpaint_with_a_white_mask_area(app: App) -> None:
    mask = np.zeros((64, 96), np.uint8)
    mask[:, 48:] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask, "L").save(buffer, format="PNG")
    payload = a1111_payload(mask=data_url(buffer.getvalue()), width=96, height=64)
    response = app.client.post("/sdapi/v1/img2img", json=payload)
    assert response.status_code == 200, response.text
    [job], [spec] = app.jobs, app.specs
    assert job.mode == "inpaint" and job.mask[0, 0] == 0 and job.mask[0, -1] == 255
    assert spec.overlay is not None and spec.overlay.mask.shape == (64, 96)


@pytest.mark.parametrize(
    "overrides,status,detail",
    [
        ({"init_images": ["@@notbase64"]}, 400, "init_images[0]"),
        ({"init_images": [base64.b64encode(b"junk").decode()]}, 400, "init_images[0]"),
        ({"init_images": []}, 422, "init_images"),
        ({"denoising_strength": 0.05}, 400, "denoising_strength"),
        ({"resize_mode": 1}, 400, "resize_mode"),
    ],
)
def test_a1111_img2img_errors(
    app: App, overrides: dict[str, Any], status: int, detail: str
) -> None:
    response = app.client.post("/sdapi/v1/img2img", json=a1111_payload(**overrides))
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_paste_outside_mask_keeps_the_original_exactly() -> None:
    generated = np.full((8, 8, 3), 200, np.uint8)
    original = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    out = paste_outside_mask(generated, original, mask, 32, 32)
    assert np.array_equal(out[mask == 0], original[mask == 0])
    assert (out[mask == 255] == 200).all()
