"""Image-to-image and inpainting on the loaded txt2img pipeline's own components.

``StableDiffusionXLImg2ImgPipeline.from_pipe`` and ``StableDiffusionXLInpaintPipeline
.from_pipe`` build pipelines that share the UNet, VAE, text encoders and tokenizers
of the loaded pipeline: no second copy of the weights, and the performance switches
(channels_last, a compiled UNet, VAE slicing) and DeepCache's UNet hook apply to
them too. They are built on first use, on the pipeline thread.

Per row of a group the pipelines get that row's init image (and mask), already at
the generation size: the ingress resized them, so diffusers' preprocessing resizes
nothing. Each row's VAE encoding and noise use that row's generator, so an image
with a given seed is the same alone or inside a batch, as for txt2img.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from deployments.model.batching import GenerationGroup

if TYPE_CHECKING:
    from PIL import Image

# Per-step inputs each mode's loop reads back from ``callback_on_step_end``. The
# inpaint loop also blends with image latents and noise it keeps to itself, so its
# rows cannot be removed mid-call (see ``can_drop_rows``).
SLICED_INPUTS = ("latents", "prompt_embeds", "add_text_embeds", "add_time_ids")
PIPELINE_CLASSES = {
    "img2img": "StableDiffusionXLImg2ImgPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
}


class DerivedPipelines:
    """The txt2img pipeline plus its img2img / inpaint siblings, built lazily."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self._derived: dict[str, Any] = {}

    def for_mode(self, mode: str) -> Any:
        if mode == "txt2img":
            return self.base
        pipe = self._derived.get(mode)
        if pipe is None:
            import diffusers

            cls = getattr(diffusers, PIPELINE_CLASSES[mode])
            # dtype: from_pipe casts every shared module to it (float32 by default),
            # which would silently change a float16 model's own weights.
            pipe = cls.from_pipe(self.base, dtype=self.base.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._derived[mode] = pipe
        return pipe


def can_drop_rows(mode: str) -> bool:
    """Whether cancelled rows can leave a running call of this mode.

    txt2img and img2img keep per-row state only in the sliced inputs. The inpaint
    loop (4-channel UNet) re-noises its image latents every step with tensors it
    does not expose, so an inpaint call always runs to the end.
    """
    return mode in ("txt2img", "img2img")


def mode_kwargs(group: GenerationGroup) -> dict[str, Any]:
    """The pipeline arguments an img2img or inpaint group adds to the txt2img call."""
    if group.mode == "txt2img":
        return {}
    if group.init_images is None or group.strength is None:
        raise ValueError(f"a {group.mode} group needs init images and a strength")
    kwargs: dict[str, Any] = {
        "image": [rgb_image(image) for image in group.init_images],
        "strength": group.strength,
    }
    if group.mode == "inpaint":
        if group.masks is None:
            raise ValueError("an inpaint group needs masks")
        kwargs["mask_image"] = [gray_image(mask) for mask in group.masks]
        kwargs["width"], kwargs["height"] = group.width, group.height
    return kwargs


def rgb_image(pixels: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def gray_image(mask: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(mask), mode="L")
