"""A Qwen-Image request's text conditioning, encoded once and shared by its rows.

The prompt (and with true CFG the negative prompt) goes through the pipeline's own
``encode_prompt``; rows are prepared by the family (``family.py``) with the shared
packed-flow helpers, following ``QwenImage{,Img2Img,Inpaint}Pipeline.__call__`` for a
batch of one with each row's own scheduler and generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.job import GenerationJob

if TYPE_CHECKING:
    import torch


@dataclass(eq=False)
class QwenPrompt:
    """One request's text conditioning, encoded once: ``(1, L, D)`` embeddings each.

    A mask is None when every token is valid (``encode_prompt`` drops all-ones masks).
    """

    embeds: torch.Tensor
    mask: torch.Tensor | None
    neg_embeds: torch.Tensor | None = None  # set when the request uses true CFG
    neg_mask: torch.Tensor | None = None


def encode_job_prompt(pipe: Any, job: GenerationJob, device: Any) -> QwenPrompt:
    """``encode_prompt`` for the prompt and, with true CFG (guidance above 1), the negative
    prompt: the request's own, or ``""`` as the issue's true CFG default."""
    embeds, mask = pipe.encode_prompt(job.prompt, device=device)
    prompt = QwenPrompt(embeds, mask)
    if job.guidance > 1:
        negative = job.negative_prompt if job.negative_prompt is not None else ""
        prompt.neg_embeds, prompt.neg_mask = pipe.encode_prompt(negative, device=device)
    return prompt
