"""Images sent in by clients: read, decode, validate, and shape them for a job.

Everything here runs in the ingress. Only uint8 numpy arrays leave it: the init
image (and mask) resized to the model's generation size for the model deployment,
and, for inpainting, the original and mask at the output size for the encoder,
which pastes the original back outside the mask.

Resizing is "just resize" (A1111's resize mode 0): the image is stretched to the
target size, aspect ratio not kept. With OpenAI's ``size=auto`` the output size is
the one closest to the input's aspect ratio, so the stretch is small.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from common.config import ImageInputConfig
from common.errors import invalid
from common.job import GenerationJob, Overlay
from serve_app.asgi.endpoints import read_body

# PIL format names we accept (MPO is the multi-picture JPEG many phones write).
ACCEPTED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}
MIME_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/webp"}


@dataclass(frozen=True, eq=False)
class InputImage:
    """A decoded upload: ``pixels`` is ``(H, W, 3)`` uint8 RGB; ``alpha`` ``(H, W)`` or None."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.pixels.shape[1], self.pixels.shape[0]


def decode_image(data: bytes, param: str, limits: ImageInputConfig) -> InputImage:
    """Decode png/jpeg/webp bytes; a 400 naming ``param`` for anything else.

    The pixel count is checked from the header, before any pixel is decoded, so a
    small file that claims a huge image (a decompression bomb) costs nothing.
    """
    if not data:
        message = f"'{param}' is empty; send a png, jpeg or webp image."
        raise invalid(message, param, "invalid_image")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise _undecodable(param) from None
    fmt = ACCEPTED_FORMATS.get(image.format or "")
    if fmt is None:
        raise invalid(
            f"'{param}' is a {image.format or 'unknown'} image; send png, jpeg or webp.",
            param,
            "unsupported_image_format",
        )
    width, height = image.size
    if width * height > limits.max_input_pixels:
        raise invalid(
            f"'{param}' is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_input_pixels} pixels.",
            param,
            "image_too_large",
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos: apply the EXIF rotation
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise _undecodable(param) from None
    alpha = None
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.uint8)
        rgb = rgba.convert("RGB")
    else:
        rgb = image.convert("RGB")
    return InputImage(np.asarray(rgb, np.uint8), alpha, fmt)


def _undecodable(param: str) -> Exception:
    return invalid(
        f"'{param}' could not be decoded as an image (truncated or corrupt data?).",
        param,
        "invalid_image",
    )


def mask_from_alpha(mask: InputImage, image: InputImage, param: str = "mask") -> np.ndarray:
    """OpenAI's mask: a PNG whose fully transparent pixels (alpha 0) mark the area to
    repaint. Returns ``(H, W)`` uint8, 255 = repaint (partial alpha blends)."""
    if mask.alpha is None:
        raise invalid(
            f"'{param}' has no alpha channel; send a PNG whose transparent pixels (alpha 0) "
            "mark the area to edit.",
            param,
            "invalid_mask",
        )
    _check_same_size(mask, image, param)
    return 255 - mask.alpha


def mask_from_luminance(
    mask: InputImage, image: InputImage, param: str = "mask", invert: bool = False
) -> np.ndarray:
    """A1111's mask: white repaints, black keeps (``invert`` swaps them)."""
    _check_same_size(mask, image, param)
    gray = np.asarray(Image.fromarray(mask.pixels).convert("L"), np.uint8)
    return 255 - gray if invert else gray


def _check_same_size(mask: InputImage, image: InputImage, param: str) -> None:
    if mask.size != image.size:
        raise invalid(
            f"'{param}' is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{image.size[0]}x{image.size[1]}; they must be the same size.",
            param,
            "mask_size_mismatch",
        )


def resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` or ``(H, W)`` uint8 stretched to ``width`` x ``height`` (Lanczos)."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, np.uint8)


def with_init_image(
    job: GenerationJob,
    image: InputImage,
    strength: float,
    mask: np.ndarray | None = None,
    output_size: tuple[int, int] | None = None,
    strength_param: str = "strength",
) -> tuple[GenerationJob, Overlay | None]:
    """Turn a txt2img job into img2img (or inpaint with ``mask``) on ``image``.

    Returns the job and, for inpainting, the overlay the encoder pastes at
    ``output_size`` (width, height).
    """
    check_strength(strength, job.steps, strength_param)
    init = resized(image.pixels, job.gen_width, job.gen_height)
    if mask is None:
        return replace(job, mode="img2img", init_image=init, strength=strength), None
    if output_size is None:
        raise ValueError("inpainting needs the output size for its overlay")
    gen_mask = resized(mask, job.gen_width, job.gen_height)
    job = replace(job, mode="inpaint", init_image=init, mask=gen_mask, strength=strength)
    width, height = output_size
    overlay = Overlay(resized(image.pixels, width, height), resized(mask, width, height))
    return job, overlay


def check_strength(strength: float, steps: int, param: str = "strength") -> None:
    """img2img runs ``int(steps * strength)`` steps: at least one is needed."""
    if not 0.0 < strength <= 1.0:
        raise invalid(f"{param} must be in (0, 1], got {strength}.", param, "invalid_value")
    if int(steps * strength) < 1:
        raise invalid(
            f"{param}={strength} with {steps} steps runs no denoising step "
            f"(int(steps * {param}) must be at least 1); raise {param} or the step count.",
            param,
            "invalid_value",
        )


async def read_form(request: Request, limits: ImageInputConfig) -> list[tuple[str, object]]:
    """A multipart body, read within ``max_upload_bytes`` (413 past it), as ``(name, value)``
    pairs in order; file values are the files' bytes."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise invalid(
            "This route takes multipart/form-data (the image as a file upload); "
            f"got content-type '{content_type or 'none'}'.",
            code="invalid_content_type",
        )
    body = await read_body(request)

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(
        request.headers,
        stream(),
        # One more than we accept, so "too many images" is our own clear 400.
        max_files=limits.max_input_images + 2,
        max_fields=200,
        max_part_size=1024 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        # Starlette counts files itself; past our own limit + 2 it refuses first.
        param = "image" if "files" in exc.message else None
        message = f"Malformed multipart body: {exc.message}"
        raise invalid(message, param, "invalid_multipart") from None
    items: list[tuple[str, object]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            items.append((name, await value.read()))
            await value.close()
        else:
            items.append((name, value))
    return items
