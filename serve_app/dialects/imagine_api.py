"""The imagine images API dialect: translation onto the canonical job, Image objects.

``POST /v1/images/imagine`` generates exactly one image through the same path as
OpenAI generations (checked by the same ``check_openai`` rules, with this API's own
values) and keeps it as a named Image object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.errors import check_image_count, invalid, validate
from common.job import EncodedImage, EncodeSpec, assign_seeds
from common.model_config import ModelConfig
from common.sizes import parse_size
from serve_app.asgi.endpoints import DEFAULT_OWNER
from serve_app.dialects.base import Context, Dialect, Translation, log_ignored, new_job
from serve_app.dialects.loras import extension_loras
from serve_app.dialects.openai import check_openai
from serve_app.protocol.imagine import MAX_NAME_CHARS, ImageObject, ImagineRequest
from storage.base import image_data_key
from storage.catalog import ImageCatalog, ImageRecord, id_created_ms, iso_utc, new_image_id

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


def parse_imagine(body: Any) -> ImagineRequest:
    return validate(ImagineRequest, body, strict=True)


async def translate(
    req: ImagineRequest, model: ModelConfig, ctx: Context
) -> Translation[ImageRecord]:
    """One image, checked by OpenAI's rules, that the encoder stores under a new id.

    The response is the :class:`ImageRecord` the route saves (``spec.store_keys[0]``
    holds the bytes' key, for cleaning up when saving fails).
    """
    owner = ctx.owner or DEFAULT_OWNER
    width, height = parse_size(req.size)
    steps = model.default_steps
    check_openai(
        model,
        prompt=req.prompt,
        n=1,
        steps=steps,
        negative_prompt=req.negative_prompt,
        size=(width, height),
    )
    log_ignored(ctx.request_id, "imagine_api", req.unknown_fields())
    job = new_job(
        model,
        ctx.request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(1, req.seed),
        gen_size=model.generation_size(req.size),
        steps=steps,
        guidance=None,
        loras=extension_loras(req.loras, model),
    )
    image_id = new_image_id()
    data_key = image_data_key(owner, image_id, req.output_format)
    spec = EncodeSpec(
        request_id=ctx.request_id,
        width=width,
        height=height,
        output_format=req.output_format,
        compression=None,
        response_format="stored",
        store_keys=(data_key,),
    )

    def record(images: Sequence[EncodedImage]) -> ImageRecord:
        check_image_count(len(images), 1)
        return ImageRecord(
            id=image_id,
            owner=owner,
            name=req.name,
            width=width,
            height=height,
            format=req.output_format,
            size=images[0].byte_size,
            created_at=iso_utc(id_created_ms(image_id)),
            seed=job.seeds[0],
            model=model.id,
        )

    return Translation(job, spec, record)


DIALECT: Dialect[ImagineRequest, ImageRecord] = Dialect(
    name="imagine_api", parse=parse_imagine, model_name=lambda req: req.model, translate=translate
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
