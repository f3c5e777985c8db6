"""The per-row LoRA math for one UNet batch: which rows use which adapters, and how.

Rows are grouped into *slots*, one per distinct adapter set (``[(name, scale), ...]``);
under classifier-free guidance the uncond and cond copies of an image share a slot.
For each adapted ``Linear`` the slots' weights are stacked once per plan: ``down``
``(S, R, in)`` and ``up`` ``(S, out, R)`` with each adapter's ``scale * alpha / r``
folded into ``up`` and the slot's adapters concatenated along the rank (zero-padded to
the largest). A forward then gathers each row's slot and runs two batched matmuls,
so its cost does not grow with the number of distinct adapters in the batch (the
idea of punica's BGMV kernel). One slot for the whole batch takes two plain matmuls.
``Conv2d`` layers (rare in SDXL LoRAs) are applied adapter by adapter, per row set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.job import LoraRef

if TYPE_CHECKING:
    import torch

RowAdapters = tuple[LoraRef, ...]
# Per-row weights are gathered once per plan (not per forward) while they fit in this.
GATHER_BUDGET_BYTES = 256 << 20


@dataclass(frozen=True)
class LayerDelta:
    """One adapted layer: ``down`` (A) and ``up`` (B) weights and ``alpha / rank``."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float
    conv: bool

    def apply_conv(self, x: torch.Tensor, module: Any) -> torch.Tensor:
        """The delta of a ``Conv2d`` layer (linear layers go through the stacked plan)."""
        import torch.nn.functional as F

        hidden = F.conv2d(
            x, self.down, stride=module.stride, padding=module.padding, dilation=module.dilation
        )
        return F.conv2d(hidden, self.up)


@dataclass
class Plan:
    """Everything the layer hooks need for one UNet batch of ``batch`` rows."""

    batch: int
    # Rows that use any adapter (None: all of them), and each such row's slot.
    rows: Any
    slots: Any
    single_slot: bool
    # module -> (down, up) per slot, or, when ``gathered``, per adapting row and already
    # transposed for ``bmm``: ``(k, in, R)`` and ``(k, R, out)``.
    linear: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    gathered: bool = False
    conv: dict[str, list[tuple[LayerDelta, Any, Any]]] = field(default_factory=dict)

    def modules(self) -> set[str]:
        return set(self.linear) | set(self.conv)


def build_plan(
    per_row: Sequence[RowAdapters], layers_of: Mapping[str, Mapping[str, LayerDelta]], param: Any
) -> Plan | None:
    """The plan for ``per_row`` (one adapter tuple per UNet row); None if no row adapts.

    ``layers_of`` maps every adapter name used to its per-module deltas; ``param`` is a
    UNet parameter (device and dtype of the stacks).
    """
    import torch

    slot_keys: dict[tuple[tuple[str, float], ...], int] = {}
    rows: list[int] = []
    slots: list[int] = []
    for row, refs in enumerate(per_row):
        key = tuple((ref.name, ref.scale) for ref in refs if ref.scale != 0)
        if key:  # scale 0 is exactly the base model
            rows.append(row)
            slots.append(slot_keys.setdefault(key, len(slot_keys)))
    if not rows:
        return None
    device, dtype = param.device, param.dtype
    every_row = len(rows) == len(per_row)
    plan = Plan(
        batch=len(per_row),
        rows=None if every_row else torch.tensor(rows, device=device),
        slots=torch.tensor(slots, device=device),
        single_slot=len(slot_keys) == 1,
    )
    keys = list(slot_keys)
    modules = {m for key in keys for name, _ in key for m in layers_of[name]}
    for module in sorted(modules):
        parts = [
            [(layers_of[n][module], s) for n, s in key if module in layers_of[n]] for key in keys
        ]
        if next(d for slot in parts for d, _ in slot).conv:
            plan.conv[module] = _conv_entries(module, keys, layers_of, rows, slots, device, dtype)
            continue
        rank = max((sum(d.down.shape[0] for d, _ in slot) for slot in parts), default=0)
        sample = next(d for slot in parts for d, _ in slot)
        down = torch.zeros(len(keys), rank, sample.down.shape[1], device=device, dtype=dtype)
        up = torch.zeros(len(keys), sample.up.shape[0], rank, device=device, dtype=dtype)
        for index, slot in enumerate(parts):
            offset = 0
            for delta, scale in slot:
                r = delta.down.shape[0]
                down[index, offset : offset + r] = delta.down
                up[index, :, offset : offset + r] = delta.up * (scale * delta.scale)
                offset += r
        plan.linear[module] = (down, up)
    _maybe_gather(plan, len(rows))
    return plan


