"""Client dialects: each translates its own request shape into the one ``GenerationJob``.

``REGISTRY`` maps the dialects of ``POST /v1/images/generations`` to their
translators; ``detect.py`` decides which one a request speaks. The A1111 dialect
has its own routes (``routes/a1111.py``) and its own module, ``a1111.py``.
"""

from __future__ import annotations

from serve_app.dialects import imagine_sdk as imagine
from serve_app.dialects import openai as openai_images
from serve_app.dialects import together
from serve_app.dialects.base import Dialect, DialectName
from serve_app.streaming.openai import OpenAIStream

OPENAI = Dialect(
    name="openai",
    parse=openai_images.parse_generate,
    model_name=lambda req: req.model,
    to_job=openai_images.to_job,
    to_encode_spec=lambda req, model, rid, base: openai_images.to_encode_spec(req, rid, base),
    build_response=lambda req, model, job, images: openai_images.build_response(
        req, job.seeds, images
    ),
    stream_format=lambda req, model, job, spec: (
        OpenAIStream("image_generation", job, spec, req.quality) if req.stream else None
    ),
)

REGISTRY: dict[DialectName, Dialect] = {
    "openai": OPENAI,
    "together": together.DIALECT,
    "imagine": imagine.DIALECT,
}
