"""DeepCache: reuse the UNet's deep features between full denoising steps.

DeepCache (Ma, Fang and Wang, CVPR 2024, arXiv:2312.00858) observes that the deep,
low-resolution features of a diffusion UNet change slowly from one step to the
next, while the shallow, full-resolution ones carry the fine detail. So every
``interval``-th step runs the whole UNet and caches what its deep part produced;
the steps in between run only the shallow branch (``conv_in``, the first down
block, the last up block, ``conv_out``) and splice in the cached deep output.

Concretely, on a cached step every module of the deep part (``down_blocks[1:]``,
``mid_block``, ``up_blocks[:-1]``) returns what it returned on the last full step.
The UNet's own ``forward`` runs unchanged around them, so the skip connection
from the first down block into the last up block is always fresh. For SDXL that
skips every transformer block; for the tiny built-in model it skips all attention.

Why our own hook rather than the ``DeepCache`` package (0.1.1): its helper finds
the current step with ``scheduler.timesteps.index(t)``, which is ambiguous for
second-order schedulers (Heun, DPM2) whose timesteps repeat, and we serve those
samplers; it has not been released since 2023 and declares no diffusers range.
Here the step comes from the pipeline's own loop index (``callback_on_step_end``),
and the hook is a context manager that always restores the original ``forward``
methods, even when the pipeline call raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def deep_modules(unet: nn.Module) -> list[nn.Module]:
    """The modules a cached step skips: everything below the outermost resolution level."""
    down = list(unet.down_blocks)
    up = list(unet.up_blocks)
    if len(down) < 2 or len(up) < 2:
        raise ValueError("DeepCache needs a UNet with at least two resolution levels")
    modules = [*down[1:], *up[:-1]]
    if getattr(unet, "mid_block", None) is not None:
        modules.append(unet.mid_block)
    return modules


class DeepCache:
    """Context manager: while active, the UNet recomputes its deep part every ``interval`` steps.

    Call :meth:`step_done` after each denoising step (the engine does it from the
    pipeline's ``callback_on_step_end``); the step index decides full vs. cached.
    """

    def __init__(self, unet: nn.Module, interval: int) -> None:
        if interval < 1:
            raise ValueError(f"cache interval must be >= 1, got {interval}")
        self.unet = unet
        self.interval = interval
        self.step = 0
        self.full_calls = 0
        self.cached_calls = 0
        self._cache: dict[int, Any] = {}
        self._originals: list[tuple[nn.Module, Callable[..., Any]]] = []

    @property
    def full_step(self) -> bool:
        return self.step % self.interval == 0

    def invalidate(self) -> None:
        """Forget the cached features: the next step runs the whole UNet.

        Needed when rows leave the batch mid-call, since the cache holds the old batch.
        """
        self._cache.clear()

    def step_done(self, step_index: int) -> None:
        """The pipeline finished step ``step_index`` (0-based); the next one is ``+1``."""
        self.step = step_index + 1

    def _wrap(self, index: int, module: nn.Module) -> None:
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.full_step or index not in self._cache:
                output = original(*args, **kwargs)
                self._cache[index] = output
                if index == 0:
                    self.full_calls += 1
                return output
            if index == 0:
                self.cached_calls += 1
            return self._cache[index]

        self._originals.append((module, original))
        module.forward = forward  # type: ignore[method-assign]

    def __enter__(self) -> DeepCache:
        self.step = 0
        self._cache.clear()
        self._install()
        return self

    def _install(self) -> None:
        for index, module in enumerate(deep_modules(self.unet)):
            self._wrap(index, module)

    @contextmanager
    def hooked(self) -> Iterator[DeepCache]:
        """Install the hooks for one UNet call, keeping the cache and step counter.

        The step loop holds one ``DeepCache`` per cohort of rows across its ticks and
        hooks the shared UNet only around that cohort's own calls.
        """
        self._install()
        try:
            yield self
        finally:
            self._uninstall()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._uninstall()
        self._cache.clear()

    def _uninstall(self) -> None:
        for module, original in reversed(self._originals):
            # The wrapper lives in the instance dict; dropping it restores the class
            # method unless ``forward`` had been patched on the instance before us.
            if getattr(original, "__self__", None) is module:
                module.__dict__.pop("forward", None)
            else:
                module.forward = original  # type: ignore[method-assign]
        self._originals.clear()