def _maybe_gather(plan: Plan, rows: int) -> None:
    """Gather each adapting row's slot weights now, so a forward is two ``bmm``s."""
    if plan.single_slot:
        return
    need = sum(rows * (d[0].numel() + d[1].numel()) // len(d[0]) for d in plan.linear.values())
    element = next(iter(plan.linear.values()))[0].element_size() if plan.linear else 4
    if need * element > GATHER_BUDGET_BYTES:
        return
    for module, (down, up) in plan.linear.items():
        a = down.index_select(0, plan.slots).transpose(1, 2).contiguous()
        b = up.index_select(0, plan.slots).transpose(1, 2).contiguous()
        plan.linear[module] = (a, b)
    plan.gathered = True


def _conv_entries(
    module: str,
    keys: list[tuple[tuple[str, float], ...]],
    layers_of: Mapping[str, Mapping[str, LayerDelta]],
    rows: list[int],
    slots: list[int],
    device: Any,
    dtype: Any,
) -> list[tuple[LayerDelta, Any, Any]]:
    """Per adapter: its delta, the rows using it and their scales (conv layers)."""
    import torch

    by_name: dict[str, tuple[list[int], list[float]]] = {}
    for row, slot in zip(rows, slots, strict=True):
        for name, scale in keys[slot]:
            if module in layers_of[name]:
                rows_, scales = by_name.setdefault(name, ([], []))
                rows_.append(row)
                scales.append(scale)
    entries = []
    for name, (rows_, scales) in by_name.items():
        delta = layers_of[name][module]
        index = torch.tensor(rows_, device=device)
        factors = torch.tensor(scales, device=device, dtype=dtype) * delta.scale
        entries.append((delta, index, factors))
    return entries


def apply(plan: Plan, module_name: str, module: Any, x: Any, output: Any) -> Any:
    """``output`` plus this layer's delta for every adapting row (None: unchanged)."""
    import torch
    import torch.nn.functional as F

    if x.shape[0] != plan.batch:
        raise RuntimeError(f"LoRA plan has {plan.batch} rows but {module_name} got {x.shape[0]}")
    stack = plan.linear.get(module_name)
    if stack is not None:
        down, up = stack
        xs = x if plan.rows is None else x.index_select(0, plan.rows)
        if plan.single_slot:
            delta = F.linear(F.linear(xs, down[0]), up[0])
        elif plan.gathered:
            x3 = xs.reshape(xs.shape[0], -1, xs.shape[-1])
            delta = torch.bmm(torch.bmm(x3, down), up).reshape(*xs.shape[:-1], -1)
        else:
            a = down.index_select(0, plan.slots).transpose(1, 2)
            b = up.index_select(0, plan.slots).transpose(1, 2)
            x3 = xs.reshape(xs.shape[0], -1, xs.shape[-1])
            delta = torch.bmm(torch.bmm(x3, a), b).reshape(*xs.shape[:-1], -1)
        return output + delta if plan.rows is None else output.index_add(0, plan.rows, delta)
    entries = plan.conv.get(module_name)
    if not entries:
        return None
    out = output
    for delta, index, factors in entries:
        d = delta.apply_conv(x.index_select(0, index), module)
        out = out.index_add(0, index, d * factors.reshape((-1,) + (1,) * (d.ndim - 1)))
    return out
