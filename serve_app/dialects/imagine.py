"""The imagine SDK (``python-imagine-sdk``) ``ImageRequest`` on ``POST /v1/images/generations``.

The SDK sends its whole ``ImageRequest`` with ``exclude_none``: defaults included
(``negative_prompt="blurry"``, ``seed=27``, ``seed_increment=100``, ``size="512x512"``,
``num_inference_steps=20``, ``guidance_scale=6.5``, ``response_format="b64_json"``).
The same defaults apply here when a field is absent; an explicit JSON ``null`` seed
draws random seeds. Image *i* uses ``seed + i * seed_increment``.

The response is ``{id, model, object: "text_to_image", created, data: [{b64_json,
url}]}``. For ``url`` the SDK prefixes the URL with its endpoint's parent
(``dirname("http://host/v1") + url``), so URLs here are host-relative paths.

``stream=true`` (``images_generate_stream``) runs the same streamed generation as
OpenAI's: the SDK reads ``data:`` lines, each a whole ``ImageResponse``, until
``data: [DONE]``. Here that is one response per preview step
(``IMAGINE_STREAM_PARTIALS`` of them, with an extra ``partial_image_index``),
then one with the finished images. Previews use the encoder's fast preview
settings; with ``response_format=url`` they are stored like finals, because the
SDK rewrites every item's ``url``. An error part-way is a ``data:`` line holding an
OpenAI error object, which the SDK fails to read as an ``ImageResponse`` and raises.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from serve_app.config import ModelConfig
from serve_app.dialects.common import Dialect, default_steps, free_size, log_ignored
from serve_app.errors import APIError, check_image_count, invalid, validate
from serve_app.job import EncodedImage, EncodeSpec, GenerationJob, ImageEvent, assign_seeds
from serve_app.limits import check_request
from serve_app.protocol import MAX_SEED, LenientModel
from serve_app.streaming import sse

IMAGINE_DEFAULT_STEPS = 20
# Previews a stream=true request gets (the SDK has no parameter for it).
IMAGINE_STREAM_PARTIALS = 2
# Fields only the imagine SDK sends: any of them marks a request as imagine's (detect.py).
IMAGINE_ONLY_FIELDS = frozenset({"seed_increment", "cache_interval"})
_SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


class ImagineImageRequest(LenientModel):
    """The imagine SDK's ``ImageRequest`` (``imagine.types.images``)."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    negative_prompt: str | None = "blurry"
    seed: int | None = Field(default=27, ge=0, le=MAX_SEED)
    seed_increment: int | None = Field(default=100, ge=0)
    n: int | None = Field(default=1, ge=1, le=10)
    num_inference_steps: int | None = Field(default=None, ge=1, description="Default 20.")
    size: str | None = "512x512"
    guidance_scale: float | None = Field(default=6.5, ge=0.0, le=50.0)
    cache_interval: int | None = Field(
        default=None, ge=1, le=100, description="DeepCache: full UNet every N steps."
    )
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    stream: bool = False

    @field_validator("size")
    @classmethod
    def _size_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE_RE.match(value):
            raise ValueError(f"size must look like '512x512', got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ImagineImageRequest:
        last = (self.seed or 0) + (self.images - 1) * self.increment
        if self.seed is not None and last > MAX_SEED:
            raise ValueError(f"the last image's seed {last} exceeds the largest seed {MAX_SEED}")
        return self

    @property
    def images(self) -> int:
        return self.n or 1

    @property
    def increment(self) -> int:
        return 100 if self.seed_increment is None else self.seed_increment

    @property
    def width_height(self) -> tuple[int, int]:
        match = _SIZE_RE.match(self.size or "512x512")
        assert match is not None  # checked by the validator
        return int(match.group(1)), int(match.group(2))


def parse(body: Any) -> ImagineImageRequest:
    return validate(ImagineImageRequest, body)


def to_job(req: ImagineImageRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    steps = req.num_inference_steps or default_steps(model, IMAGINE_DEFAULT_STEPS)
    check_request(
        model, n=req.images, prompt=req.prompt, steps=steps, steps_param="num_inference_steps"
    )
    if req.cache_interval is not None and req.cache_interval > steps:
        raise invalid(
            f"cache_interval={req.cache_interval} is more than num_inference_steps={steps}: "
            "only the first step would run the full UNet.",
            param="cache_interval",
        )
    if req.cache_interval not in (None, 1) and model.performance.compile_unet:
        raise invalid(
            f"Model '{model.id}' runs a compiled UNet, which cache_interval cannot patch; "
            "send cache_interval=1 or omit it.",
            param="cache_interval",
        )
    width, height = req.width_height
    gen_w, gen_h = free_size(model, width, height, ("size", "size"))
    log_ignored(request_id, "imagine", req.unknown_fields())
    guidance = model.default_guidance if req.guidance_scale is None else req.guidance_scale
    return GenerationJob(
        request_id=request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.images, req.seed, req.increment),
        gen_width=gen_w,
        gen_height=gen_h,
        steps=steps,
        guidance=float(guidance),
        cache_interval=req.cache_interval,
        partial_images=IMAGINE_STREAM_PARTIALS if req.stream else 0,
    )


def to_encode_spec(
    req: ImagineImageRequest, model: ModelConfig, request_id: str, base_url: str | None
) -> EncodeSpec:
    width, height = req.width_height
    return EncodeSpec(
        request_id=request_id,
        width=width,
        height=height,
        output_format="png",
        compression=None,
        response_format=req.response_format or "b64_json",
        base_url=base_url,
    )


def host_relative(url: str) -> str:
    """``http://host/v1/images/files/k?sig`` -> ``/v1/images/files/k?sig``."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def build_response(
    req: ImagineImageRequest,
    model: ModelConfig,
    job: GenerationJob,
    images: Sequence[EncodedImage],
) -> dict[str, Any]:
    check_image_count(len(images), job.n)
    data = [
        {
            "b64_json": image.b64_json,
            "url": host_relative(image.url) if image.url else None,
            "seed": seed,
        }
        for image, seed in zip(images, job.seeds, strict=True)
    ]
    return {
        "id": job.request_id,
        "model": req.model or model.id,
        "object": "text_to_image",
        "created": int(time.time()),
        "data": data,
    }


class ImagineStream:
    """The imagine SDK's stream: an ``ImageResponse`` per event, then ``[DONE]``."""

    def __init__(self, req: ImagineImageRequest, model: ModelConfig, job: GenerationJob) -> None:
        self.req = req
        self.model = model
        self.job = job

    def frames(self, event: ImageEvent, images: Sequence[EncodedImage]) -> list[str]:
        response = build_response(self.req, self.model, self.job, images)
        if event.kind == "partial":
            response["partial_image_index"] = event.partial_index or 0
        return [sse(response)]

    def error(self, err: APIError) -> str:
        return sse(err.body())

    def end(self) -> list[str]:
        return [sse("[DONE]")]


def stream_format(
    req: ImagineImageRequest, model: ModelConfig, job: GenerationJob, spec: EncodeSpec
) -> ImagineStream | None:
    return ImagineStream(req, model, job) if req.stream else None


DIALECT = Dialect(
    name="imagine",
    parse=parse,
    model_name=lambda req: req.model,
    to_job=to_job,
    to_encode_spec=to_encode_spec,
    build_response=build_response,
    stream_format=stream_format,
)
