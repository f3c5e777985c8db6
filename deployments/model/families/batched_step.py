"""One vectorised scheduler step for the rows of a tick whose sampler is plain Euler.

Every row keeps its own scheduler (its own sigmas and step index), but for the two
first-order samplers most checkpoints ship with, the step is one line of arithmetic
on the row's sigmas:

- ``EulerDiscreteScheduler`` (SDXL's default; ``s_churn`` 0, which is how rows step):
  ``x0 = x - sigma * eps`` (epsilon) or ``eps * -sigma / sqrt(sigma^2 + 1) + x /
  (sigma^2 + 1)`` (v-prediction), then ``x + (x - x0) / sigma * (sigma_next - sigma)``;
- ``FlowMatchEulerDiscreteScheduler`` without stochastic sampling (FLUX.1, Qwen-Image):
  ``x + (sigma_next - sigma) * v``.

So instead of ``len(rows)`` calls of ``scheduler.step`` (a dozen small tensor ops and
Python checks each), the rows' latents and predictions are concatenated once and
stepped with per-row sigmas broadcast over a ``(B, 1, ...)`` tensor: the same float32
operations per element as diffusers' ``step``, in the same order, so the result is the
per-row result (with float32 predictions, bit for bit; with half-precision ones diffusers
forms ``sigma * eps`` in the prediction's dtype and this in float32, a rounding apart).
Each row's scheduler then advances its own ``step_index``. Rows with
any other scheduler, or with an inpaint blend to apply after the step, take the
family's per-row ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deployments.model.families.base import Row

EULER = "EulerDiscreteScheduler"
FLOW_EULER = "FlowMatchEulerDiscreteScheduler"

StepOne = Callable[[Row, Any], None]


def batched_kind(row: Any) -> str | None:
    """Which vectorised step ``row`` can take (None: its scheduler's own ``step``).

    The exact class is checked, not subclasses: a subclass may step differently.
    """
    if getattr(row, "image_latents", None) is not None or getattr(row, "mask", None) is not None:
        return None  # inpaint: the blend after the step stays per row
    scheduler = getattr(row, "scheduler", None)
    kind = type(scheduler).__name__
    config = getattr(scheduler, "config", None)
    if kind == EULER and config is not None:
        prediction = config.get("prediction_type", "epsilon")
        return f"euler-{prediction}" if prediction in ("epsilon", "v_prediction") else None
    if kind == FLOW_EULER and config is not None and not config.get("stochastic_sampling"):
        return "flow"
    return None


def step_rows(rows: Sequence[Row], predictions: Sequence[Any], step_one: StepOne) -> list[Any]:
    """Step every row once; the vectorisable ones together, the rest with ``step_one``.

    Returns each row's exception or None, in row order. A vectorised group that
    fails is retried row by row, so a failure stays with its own row.
    """
    errors: list[Exception | None] = [None] * len(rows)
    groups: dict[tuple[Any, ...], list[int]] = {}
    alone: list[int] = []
    for i, row in enumerate(rows):
        kind = batched_kind(row)
        if kind is None:
            alone.append(i)
            continue
        latents, prediction = row.latents, predictions[i]  # type: ignore[attr-defined]
        key = (kind, tuple(latents.shape), latents.dtype, prediction.dtype, str(latents.device))
        groups.setdefault(key, []).append(i)
    for (kind, *_), members in groups.items():
        if len(members) == 1:
            alone.extend(members)
            continue
        try:
            _step_together(kind, [rows[i] for i in members], [predictions[i] for i in members])
        except Exception:  # noqa: BLE001 - retried per row below; nothing was changed
            alone.extend(members)
    for i in sorted(alone):
        try:
            step_one(rows[i], predictions[i])
        except Exception as exc:  # noqa: BLE001 - fails only this row's request
            errors[i] = exc
    return errors


def _step_together(kind: str, rows: Sequence[Any], predictions: Sequence[Any]) -> None:
    """One Euler step over ``rows`` (all of ``kind``, one shape and dtype).

    Nothing on a row changes until the arithmetic has succeeded.
    """
    import torch

    with torch.inference_mode():
        sigmas, nexts = [], []
        for row in rows:
            scheduler = row.scheduler
            if scheduler.step_index is None:
                scheduler._init_step_index(row.timesteps[row.position])
            index = scheduler.step_index
            sigmas.append(scheduler.sigmas[index])
            nexts.append(scheduler.sigmas[index + 1])
        output = torch.cat(list(predictions))
        sample = torch.cat([row.latents for row in rows]).to(torch.float32)
        shape = (len(rows),) + (1,) * (sample.dim() - 1)
        # Euler keeps its sigmas on the CPU; the latents may be on a GPU.
        sigma = torch.stack(sigmas).reshape(shape).to(sample.device)
        sigma_next = torch.stack(nexts).reshape(shape).to(sample.device)
        if kind == "flow":
            stepped = sample + (sigma_next - sigma) * output
        else:
            if kind == "euler-epsilon":
                original = sample - sigma * output
            else:  # v-prediction
                original = output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
            derivative = (sample - original) / sigma
            stepped = sample + derivative * (sigma_next - sigma)
        stepped = stepped.to(output.dtype)
    for i, row in enumerate(rows):
        row.latents = stepped[i : i + 1]
        row.scheduler._step_index += 1
        row.position += 1
