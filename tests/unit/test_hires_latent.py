"""The hires fix's ``Latent`` upscalers, as A1111 runs them: the second pass starts
from the first pass's own latents, interpolated on the latent grid
(``torch.nn.functional.interpolate`` with the mode and antialias flag), noised at the
strength's first timestep with the image's seed; the pixel upscalers resize the
decoded image instead, and give another image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.job import GenerationJob, HiresSpec, LatentStart
from deployments.model.families.base import Row
from deployments.model.families.flux.family import FluxFamily
from deployments.model.families.qwen_image.family import QwenImageFamily
from deployments.model.hires import FirstPass, starts
from deployments.model.request_mode.engine import DiffusersEngine
from deployments.model.scheduler.submission import Submission
from tests.unit.test_family_flux import flux_config
from tests.unit.test_family_qwen_image import qwen_config
from tests.unit.test_step_loop import SIZE, job, step_server

UP = SIZE * 2  # the second pass's generation size


class Spy:
    """A family that records what it admits and the latents it decodes."""

    def __init__(self, family: Any) -> None:
        self.family = family
        self.admitted: list[tuple[GenerationJob, list[Row]]] = []
        self.decoded: dict[tuple[str, int], torch.Tensor] = {}

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        rows = self.family.admit(job, owner)
        self.admitted.append((job, rows))
        for row in rows:  # the start, before any step changes it
            row.start = row.latents.clone()  # type: ignore[attr-defined]
        return rows

    def decode(self, rows: Any) -> Any:
        for row in rows:
            self.decoded[(row.owner.job.mode, row.index)] = row.latents.clone()
        return self.family.decode(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.family, name)


async def hires_run(engine: DiffusersEngine, spec: HiresSpec) -> tuple[np.ndarray, Spy]:
    spies: list[Spy] = []
    server = step_server(engine, wrap=lambda family: spies.append(Spy(family)) or spies[-1])
    j = job("h", 5, 6, steps=3, hires=spec)
    events = [e async for e in server._submit(Submission(j, stream=False))]
    assert [e.kind for e in events] == ["final"]
    return events[0].pixels, spies[0]


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    from tests.support.engines import tiny_config

    return DiffusersEngine(tiny_config())


@pytest.mark.parametrize(
    "mode,antialias", [("bilinear", False), ("bicubic", True), ("nearest-exact", False)]
)
async def test_sdxl_second_pass_starts_from_interpolated_first_pass_latents(
    engine: DiffusersEngine, mode: str, antialias: bool
) -> None:
    spec = HiresSpec(UP, UP, "latent", 0.5, 4, latent_mode=mode, antialias=antialias)  # type: ignore[arg-type]
    pixels, spy = await hires_run(engine, spec)
    assert pixels.shape == (2, UP, UP, 3) and pixels.std() > 0
    first, *seconds = spy.admitted
    assert first[0].mode == "txt2img" and len(seconds) == 2
    for index, (second, rows) in enumerate(seconds):
        [row] = rows
        seed = second.seeds[0]
        kept = spy.decoded[("txt2img", index)]  # the first pass's final latents of this image
        assert second.mode == "img2img" and second.init_image is None
        assert second.init_latents is not None and torch.equal(second.init_latents.latents, kept)
        grid = (UP // 8, UP // 8)
        upscaled = F.interpolate(kept.float(), size=grid, mode=mode, antialias=antialias)
        noise = torch.randn(upscaled.shape, generator=torch.Generator("cpu").manual_seed(seed))
        sched = row.scheduler  # type: ignore[attr-defined]
        # strength 0.5 of 4 steps: the last 2, starting at the third sigma.
        assert row.total == 2
        sigma = sched.sigmas[sched.begin_index]
        assert sigma == sched.sigmas[2]
        expected = upscaled + noise * sigma  # Euler's add_noise at that sigma
        torch.testing.assert_close(row.start, expected, rtol=1e-5, atol=1e-5)  # type: ignore[attr-defined]


async def test_the_latent_path_differs_from_the_pixel_path(engine: DiffusersEngine) -> None:
    latent, spy_latent = await hires_run(engine, HiresSpec(UP, UP, "latent", 0.5, 4))
    pixel, spy_pixel = await hires_run(engine, HiresSpec(UP, UP, "lanczos", 0.5, 4))
    assert latent.shape == pixel.shape == (2, UP, UP, 3)
    assert np.abs(latent.astype(int) - pixel.astype(int)).mean() > 1
    [pixel_second, _] = [job for job, _ in spy_pixel.admitted[1:]]
    assert pixel_second.init_latents is None and pixel_second.init_image.shape == (UP, UP, 3)
    # The same seeds and first pass: only the upscale differs.
    assert torch.equal(spy_latent.decoded[("txt2img", 0)], spy_pixel.decoded[("txt2img", 0)])


def test_without_kept_latents_a_latent_mode_resizes_pixels() -> None:
    """Request mode (no families) keeps no latents: the matching PIL filter stands in."""
    pixels = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    spec = HiresSpec(UP, UP, "latent", 0.5, 4, latent_mode="nearest")
    first = FirstPass(job("f", 1, 2), stream=False)
    resized = starts(first, pixels, spec)
    assert [image.shape for image in resized] == [(UP, UP, 3)] * 2
    assert np.array_equal(resized[0][::2, ::2], pixels[0])  # nearest doubles each pixel
    first.final_latents = {0: torch.zeros(1, 4, 8, 8), 1: torch.ones(1, 4, 8, 8)}
    kept = starts(first, pixels, spec)
    assert [type(start) for start in kept] == [LatentStart, LatentStart]
    assert kept[1].latents is first.final_latents[1] and kept[1].mode == "nearest"


def test_init_latents_are_an_img2img_start_only() -> None:
    start = LatentStart(torch.zeros(1, 4, 8, 8), "bilinear", False)
    ok = job("a", 1, mode="img2img", strength=0.5, init_latents=start)
    assert ok.init_image is None
    with pytest.raises(ValueError):
        job("b", 1, init_latents=start)  # txt2img
    with pytest.raises(ValueError):
        job("c", 1, mode="img2img", strength=0.5, init_latents=start,
            init_image=np.zeros((SIZE, SIZE, 3), np.uint8))  # fmt: skip


@pytest.mark.parametrize("family_class", [FluxFamily, QwenImageFamily])
def test_packed_flow_families_unpack_interpolate_and_noise_at_sigma(family_class: Any) -> None:
    """FLUX.1 and Qwen-Image: the kept latents are unpacked ``(1, C, h, w)``; the start is
    ``sigma * noise + (1 - sigma) * interpolate(latents)``, packed again."""
    config = flux_config() if family_class is FluxFamily else qwen_config()
    family = family_class(config)
    first = FirstPass(GenerationJob("f", "a fox", None, (3,), SIZE, SIZE, 2, 1.0), stream=False)
    [row] = family.admit(first.job, first)
    family.decode([row])
    kept = first.final_latents[0]
    assert kept.shape == (1, 16, SIZE // 8, SIZE // 8)
    unpacked = family.unpacked([row])
    torch.testing.assert_close(kept, unpacked[:, :, 0] if unpacked.ndim == 5 else unpacked)

    seed = 9
    start = LatentStart(kept, "bicubic", True)
    second = GenerationJob("s", "a fox", None, (seed,), UP, UP, 4, 1.0, mode="img2img",
                           strength=0.5, init_latents=start)  # fmt: skip
    [started] = family.admit(second, None)
    grid = (UP // 8, UP // 8)
    upscaled = F.interpolate(kept.float(), size=grid, mode="bicubic", antialias=True)
    noise = torch.randn((1, 16, *grid), generator=torch.Generator("cpu").manual_seed(seed))
    sched = started.scheduler
    sigma = sched.sigmas[sched.begin_index]
    assert started.total == 2 and sigma < 1
    expected = sigma * noise + (1 - sigma) * upscaled
    got = family.unpacked([started])
    got = got[:, :, 0] if got.ndim == 5 else got
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
