"""A request's LoRA adapters on the replica: checked, pinned and loaded before it runs.

Pinning keeps an adapter in the bank while any request that names it is queued,
running or paused by the step scheduler; loading happens on the bank's own thread so
the pipeline keeps running the rows that do not need it. A bad adapter is a 400 for
this request only; the replica and the other requests carry on.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from common.errors import invalid
from common.job import GenerationJob
from common.model_config import ModelConfig
from deployments.model.lora.bank import LoraBank


async def pin_adapters(
    bank: LoraBank | None, config: ModelConfig, job: GenerationJob, executor: Executor
) -> list[str]:
    """Pin the job's adapters and load any that are missing, off the pipeline thread.

    Returns the pinned names; the caller unpins them when the request ends.
    """
    if not job.loras:
        return []
    if bank is None:
        raise invalid(
            f"The model '{config.id}' does not take LoRA adapters.",
            param="loras",
            code="lora_disabled",
        )
    if len(job.loras) > config.loras.max_per_request:
        raise invalid(
            f"{len(job.loras)} LoRA adapters requested; at most "
            f"{config.loras.max_per_request} per request.",
            param="loras",
            code="too_many_loras",
        )
    names = [ref.name for ref in job.loras]
    bank.pin(names)
    try:
        if not all(bank.is_loaded(name) for name in names):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, bank.ensure, job.loras)
    except BaseException:
        bank.unpin(names)
        raise
    return names
