"""Which family serves a model: the config's ``family``, or the checkpoint's own word.

``model_index.json``'s ``_class_name`` names the diffusers pipeline a checkpoint was
saved from. A local folder or a built-in model is read without a download; a hub
checkpoint's ``model_index.json`` is fetched through the hub cache (the weights follow
anyway). A config whose ``family`` contradicts the checkpoint fails at startup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from common.families import FamilyName, check_family, family_of_index
from common.model_config import ModelConfig
from deployments.model.families.base import Family

FamilyFactory = Callable[[ModelConfig], Family]


def family_name(config: ModelConfig) -> FamilyName:
    """The model's family, checked against the checkpoint."""
    known = config.known_family()
    if known is not None:
        return known
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {"local_files_only": config.local_files_only}
    if config.revision:
        kwargs["revision"] = config.revision
    path = hf_hub_download(config.source, "model_index.json", **kwargs)
    with open(path) as handle:
        found = family_of_index(json.load(handle), f"{config.source}/model_index.json")
    return check_family(config.family, found, config.source)


def family_class(name: FamilyName) -> Callable[[ModelConfig], Family]:
    """The family's class (imported on demand: each pulls its own diffusers pipelines)."""
    if name == "flux":
        from deployments.model.families.flux.family import FluxFamily

        return FluxFamily
    if name == "qwen_image":
        from deployments.model.families.qwen_image.family import QwenImageFamily

        return QwenImageFamily
    from deployments.model.families.sdxl.family import SdxlFamily

    return SdxlFamily


def load_family(config: ModelConfig) -> Family:
    """Load the configured model through its family's pipeline class."""
    return family_class(family_name(config))(config)
