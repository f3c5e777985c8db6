"""A1111's hires fix (``enable_hr``) on txt2img -> ``GenerationJob.hires``.

The first pass runs at ``width`` x ``height``; each image is then upscaled by
``hr_scale``, or to ``hr_resize_x`` x ``hr_resize_y`` (one of them 0: the other keeps
the aspect ratio; both set: stretched), and a second img2img pass runs on it with
``denoising_strength`` (default 0.7, as A1111's UI) over ``hr_second_pass_steps``
(0: the first pass's steps), with ``hr_sampler_name`` / ``hr_scheduler`` when they
name another sampler. All of it runs on the model replica (``deployments/model/hires.py``).

``hr_upscaler``: A1111's ``Latent`` modes interpolate the first pass's latents as
A1111 does (``torch.nn.functional.interpolate``, the mode and antialias flag of
:data:`LATENT_MODES`) and the second pass starts from them; ``Lanczos``, ``Nearest``,
``None`` (Lanczos) resize the decoded image, which the second pass encodes back to
latents. ``hr_checkpoint_name`` may only name the same model;
``hr_prompt``, ``hr_negative_prompt``, ``hr_cfg``, ``hr_additional_modules`` are ignored.
"""

from __future__ import annotations

from common.errors import invalid
from common.job import HiresSpec, HiresUpscaler, LatentMode
from common.model_config import ModelConfig
from serve_app.dialects.base import free_size, unsupported
from serve_app.dialects.samplers import resolve_sampler
from serve_app.inputs.uploads import check_strength
from serve_app.protocol.a1111 import Txt2ImgRequest

DEFAULT_STRENGTH = 0.7
# A1111's ``shared.latent_upscale_modes``: interpolate mode and antialias.
LATENT_MODES: dict[str, tuple[LatentMode, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS: dict[str, HiresUpscaler] = {
    "lanczos": "lanczos",
    "nearest": "nearest",
    "none": "none",
}
SAME = ("", "use same sampler", "use same scheduler", "use same checkpoint")


def target_size(req: Txt2ImgRequest) -> tuple[int, int]:
    """The upscaled (output) size, as A1111 computes it."""
    x, y = req.hr_resize_x, req.hr_resize_y
    if x <= 0 and y <= 0:
        return int(req.width * req.hr_scale), int(req.height * req.hr_scale)
    if y <= 0:
        return x, x * req.height // req.width
    if x <= 0:
        return y * req.width // req.height, y
    return x, y


def _same(value: str | None) -> bool:
    return value is None or value.strip().lower() in SAME


def hires_spec(req: Txt2ImgRequest, model: ModelConfig, steps: int) -> HiresSpec:
    """Check the hires fields (each error names its field) and build the second pass."""
    if not _same(req.hr_checkpoint_name):
        name = (req.hr_checkpoint_name or "").split(" [")[0].removesuffix(".safetensors")
        if name not in (model.id, *model.aliases):
            raise unsupported(
                "hr_checkpoint_name",
                "The hires pass runs on the same model here; send null or 'Use same checkpoint'.",
            )
    upscaler, latent_mode, antialias = _upscaler(req.hr_upscaler)
    width, height = target_size(req)
    param = "hr_scale" if req.hr_resize_x <= 0 and req.hr_resize_y <= 0 else "hr_resize_x"
    if width < 64 or height < 64:
        raise invalid(f"The hires size {width}x{height} is under 64 px a side.", param)
    gen_w, gen_h = free_size(model, width, height, (param, param))
    hr_steps = min(req.hr_second_pass_steps or steps, model.max_steps)
    strength = DEFAULT_STRENGTH if req.denoising_strength is None else req.denoising_strength
    check_strength(strength, hr_steps, "denoising_strength")
    scheduler = None
    if not (_same(req.hr_sampler_name) and _same(req.hr_scheduler)):
        sampler = req.sampler_name or req.sampler_index
        scheduler = resolve_sampler(
            sampler if _same(req.hr_sampler_name) else req.hr_sampler_name,
            req.scheduler if _same(req.hr_scheduler) else req.hr_scheduler,
            param="hr_sampler_name",
        )
    return HiresSpec(gen_w, gen_h, upscaler, strength, hr_steps, scheduler, latent_mode, antialias)


def _upscaler(name: str | None) -> tuple[HiresUpscaler, LatentMode, bool]:
    """``hr_upscaler`` (case-insensitive; null: ``Latent``) -> the spec's upscaler,
    latent interpolation mode and antialias flag."""
    key = (name or "Latent").strip().lower()
    for latent, (mode, antialias) in LATENT_MODES.items():
        if latent.lower() == key:
            return "latent", mode, antialias
    if key in PIXEL_UPSCALERS:
        return PIXEL_UPSCALERS[key], "bilinear", False
    known = ["None", "Lanczos", "Nearest", *LATENT_MODES]
    raise invalid(
        f"Unknown hr_upscaler {name!r}. Known: {', '.join(known)}.",
        "hr_upscaler",
        "unknown_upscaler",
    )


def hires_settings(req: Txt2ImgRequest, spec: HiresSpec) -> dict[str, object]:
    """The infotext keys A1111 writes for a hires image."""
    settings: dict[str, object] = {"Denoising strength": spec.strength}
    if req.hr_resize_x > 0 or req.hr_resize_y > 0:
        width, height = target_size(req)
        settings["Hires resize"] = f"{width}x{height}"
    else:
        settings["Hires upscale"] = req.hr_scale
    settings["Hires steps"] = spec.steps
    settings["Hires upscaler"] = req.hr_upscaler or "Latent"
    return settings
