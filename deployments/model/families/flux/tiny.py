"""``builtin:tiny-flux``: FLUX.1's architecture at a tiny width, seeded, built in code.

It is the real ``FluxPipeline`` (a CLIP text encoder for the pooled embedding, a T5
encoder for the token sequence, the MMDiT ``FluxTransformer2DModel`` with double and
single stream blocks and a guidance embedding like FLUX.1 [dev], a 16-channel VAE
that downsamples by 8, and the flow-matching Euler scheduler with dynamic shifting),
so the whole serving path runs on a CPU with no download. Its images are noise.

Like the tiny SDXL it is written once with ``save_pretrained`` into the cache and
then loaded with ``from_pretrained`` exactly like a real checkpoint. Both tokenizers
are built in code: CLIP's byte-level BPE and a T5 unigram over printable ASCII.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from common.paths import default_cache_root
from deployments.model.families.loading import build_once
from deployments.model.families.sdxl.tiny import byte_level_vocab

TINY_FLUX = "tiny-flux"
_RECIPE_VERSION = 1
_SEED = 0
_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
T5_MAX_LENGTH = 32  # the pipeline's max_sequence_length for this model
_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels, packed 2x2
    "num_layers": 1,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": (4, 4, 8),
}
_VAE = {
    "block_out_channels": (8, 8, 8, 8),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 16,
    "mid_block_add_attention": False,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.1159,
    "scaling_factor": 0.3611,
    "sample_size": 128,
}
# FLUX.1 [dev]'s scheduler config.
_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def recipe_fingerprint() -> str:
    blob = json.dumps(
        [_RECIPE_VERSION, _SEED, _TEXT, _T5, T5_MAX_LENGTH, _TRANSFORMER, _VAE, _SCHEDULER],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary: T5's specials, the word-start marker, printable ASCII."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    return pieces + [(chr(code), -2.0) for code in range(33, 127)]


def build_tiny_flux_components() -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    vocab = byte_level_vocab()
    clip_config = CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        num_hidden_layers=1,
        projection_dim=32,
        max_position_embeddings=77,
        hidden_act="gelu",
        **_TEXT,
    )
    pieces = t5_vocab()
    t5_config = T5Config(vocab_size=len(pieces), pad_token_id=0, eos_token_id=1, **_T5)
    vae_blocks = len(_VAE["block_out_channels"])
    torch.manual_seed(_SEED)
    return {
        "text_encoder": CLIPTextModel(clip_config),
        "tokenizer": CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        "text_encoder_2": T5EncoderModel(t5_config),
        "tokenizer_2": T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH),
        "transformer": FluxTransformer2DModel(**_TRANSFORMER),
        "vae": AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * vae_blocks,
            up_block_types=("UpDecoderBlock2D",) * vae_blocks,
            **_VAE,
        ),
        "scheduler": FlowMatchEulerDiscreteScheduler(**_SCHEDULER),
    }


def ensure_tiny_flux(cache_root: Path | None = None) -> Path:
    """The tiny FLUX folder in ``save_pretrained`` layout, built once."""
    from diffusers import FluxPipeline

    def build(folder: Path) -> None:
        FluxPipeline(**build_tiny_flux_components()).save_pretrained(folder)

    root = cache_root or default_cache_root()
    return build_once(root, f"{TINY_FLUX}-{recipe_fingerprint()}", build)
