"""The embedded default model: a tiny SDXL built in code with seeded random weights.

It is the real ``StableDiffusionXLPipeline`` architecture (two CLIP text encoders,
a text-time conditioned UNet, a 4-block VAE that downsamples by 8) at a tiny width,
so the whole serving path runs on a CPU with no download. Its images are noise.

The pipeline is built once, written with ``save_pretrained`` into a cache folder,
and from then on loaded with ``from_pretrained`` exactly like a real checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from common.paths import default_cache_root
from deployments.model.families.loading import build_once

BUILTIN_PREFIX = "builtin:"
TINY_SDXL = "tiny-sdxl"

# Bump when the architecture below changes, so stale caches are rebuilt.
_RECIPE_VERSION = 1
_SEED = 0

_TEXT_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "transformer_layers_per_block": (1, 1),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "norm_num_groups": 8,
    "sample_size": 16,
}
_VAE = {
    "block_out_channels": (8, 8, 8, 8),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "mid_block_add_attention": False,
    "sample_size": 128,
}
_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def recipe_fingerprint() -> str:
    """A short hash of everything that defines the tiny model's weights."""
    blob = json.dumps(
        [_RECIPE_VERSION, _SEED, _TEXT_ENCODER, _UNET, _VAE, _SCHEDULER], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with one symbol per byte, its ``</w>`` form, and specials."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for sym in symbols:
        vocab[sym] = len(vocab)
    for sym in symbols:
        vocab[sym + "</w>"] = len(vocab)
    return vocab


def build_tiny_sdxl_components() -> dict[str, Any]:
    """Build every SDXL component from configs, with weights seeded by ``_SEED``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    vocab = byte_level_vocab()
    text_config = CLIPTextConfig(
        vocab_size=len(vocab), bos_token_id=0, eos_token_id=1, pad_token_id=1, **_TEXT_ENCODER
    )
    hidden = _TEXT_ENCODER["hidden_size"]
    unet_config = dict(_UNET)
    # SDXL conditions on both encoders' hidden states, concatenated, and on the
    # pooled text embedding plus six time ids (original size, crop, target size).
    unet_config["cross_attention_dim"] = 2 * hidden
    unet_config["projection_class_embeddings_input_dim"] = (
        6 * _UNET["addition_time_embed_dim"] + _TEXT_ENCODER["projection_dim"]
    )
    vae_blocks = len(_VAE["block_out_channels"])

    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        **_VAE,
    )
    tokenizers = [CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77) for _ in range(2)]
    return {
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizers[0],
        "tokenizer_2": tokenizers[1],
        "unet": unet,
        "vae": vae,
        "scheduler": EulerDiscreteScheduler(**_SCHEDULER),
    }


def ensure_tiny_sdxl(cache_root: Path | None = None) -> Path:
    """Return a folder holding the tiny SDXL in ``save_pretrained`` layout, building it once."""
    from diffusers import StableDiffusionXLPipeline

    def build(folder: Path) -> None:
        StableDiffusionXLPipeline(**build_tiny_sdxl_components()).save_pretrained(folder)

    root = cache_root or default_cache_root()
    return build_once(root, f"{TINY_SDXL}-{recipe_fingerprint()}", build)


def resolve_builtin(source: str, cache_root: Path | None = None) -> Path:
    """Map ``builtin:<name>`` to a local folder; raise for unknown names."""
    name = source.removeprefix(BUILTIN_PREFIX)
    if name != TINY_SDXL:
        raise ValueError(
            f"unknown built-in model {source!r}; the only one is 'builtin:{TINY_SDXL}'"
        )
    return ensure_tiny_sdxl(cache_root)
