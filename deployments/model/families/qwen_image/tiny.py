"""``builtin:tiny-qwen-image``: Qwen-Image's architecture at a tiny width, built in code.

It is the real ``QwenImagePipeline``: a ``Qwen2_5_VLForConditionalGeneration`` text
encoder (a two-layer language model with a one-block vision tower nobody calls), the
dual-stream MMDiT ``QwenImageTransformer2DModel``, the 16-channel causal-3D
``AutoencoderKLQwenImage`` that downsamples by 8 (with Qwen-Image's latents mean and
std), and ``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's own dynamic-shift
config. Weights are random from a fixed seed, so the whole serving path runs on a
CPU with no download; its images are noise.

The tokenizer is a byte-level BPE ``Qwen2Tokenizer`` built from a vocab and merges
dict: one symbol per byte, Qwen's special tokens (``<|im_start|>``, ``<|im_end|>``, the
vision markers), and merges for the words of the pipeline's prompt template, so the
template's system prefix is 34 tokens, as ``prompt_template_encode_start_idx``
expects of the real tokenizer. Like the other tiny models it is written once with
``save_pretrained`` into the cache and loaded with ``from_pretrained`` from then on.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from common.paths import default_cache_root
from deployments.model.families.loading import build_once

TINY_QWEN_IMAGE = "tiny-qwen-image"
_RECIPE_VERSION = 1
_SEED = 0

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# The words of QwenImagePipeline.prompt_template_encode, each merged into one token
# (a leading space is part of the word, as Qwen's pre-tokenizer splits it).
TEMPLATE_WORDS = (
    "system", "user", "assistant", "Describe", " the", " image", " by", " detailing",
    " color", " shape", " size", " texture", " quantity", " text", " spatial",
    " relationships", " of", " objects", " and", " background",
)  # fmt: skip
TEMPLATE_PREFIX_TOKENS = 34  # QwenImagePipeline.prompt_template_encode_start_idx

_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    # head_dim 16: the multimodal RoPE sections cover its 8 frequency pairs.
    "rope_scaling": {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
}
_VISION = {"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2}
_TRANSFORMER = {
    "patch_size": 2,
    "in_channels": 64,  # 16 latent channels, packed 2x2
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # the text encoder's hidden size
    "guidance_embeds": False,
    "axes_dims_rope": (8, 4, 4),
}
# Three spatial downsamples (8x, as the real VAE); latents_mean/std stay the real ones.
_VAE = {
    "base_dim": 4,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
# The decoder's last conv is scaled up so the noise images span the uint8 range (about
# 65 levels of std instead of 15): a 1/255 faithfulness tolerance then means something.
_DECODER_GAIN = 4.0
# Qwen/Qwen-Image's scheduler config.
_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


def recipe_fingerprint() -> str:
    """A short hash of everything that defines the tiny model's weights and tokenizer."""
    blob = json.dumps(
        [
            _RECIPE_VERSION, _SEED, SPECIAL_TOKENS, TEMPLATE_WORDS,
            _TEXT, _VISION, _TRANSFORMER, _VAE, _DECODER_GAIN, _SCHEDULER,
        ],
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def byte_level_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A Qwen2 BPE vocabulary (bytes, merged template words, specials) and its merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for symbol in byte_symbols.values():
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in TEMPLATE_WORDS:
        symbols = "".join(byte_symbols[b] for b in word.encode())
        for end in range(1, len(symbols)):  # left to right: "Ġt"+"h", "Ġth"+"e", ...
            pair = (symbols[:end], symbols[end])
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault(symbols[: end + 1], len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return vocab, merges


def build_tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    vocab, merges = byte_level_bpe()
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
    )


def build_tiny_qwen_image_components() -> dict[str, Any]:
    """Every Qwen-Image component from configs, with weights seeded by ``_SEED``."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    # Deep copies: transformers standardises nested config dicts (rope_scaling) in place,
    # which would change the recipe, and so the fingerprint, after the first build.
    text, vision, transformer_config, vae_config = copy.deepcopy(
        (_TEXT, _VISION, _TRANSFORMER, _VAE)
    )
    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)
    text_config = {
        **text,
        "vocab_size": vocab_size,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config={**vision, "out_hidden_size": _TEXT["hidden_size"]},
        vocab_size=vocab_size,
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    torch.manual_seed(_SEED)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    transformer = QwenImageTransformer2DModel(**transformer_config)
    vae = AutoencoderKLQwenImage(**vae_config)
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(_DECODER_GAIN)
    return {
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(**dict(_SCHEDULER)),
    }


def ensure_tiny_qwen_image(cache_root: Path | None = None) -> Path:
    """The tiny Qwen-Image folder in ``save_pretrained`` layout, built once."""
    from diffusers import QwenImagePipeline

    def build(folder: Path) -> None:
        QwenImagePipeline(**build_tiny_qwen_image_components()).save_pretrained(folder)

    root = cache_root or default_cache_root()
    return build_once(root, f"{TINY_QWEN_IMAGE}-{recipe_fingerprint()}", build)
