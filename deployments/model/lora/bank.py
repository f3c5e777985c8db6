"""LoRA deltas applied per batch row inside the denoiser, and the bank of loaded adapters.

PEFT's ``set_adapters`` gives one adapter set per forward. Here each adapted layer
(a ``Linear`` or ``Conv2d`` of the UNet or transformer) gets a forward hook that adds, for every
adapter a row uses, ``scale_row * alpha/rank * B(A(x_row))`` to the base output for
only those rows, the way punica and S-LoRA batch LLM adapters. The base weights are
never touched (no fusing), so rows without adapters see the plain model, and rows
with different adapters share one denoiser call. The bank knows no architecture:
the family parses files (``Family.parse_lora``) and names the module to hook.

Threads: loading (file read, parsing, conversion, copy to the device) runs on a
loader thread; hooks are installed, and plans built, only on the pipeline thread,
right before a denoiser forward, so a running forward never sees its modules change.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from common.errors import APIError, invalid
from common.job import LoraRef
from common.model_config import ModelConfig
from deployments.model.lora.demo import ensure_demo_loras
from deployments.model.lora.parse import LoadedAdapter
from deployments.model.lora.plan import Plan, RowAdapters, apply, build_plan
from storage.lora_files import LoraLookupError, LoraRegistry, lora_dirs, registry_for

logger = logging.getLogger("imagegen.lora")
PLAN_CACHE = 16


class LoraBank:
    """Loaded adapters (an LRU of ``max_loaded``) and the hooks that apply them per row."""

    def __init__(
        self,
        denoiser: Any,
        registry: LoraRegistry,
        max_loaded: int,
        parse: Callable[[Path, str], LoadedAdapter],
    ) -> None:
        self.denoiser = denoiser  # the hooked module: a UNet or a transformer
        self.parse = parse
        self.registry = registry
        self.max_loaded = max_loaded
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self._pins: dict[str, int] = {}
        self._hooked: set[str] = set()
        self._plan: Plan | None = None
        # Plans by their per-row adapters: today's path rebuilds one per UNet forward
        # (each step), and the stacks only change when rows leave. Cleared on eviction.
        self._plans: OrderedDict[tuple[RowAdapters, ...], Plan | None] = OrderedDict()
        self.on_load: Callable[[LoadedAdapter], None] | None = None

    # -- loading (loader thread) ---------------------------------------------

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def loaded(self) -> dict[str, LoadedAdapter]:
        with self._lock:
            return dict(self._loaded)

    def ensure(self, refs: Sequence[LoraRef]) -> None:
        """Load every adapter ``refs`` names that is not loaded yet; errors name the index."""
        for index, ref in enumerate(refs):
            if self.is_loaded(ref.name):
                with self._lock:
                    self._loaded.move_to_end(ref.name)
                continue
            try:
                path = self.registry.resolve(ref.name)
                adapter = self.parse(path, ref.name)
            except LoraLookupError as exc:
                raise invalid(str(exc), param=f"loras[{index}]", code=exc.code) from None
            except APIError as exc:
                raise invalid(exc.message, param=f"loras[{index}]", code=exc.code) from None
            with self._lock:
                self._loaded[ref.name] = adapter
                self._evict()
            logger.info(
                "loaded LoRA %s (rank %d, %d layers) in %.1f ms",
                ref.name,
                adapter.rank,
                len(adapter.layers),
                adapter.load_ms,
            )
            if self.on_load is not None:
                self.on_load(adapter)

    def _evict(self) -> None:
        """Drop least recently used adapters no request holds (the cap is soft)."""
        for name in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                return
            if not self._pins.get(name):
                del self._loaded[name]
                self._plans = OrderedDict()  # rebinding is atomic; the pipeline reads it

    def pin(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                self._pins[name] = self._pins.get(name, 0) + 1

    def unpin(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                left = self._pins.get(name, 0) - 1
                if left > 0:
                    self._pins[name] = left
                else:
                    self._pins.pop(name, None)
            self._evict()

    # -- applying (pipeline thread) -------------------------------------------

    @contextmanager
    def rows(self, per_row: Sequence[RowAdapters]) -> Iterator[None]:
        """Every denoiser forward inside runs with ``per_row[i]`` applied to batch row ``i``."""
        plan = self._build_plan(per_row)
        previous, self._plan = self._plan, plan
        try:
            yield
        finally:
            self._plan = previous

    def follow(
        self, per_image: Sequence[RowAdapters], rows: list[int]
    ) -> AbstractContextManager[None]:
        """Today's one-call-per-group path: before each UNet forward, the plan for the
        rows still in the batch (``rows`` shrinks when cancelled rows leave), repeated
        for classifier-free guidance's ``[uncond; cond]`` halves."""
        if not any(refs for refs in per_image):
            return nullcontext()
        return self._follow(per_image, rows)

    @contextmanager
    def _follow(self, per_image: Sequence[RowAdapters], rows: list[int]) -> Iterator[None]:
        def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            sample = args[0] if args else kwargs["sample"]
            current = [per_image[row] for row in rows]
            copies = max(1, sample.shape[0] // max(1, len(current)))
            self._plan = self._build_plan(current * copies)

        def post(module: Any, args: Any, output: Any) -> None:
            self._plan = None

        handles = [
            self.denoiser.register_forward_pre_hook(pre, with_kwargs=True),
            self.denoiser.register_forward_hook(post),
        ]
        try:
            yield
        finally:
            self._plan = None
            for handle in handles:
                handle.remove()

    def _build_plan(self, per_row: Sequence[RowAdapters]) -> Plan | None:
        key = tuple(per_row)
        plans = self._plans
        if key in plans:
            plans.move_to_end(key)
            return plans[key]
        names = {ref.name for refs in per_row for ref in refs if ref.scale != 0}
        with self._lock:
            adapters = {name: self._loaded.get(name) for name in names}
        absent = sorted(name for name, adapter in adapters.items() if adapter is None)
        if absent:
            raise RuntimeError(f"LoRA adapters {absent} were not loaded before the call")
        layers_of = {name: adapter.layers for name, adapter in adapters.items() if adapter}
        plan = build_plan(per_row, layers_of, next(self.denoiser.parameters()))
        if plan is not None:
            for module_name in plan.modules():
                self._install_hook(module_name)
        plans[key] = plan
        while len(plans) > PLAN_CACHE:
            plans.popitem(last=False)
        return plan

    def _install_hook(self, module_name: str) -> None:
        if module_name in self._hooked:
            return

        def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            plan = self._plan
            if plan is None:
                return None
            return apply(plan, module_name, module, args[0], output)

        self.denoiser.get_submodule(module_name).register_forward_hook(hook)
        self._hooked.add(module_name)


def bank_for(
    config: ModelConfig,
    denoiser: Any,
    parse: Callable[[Path, str], LoadedAdapter],
    demo_names: Sequence[str] = (),
) -> LoraBank | None:
    """The model's bank (None when ``loras.enabled`` is off); for a built-in tiny model,
    its family's demo adapters (``demo_names``) are written into the first LoRA folder."""
    if not config.loras.enabled:
        return None
    registry = registry_for(config)
    if config.loras.demo_adapters and demo_names and config.source.startswith("builtin:"):
        ensure_demo_loras(lora_dirs(config.loras, config)[0], denoiser, demo_names)
        registry.refresh()
    return LoraBank(denoiser, registry, config.loras.max_loaded, parse)
