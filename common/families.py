"""Model families by name, and which family a configured source belongs to (torch-free).

The model deployment implements each family (``deployments/model/families/``); the
ingress and the config only need their names: to validate ``family:``, to default a
LoRA folder, and to report ``"family"`` in ``/v1/models``. A family is inferred from
the source when the config leaves it out: the built-in tiny models by name, a local
checkpoint folder by ``model_index.json``'s ``_class_name``. A hub checkpoint is
inferred by the replica when it has downloaded that file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

FamilyName = Literal["sdxl", "flux", "qwen_image"]
FAMILIES: tuple[FamilyName, ...] = ("sdxl", "flux", "qwen_image")

BUILTIN_PREFIX = "builtin:"
# builtin:<name> -> its family.
BUILTIN_FAMILIES: dict[str, FamilyName] = {
    "tiny-sdxl": "sdxl",
    "tiny-flux": "flux",
    "tiny-qwen-image": "qwen_image",
}
# The demo LoRA adapters each built-in model's replica writes into its LoRA folder at
# start (built in code); known to the ingress before the replica has ever started.
BUILTIN_DEMO_LORAS: dict[str, tuple[str, ...]] = {
    "tiny-sdxl": ("demo-1", "demo-2", "demo-3", "demo-4"),
    "tiny-flux": tuple(f"flux-demo-{i}" for i in range(1, 5)),
    "tiny-qwen-image": tuple(f"qwen-demo-{i}" for i in range(1, 5)),
}
# model_index.json's _class_name -> family (the txt2img pipelines and their siblings).
PIPELINE_FAMILIES: dict[str, FamilyName] = {
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux",
    "QwenImagePipeline": "qwen_image",
    "QwenImageImg2ImgPipeline": "qwen_image",
    "QwenImageInpaintPipeline": "qwen_image",
}


# Families whose only sampler is flow-matching Euler (A1111's "Euler" maps to it).
FLOW_MATCHING: frozenset[FamilyName] = frozenset({"flux", "qwen_image"})


class FamilyMismatchError(ValueError):
    """The config names one family and the checkpoint is another."""


def family_of_index(index: dict[str, object], where: str) -> FamilyName:
    """The family of a ``model_index.json`` document."""
    class_name = str(index.get("_class_name", ""))
    family = PIPELINE_FAMILIES.get(class_name)
    if family is None:
        known = ", ".join(sorted({name for name in PIPELINE_FAMILIES if name.endswith("e")}))
        raise ValueError(
            f"{where}: model_index.json's _class_name {class_name!r} is not a served "
            f"architecture; served pipelines: {known}"
        )
    return family


def infer_family(source: str) -> FamilyName | None:
    """The family a source is known to be without downloading anything, or None."""
    if source.startswith(BUILTIN_PREFIX):
        return BUILTIN_FAMILIES.get(source.removeprefix(BUILTIN_PREFIX))
    index = Path(source).expanduser() / "model_index.json"
    if index.is_file():
        return family_of_index(json.loads(index.read_text()), str(index))
    return None


def demo_loras(source: str) -> tuple[str, ...]:
    """The demo adapters of a built-in source (none for a real checkpoint)."""
    return (
        BUILTIN_DEMO_LORAS.get(source.removeprefix(BUILTIN_PREFIX), ())
        if source.startswith(BUILTIN_PREFIX)
        else ()
    )


def check_family(declared: FamilyName | None, found: FamilyName, source: str) -> FamilyName:
    """``found``, unless the config declared another family: then a clear startup error."""
    if declared is not None and declared != found:
        raise FamilyMismatchError(
            f"model source {source!r} is a {found!r} checkpoint (model_index.json), but the "
            f"config says family: {declared}; fix or remove 'family'"
        )
    return found
