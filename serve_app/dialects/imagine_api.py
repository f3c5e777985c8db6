"""The imagine images API dialect: wire models and translation onto the canonical job.

``POST /v1/images/imagine`` generates exactly one image through the same path as
OpenAI generations (the request is translated into an ``ImageGenerateRequest``, so
every model limit is checked once, in one place) and keeps it as a named Image object.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from common.errors import invalid, validate
from common.job import EncodeSpec, GenerationJob
from common.model_config import ModelConfig
from common.sizes import parse_size
from serve_app.dialects import openai as openai_images
from serve_app.protocol.imagine import MAX_NAME_CHARS, ImageObject, ImagineRequest
from serve_app.protocol.openai import ImageGenerateRequest
from storage.catalog import ImageCatalog, ImageRecord, id_created_ms, iso_utc

logger = logging.getLogger("imagegen.imagine")

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


def parse_imagine(body: Any) -> ImagineRequest:
    return validate(ImagineRequest, body)


def to_job_and_spec(
    req: ImagineRequest, model: ModelConfig, request_id: str, data_key: str
) -> tuple[GenerationJob, EncodeSpec]:
    """One image, generated like an OpenAI request, stored by the encoder at ``data_key``."""
    if req.unknown_fields():
        logger.info("request %s: ignoring fields %s", request_id, req.unknown_fields())
    generate = ImageGenerateRequest(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seed=req.seed,
        model=req.model,
        size=req.size,
        output_format=req.output_format,
        n=1,
        loras=req.loras,
    )
    job = openai_images.to_job(generate, model, request_id)
    spec = openai_images.to_encode_spec(generate, request_id, base_url=None)
    return job, dataclasses.replace(spec, response_format="stored", store_keys=(data_key,))


def new_record(
    req: ImagineRequest, owner: str, model: ModelConfig, image_id: str, seed: int, size: int
) -> ImageRecord:
    width, height = parse_size(req.size)
    return ImageRecord(
        id=image_id,
        owner=owner,
        name=req.name,
        width=width,
        height=height,
        format=req.output_format,
        size=size,
        created_at=iso_utc(id_created_ms(image_id)),
        seed=seed,
        model=model.id,
    )


def to_object(record: ImageRecord, public_url: str | None) -> ImageObject:
    return ImageObject(
        id=record.id,
        name=record.name,
        url=public_url,
        width=record.width,
        height=record.height,
        format=record.format,
        size=record.size,
        created_at=record.created_at,
        seed=record.seed,
    )


def parse_list_query(params: dict[str, str]) -> tuple[int, str | None, str | None]:
    """``limit`` (1-100, default 20), ``after`` (an image id), ``name`` (exact match)."""
    raw_limit = params.get("limit", str(DEFAULT_LIST_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        raise invalid(
            f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {raw_limit!r}.",
            param="limit",
        )
    after = params.get("after") or None
    if after is not None and not ImageCatalog.valid_id(after):
        raise invalid(f"after must be an image id, got {after!r}.", param="after")
    name = params.get("name")
    if name is not None and not 1 <= len(name) <= MAX_NAME_CHARS:
        raise invalid(f"name must be 1 to {MAX_NAME_CHARS} characters.", param="name")
    return int(raw_limit), after, name
