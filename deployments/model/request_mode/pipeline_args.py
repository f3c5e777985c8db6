"""Request mode's pipeline arguments for img2img and inpaint groups (SDXL pipelines)."""

from __future__ import annotations

from typing import Any

from deployments.model.families.derived import gray_image, rgb_image
from deployments.model.request_mode.batching import GenerationGroup

# Per-step inputs each mode's loop reads back from ``callback_on_step_end``. The
# inpaint loop also blends with image latents and noise it keeps to itself, so its
# rows cannot be removed mid-call (see ``can_drop_rows``).
SLICED_INPUTS = ("latents", "prompt_embeds", "add_text_embeds", "add_time_ids")

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
