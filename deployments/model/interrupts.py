"""Finish a request early, with its images as they stand (A1111's interrupt and skip).

The ingress keeps a board of running A1111 jobs in a named Ray actor and names it in
``GenerationJob.control``. After each step of such a request, the replica's event
loop asks the board :func:`should_finish`; once it answers yes, the request's
``Submission.finish_now`` is set and the step loop treats its rows as done at their
next step: they are decoded as they are and the request gets its final images, a
normal answer. The pipeline thread never waits on the board.
"""

from __future__ import annotations

import logging
from typing import Any

from common.job import GenerationJob

logger = logging.getLogger("imagegen.model")

_boards: dict[str, Any] = {}


async def should_finish(job: GenerationJob) -> bool:
    """Whether the board named by ``job.control`` asks this request to finish now.
    Any failure to ask (no board, a board that died) is "no": the request runs on."""
    if job.control is None:
        return False
    try:
        board = _boards.get(job.control)
        if board is None:
            import ray

            board = _boards[job.control] = ray.get_actor(job.control)
        return bool(await board.should_finish.remote(job.request_id))
    except Exception:  # noqa: BLE001 - an interrupt is best effort
        _boards.pop(job.control, None)
        logger.warning("could not ask %s about %s", job.control, job.request_id, exc_info=True)
        return False
