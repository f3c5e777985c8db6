"""Request limits, in one place: body size, JSON shape, prompt, ``n``, steps and pixels.

Each limit fails with a 4xx :class:`APIError` whose message names the limit (the
config key where there is one), so a client knows what to change. Routes raise
these through ``api_endpoint``, which answers in the route's dialect shape.

Three layers, each generic so new routes get them without asking:

1. :func:`body_limit` (used by ``serve_app.asgi.middleware``): a body over the limit is
   refused with 413 before it is read (``Content-Length``) or as soon as the
   streamed bytes pass it (chunked bodies).
2. :func:`parse_json` (used by ``serve_app.asgi.endpoints.read_json``): strict JSON. NaN and
   Infinity (not JSON, but Python's parser takes them), nesting deeper than
   :data:`MAX_JSON_DEPTH` and strings with lone UTF-16 surrogates are 400s.
3. :func:`check_request` (each dialect, with its own parameter names) and
   :func:`check_job` (``Ingress.generate_images`` and the streaming route: the
   canonical job against the model, whatever route built it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import APIError, invalid
from common.paths import A1111_API

if TYPE_CHECKING:
    from common.config import ImageInputConfig, IngressConfig
    from common.job import EncodeSpec, GenerationJob
    from common.model_config import ModelConfig

MAX_JSON_DEPTH = 32
MULTIPART = "multipart/form-data"


# 1. Body size ------------------------------------------------------------------------


# JSON routes whose bodies carry images (base64), so the upload limit applies to them.
# (JSON edits carry them as data: URLs.)
IMAGE_JSON_ROUTES = frozenset({f"{A1111_API}/img2img", f"{A1111_API}/png-info", "/v1/images/edits"})


@dataclass(frozen=True)
class BodyLimit:
    bytes: int
    name: str  # the config key, named in the 413


def body_limit(
    ingress: IngressConfig, images: ImageInputConfig, path: str, content_type: str | None
) -> BodyLimit:
    """Bytes a request body may have: uploads (multipart, or a JSON route that carries
    images) get ``images.max_upload_bytes``, everything else ``ingress.max_body_bytes``."""
    multipart = (content_type or "").lower().startswith(MULTIPART)
    if multipart or path in IMAGE_JSON_ROUTES:
        return BodyLimit(images.max_upload_bytes, "images.max_upload_bytes")
    return BodyLimit(ingress.max_body_bytes, "ingress.max_body_bytes")


def too_large(limit: int, what: str = "max_body_bytes") -> APIError:
    return APIError(
        "payload_too_large",
        f"Request body exceeds the limit of {limit} bytes ({what}).",
        code="request_too_large",
    )


# 2. JSON shape -------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: any failure is a 400 ``invalid_json`` saying what is wrong."""
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        value = None
        problem = f"it is nested more than {MAX_JSON_DEPTH} levels deep"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = str(exc.args[0])
    except ValueError as exc:  # NaN / Infinity
        problem = str(exc)
    else:
        problem = _shape_problem(value)
    if problem is not None:
        raise invalid(
            f"We could not parse the JSON body of your request: {problem}.", code="invalid_json"
        )
    return value


def _shape_problem(value: Any) -> str | None:
    """Nesting depth and string validity, checked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _is_utf8(item):
                return "a string holds a lone UTF-16 surrogate (not valid Unicode)"
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            return f"it is nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        else:
            stack.extend((child, depth + 1) for child in item)
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# 3. Generation limits -------------------------------------------------------------------


def check_request(
    model: ModelConfig,
    *,
    n: int,
    prompt: str,
    steps: int,
    steps_param: str,
    n_param: str = "n",
    negative_prompt: str | None = None,
) -> None:
    """The model's limits, named with the dialect's own parameters."""
    if n > model.max_images_per_request:
        raise invalid(
            f"{n_param}={n} exceeds this model's limit of {model.max_images_per_request} "
            "images (max_images_per_request).",
            param=n_param,
            code="too_many_images",
        )
    for param, text in (("prompt", prompt), ("negative_prompt", negative_prompt or "")):
        if len(text) > model.max_prompt_chars:
            raise invalid(
                f"{param} is {len(text)} characters; the limit is {model.max_prompt_chars} "
                "(max_prompt_chars).",
                param=param,
                code="prompt_too_long",
            )
    if steps > model.max_steps:
        raise invalid(
            f"{steps_param}={steps} exceeds this model's limit of {model.max_steps} (max_steps).",
            param=steps_param,
            code="too_many_steps",
        )


def check_pixels(model: ModelConfig, n: int, width: int, height: int, param: str) -> None:
    """Output pixels per request: ``n`` images of ``width`` x ``height``."""
    total = n * width * height
    if total > model.max_pixels_per_request:
        raise invalid(
            f"{n} images of {width}x{height} are {total} pixels; this model's limit per "
            f"request is {model.max_pixels_per_request} (max_pixels_per_request). "
            "Ask for fewer or smaller images.",
            param=param,
            code="too_many_pixels",
        )


def check_job(model: ModelConfig, job: GenerationJob, spec: EncodeSpec) -> None:
    """The canonical job against the model: the guard every generating route passes.

    Dialects check first with their own parameter names; this catches a route
    (or a dialect) that builds a job without those checks. Pixels per image are the
    dialects' business (OpenAI's fixed sizes, :func:`dialects.common.free_size`);
    pixels per request are checked here, for every route.
    """
    check_request(
        model,
        n=len(job.seeds),
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        steps=job.steps,
        steps_param="steps",
    )
    check_pixels(model, len(job.seeds), spec.width, spec.height, "n")
