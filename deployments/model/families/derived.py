"""Image-to-image and inpainting on the loaded txt2img pipeline's own components.

``<Family>Img2ImgPipeline.from_pipe`` and ``<Family>InpaintPipeline.from_pipe`` build
pipelines that share the denoiser, VAE, text encoders and tokenizers of the loaded
pipeline: no second copy of the weights, and the performance switches and hooks
(DeepCache, LoRA rows) apply to them too. They are built on first use, on the
pipeline thread; a family uses their helpers (``prepare_latents``, ``get_timesteps``,
``prepare_mask_latents``, the image and mask processors) to prepare its rows.

Each row gets its init image (and mask) already at the generation size: the ingress
resized them, so diffusers' preprocessing resizes nothing. Each row's VAE encoding
and noise use that row's generator, so an image with a given seed is the same alone
or inside a batch, as for txt2img.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SDXL_PIPELINES = {
    "img2img": "StableDiffusionXLImg2ImgPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
}


class DerivedPipelines:
    """The txt2img pipeline plus its img2img / inpaint siblings, built lazily."""

    def __init__(self, base: Any, classes: dict[str, str] | None = None) -> None:
        self.base = base
        self.classes = classes or SDXL_PIPELINES
        self._derived: dict[str, Any] = {}

    def for_mode(self, mode: str) -> Any:
        if mode == "txt2img":
            return self.base
        pipe = self._derived.get(mode)
        if pipe is None:
            import diffusers

            cls = getattr(diffusers, self.classes[mode])
            # dtype: from_pipe casts every shared module to it (float32 by default),
            # which would silently change a float16 model's own weights.
            pipe = cls.from_pipe(self.base, dtype=self.base.dtype)
            pipe.set_progress_bar_config(disable=True)
            self._derived[mode] = pipe
        return pipe


def rgb_image(pixels: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def gray_image(mask: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(mask), mode="L")
