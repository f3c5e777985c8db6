"""LoRA deltas applied per batch row inside the UNet, and the bank of loaded adapters.

PEFT's ``set_adapters`` gives one adapter set per forward. Here each adapted layer
(a ``Linear`` or ``Conv2d`` of the UNet) gets a forward hook that adds, for every
adapter a row uses, ``scale_row * alpha/rank * B(A(x_row))`` to the base output for
only those rows, the way punica and S-LoRA batch LLM adapters. The base weights are
never touched (no fusing), so rows without adapters see the plain model, and rows
with different adapters share one UNet call.

Threads: loading (file read, parsing, conversion, copy to the device) runs on a
loader thread; hooks are installed, and plans built, only on the pipeline thread,
right before a UNet forward, so a running forward never sees its modules change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import APIError, invalid
from common.job import LoraRef
from common.model_config import ModelConfig
from deployments.model.lora_demo import ensure_demo_loras
from deployments.model.lora_plan import LayerDelta, Plan, RowAdapters, apply, build_plan
from deployments.model.lora_registry import LoraLookupError, LoraRegistry, lora_dirs, registry_for
from deployments.model.tiny_sdxl import BUILTIN_PREFIX, TINY_SDXL

if TYPE_CHECKING:
    pass

logger = logging.getLogger("imagegen.lora")
PLAN_CACHE = 16


@dataclass
class LoadedAdapter:
    name: str
    layers: dict[str, LayerDelta]
    rank: int
    nbytes: int
    load_ms: float
    ignored_text_encoder_tensors: int = 0


def parse_adapter(path: Path, name: str, unet: Any) -> LoadedAdapter:
    """Read an SDXL LoRA file (diffusers/PEFT or kohya keys) into per-layer deltas.

    diffusers' ``lora_state_dict`` does the kohya conversion, and
    ``convert_unet_state_dict_to_peft`` maps the older key styles to ``lora_A``/
    ``lora_B``; every layer is then checked against this UNet, so an adapter for
    another architecture (SD 1.5 on SDXL) is refused at load with the reason.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    started = time.perf_counter()
    try:
        raw = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise invalid(
            f"LoRA adapter '{name}' is not a readable safetensors file ({exc}).",
            code="invalid_lora",
        ) from None
    try:
        state, alphas = StableDiffusionXLPipeline.lora_state_dict(raw, unet_config=unet.config)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise invalid(
            f"LoRA adapter '{name}' is not a LoRA diffusers can read for SDXL ({exc}).",
            code="invalid_lora",
        ) from None
    alphas = alphas or {}
    text_keys = [k for k in state if k.startswith(("text_encoder.", "text_encoder_2."))]
    if any(k.startswith("unet.") for k in state):
        unet_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    else:
        unet_state = {k: v for k, v in state.items() if k not in text_keys}
    if any(part in k for k in unet_state for part in ("lora_magnitude_vector", ".lokr_")):
        raise invalid(
            f"LoRA adapter '{name}' is a DoRA or LoKr adapter; only plain LoRA is served.",
            code="invalid_lora",
        )
    if unet_state and not any("lora_A" in k for k in unet_state):
        unet_state = convert_unet_state_dict_to_peft(unet_state)
    meta_scale = _metadata_scale(metadata)
    modules = dict(unet.named_modules())
    param = next(unet.parameters())
    layers: dict[str, LayerDelta] = {}
    missing: list[str] = []
    for key, down in unet_state.items():
        if not key.endswith("lora_A.weight"):
            continue
        path_ = key.removesuffix(".lora_A.weight")
        up = unet_state.get(f"{path_}.lora_B.weight")
        module = modules.get(path_)
        if up is None or not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            missing.append(path_)
            continue
        conv = isinstance(module, torch.nn.Conv2d)
        in_dim = module.in_channels if conv else module.in_features
        out_dim = module.out_channels if conv else module.out_features
        if down.shape[1] != in_dim or up.shape[0] != out_dim or up.shape[1] != down.shape[0]:
            missing.append(path_)
            continue
        rank = down.shape[0]
        alpha = alphas.get(f"unet.{path_}.alpha", meta_scale * rank if meta_scale else rank)
        if conv and down.ndim == 2:
            down, up = down[:, :, None, None], up[:, :, None, None]
        layers[path_] = LayerDelta(
            down=down.to(param.device, param.dtype).contiguous(),
            up=up.to(param.device, param.dtype).contiguous(),
            scale=float(alpha) / rank,
            conv=conv,
        )
    if missing or not layers:
        example = f" (e.g. '{missing[0]}')" if missing else ""
        raise invalid(
            f"LoRA adapter '{name}' does not fit this model's UNet: {len(missing)} of "
            f"{len(missing) + len(layers)} layers have no matching layer{example}. Is it "
            "for another architecture (an SD 1.5 LoRA on SDXL, say)?",
            code="lora_wrong_architecture",
        )
    ranks = {delta.down.shape[0] for delta in layers.values()}
    nbytes = sum(d.down.nbytes + d.up.nbytes for d in layers.values())
    load_ms = (time.perf_counter() - started) * 1000
    return LoadedAdapter(name, layers, max(ranks), nbytes, load_ms, len(text_keys))


def _metadata_scale(metadata: dict[str, str]) -> float | None:
    """``alpha / r`` from diffusers' ``lora_adapter_metadata`` header entry, if present."""
    blob = metadata.get("lora_adapter_metadata")
    if not blob:
        return None
    try:
        info = json.loads(blob)
        alpha, rank = info.get("unet.lora_alpha"), info.get("unet.r")
        return float(alpha) / float(rank) if alpha and rank else None
    except (ValueError, TypeError, AttributeError):
        return None


class LoraBank:
    """Loaded adapters (an LRU of ``max_loaded``) and the hooks that apply them per row."""

    def __init__(self, unet: Any, registry: LoraRegistry, max_loaded: int) -> None:
        self.unet = unet
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
                adapter = parse_adapter(path, ref.name, self.unet)
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
        """Every UNet forward inside runs with ``per_row[i]`` applied to batch row ``i``."""
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
            self.unet.register_forward_pre_hook(pre, with_kwargs=True),
            self.unet.register_forward_hook(post),
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
        plan = build_plan(per_row, layers_of, next(self.unet.parameters()))
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

        self.unet.get_submodule(module_name).register_forward_hook(hook)
        self._hooked.add(module_name)


def bank_for(config: ModelConfig, unet: Any) -> LoraBank | None:
    """The model's bank (None when ``loras.enabled`` is off); for the built-in tiny
    model, the demo adapters are written into the first LoRA folder first."""
    if not config.loras.enabled:
        return None
    registry = registry_for(config)
    if config.loras.demo_adapters and config.source == BUILTIN_PREFIX + TINY_SDXL:
        ensure_demo_loras(lora_dirs(config.loras)[0], unet)
        registry.refresh()
    return LoraBank(unet, registry, config.loras.max_loaded)
