"""What A1111's discovery routes answer here, in A1111's shapes, and ``png-info``.

Clients (webuiapi, SillyTavern, Krita's and Photoshop's plugins) call these at start-up
and fill their menus from them, so each answers what is true of this server: the
upscalers (``None``, ``Lanczos``, ``Nearest``; the hires fix's ``Latent`` modes are
``/latent-upscale-modes``), no VAEs beyond each model's own, no embeddings, styles, face
restorers, RealESRGAN models, hypernetworks or scripts. LoRAs are ``/sdapi/v1/loras``.
"""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

from common.errors import invalid
from serve_app.dialects.a1111_hires import LATENT_MODES
from serve_app.dialects.infotext import PARAMETERS_KEY, parse_infotext

# A1111's ``UpscalerItem``s for its built-in, model-free upscalers.
UPSCALERS = [
    {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
    for name in ("None", "Lanczos", "Nearest")
]
# A1111's keys that describe the file rather than the image's generation (images.py).
IGNORED_INFO_KEYS = frozenset(
    {
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
    }  # fmt: skip
)
EMPTY_LIST_ROUTES = (
    "/sd-vae",
    "/sd-modules",
    "/prompt-styles",
    "/face-restorers",
    "/realesrgan-models",
    "/hypernetworks",
    "/script-info",
)


def latent_upscale_modes() -> list[dict[str, str]]:
    """The hires fix's ``Latent`` modes (``dialects/a1111_hires.py`` says how they run)."""
    return [{"name": name} for name in LATENT_MODES]


def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


def embeddings() -> dict[str, dict[str, Any]]:
    return {"loaded": {}, "skipped": {}}


def cmd_flags(auth_on: bool) -> dict[str, Any]:
    """The few of A1111's command-line flags that describe this server (``Flags``)."""
    return {"api": True, "nowebui": True, "api_auth": "***" if auth_on else None, "listen": True}


def memory() -> dict[str, Any]:
    """A1111's ``MemoryResponse`` for the ingress node's RAM; accelerators belong to the
    model replicas (their metrics are on Ray's Prometheus endpoint)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = float(os.sysconf("SC_PHYS_PAGES") * page)
        free = float(os.sysconf("SC_AVPHYS_PAGES") * page)
    except (ValueError, OSError):
        total = free = 0.0
    return {
        "ram": {"free": free, "used": total - free, "total": total},
        "cuda": {"error": "accelerators are held by the model replicas, not this ingress"},
    }


def png_info(data: bytes) -> dict[str, Any]:
    """``POST /sdapi/v1/png-info``: ``{info, items, parameters}`` as A1111 answers it.

    ``info`` is the ``parameters`` text; ``items`` the image's other text chunks;
    ``parameters`` the text parsed. Only the header and text chunks are read, never
    the pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise invalid("'image' is not a readable image.", "image", "invalid_image") from None
    geninfo = info.pop(PARAMETERS_KEY, None)
    items = {
        key: value if isinstance(value, str | int | float) else str(value)
        for key, value in info.items()
        if key not in IGNORED_INFO_KEYS and isinstance(key, str)
    }
    text = geninfo if isinstance(geninfo, str) else ""
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}
