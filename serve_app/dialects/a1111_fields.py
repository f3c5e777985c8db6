"""What this server does with each field of A1111's txt2img and img2img bodies.

Every field of A1111's request models is accepted (``protocol/a1111.py``) and falls
in one of three groups, which ``docs/api/a1111.md`` tabulates:

- **honoured**: it changes the images or the response (:data:`HONOURED`);
- **refused while set**: a setting this server cannot carry out, where ignoring it
  would silently give another picture: ``restore_faces: true``, a ``script_name``,
  and an ``alwayson_scripts`` block that is enabled and not
  empty. Each is a 400 naming the field (``alwayson_scripts.ControlNet``);
- **ignored** (logged): everything else, which tunes parts of A1111 this server does
  not have (saving to disk, subseeds, sampler noise knobs, refiner, mask blur, ...).

``alwayson_scripts`` blocks: clients send every installed extension's block, mostly
disabled. A block is ignored when its ``args`` are empty, start with ``false``, or
are units that are all disabled (``{"enabled": false}``) or empty (``{}``); the
built-in ``Seed`` and ``Sampler`` blocks repeat top-level fields and are ignored;
``Extra options`` and ``Refiner`` follow the same rule as extensions.
"""

from __future__ import annotations

from typing import Any

from serve_app.dialects.base import unsupported
from serve_app.protocol.a1111 import Img2ImgRequest, Txt2ImgRequest

HONOURED = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "sampler_name",
        "sampler_index",
        "scheduler",
        "batch_size",
        "n_iter",
        "steps",
        "cfg_scale",
        "width",
        "height",
        "override_settings",
        "send_images",
        "alwayson_scripts",
        "script_name",
        "restore_faces",
        "enable_hr",
    }
)
# The hires fix (dialects/a1111_hires.py): honoured while enable_hr is true.
HIRES_FIELDS = frozenset(
    {
        "hr_scale",
        "hr_upscaler",
        "hr_second_pass_steps",
        "hr_resize_x",
        "hr_resize_y",
        "hr_checkpoint_name",
        "hr_sampler_name",
        "hr_scheduler",
        "denoising_strength",
    }
)
IMG2IMG_HONOURED = (HONOURED - {"enable_hr"}) | {
    "init_images",
    "mask",
    "denoising_strength",
    "inpainting_mask_invert",
    "resize_mode",
    "include_init_images",
}
# Built-in always-on scripts whose args repeat top-level fields.
REDUNDANT_SCRIPTS = frozenset({"seed", "sampler"})


def ignored_fields(req: Txt2ImgRequest) -> list[str]:
    """The fields the client set that this server accepts and does not use."""
    if isinstance(req, Img2ImgRequest):
        honoured = IMG2IMG_HONOURED
    else:
        honoured = HONOURED | HIRES_FIELDS if req.enable_hr else HONOURED
    return sorted(req.model_fields_set - honoured)


def _empty(value: Any) -> bool:
    return value in (None, "", [], {}, "None")


def _active_unit(unit: Any) -> bool:
    """A ControlNet-style unit: enabled (the default) and holding something."""
    if isinstance(unit, dict):
        if unit.get("enabled", True) is False:
            return False
        return any(not _empty(v) for k, v in unit.items() if k != "enabled")
    return not _empty(unit)


def block_is_active(block: Any) -> bool:
    """Whether one ``alwayson_scripts`` block would change the images in A1111."""
    if not isinstance(block, dict):
        return not _empty(block)
    args = block.get("args")
    if _empty(args):
        return False
    if not isinstance(args, list):
        return _active_unit(args)
    if args[0] is False:
        return False
    return any(_active_unit(arg) for arg in args)


def active_scripts(alwayson: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name, block in alwayson.items()
        if name.strip().lower() not in REDUNDANT_SCRIPTS and block_is_active(block)
    )


def check_refused(req: Txt2ImgRequest) -> None:
    """A 400 naming the first set field this server cannot carry out."""
    if req.restore_faces:
        raise unsupported(
            "restore_faces",
            "restore_faces is not supported by this server (no face "
            "restorer is installed, GET /sdapi/v1/face-restorers); send false or null.",
        )
    if req.script_name:
        raise unsupported(
            "script_name",
            f"Scripts are not supported by this server (got script_name {req.script_name!r}; "
            "GET /sdapi/v1/scripts lists none); send null.",
        )
    active = active_scripts(req.alwayson_scripts)
    if active:
        raise unsupported(
            f"alwayson_scripts.{active[0]}",
            f"The always-on script {active[0]!r} is enabled, and this server has no "
            "extensions; disable it or leave it out (disabled and empty blocks are ignored).",
        )
