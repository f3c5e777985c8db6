"""Grouping by shape, and putting every image back exactly once, in order."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.batching import count_images, group_jobs, scatter
from serve_app.job import GenerationJob, assign_seeds


def job(
    rid: str, seeds: tuple[int, ...], size: int = 64, steps: int = 4, **kw: object
) -> GenerationJob:
    return GenerationJob(
        request_id=rid,
        prompt=str(kw.get("prompt", rid)),
        negative_prompt=kw.get("negative_prompt"),  # type: ignore[arg-type]
        seeds=seeds,
        gen_width=size,
        gen_height=size,
        steps=steps,
        guidance=float(kw.get("guidance", 5.0)),  # type: ignore[arg-type]
    )


def fake_outputs(groups: list) -> list[np.ndarray]:
    """Each image is filled with its seed, so scatter's bookkeeping is checkable."""
    return [
        np.stack([np.full((g.height, g.width, 3), s, np.uint8) for s in g.seeds]) for g in groups
    ]


def test_count_images_counts_images_not_requests() -> None:
    assert count_images([job("a", (1, 2, 3)), job("b", (4,))]) == 4


def test_same_shape_shares_one_group_in_order() -> None:
    groups = group_jobs([job("a", (1, 2)), job("b", (3,))])
    assert len(groups) == 1
    assert groups[0].seeds == [1, 2, 3]
    assert groups[0].prompts == ["a", "a", "b"]
    assert groups[0].owners == [(0, 0), (0, 1), (1, 0)]
    assert groups[0].negative_prompts is None


@pytest.mark.parametrize(
    "other",
    [
        {"size": 128},
        {"steps": 8},
        {"guidance": 0.0},
        {"negative_prompt": "blurry"},
    ],
)
def test_different_shapes_are_split(other: dict) -> None:
    groups = group_jobs([job("a", (1,)), job("b", (2,), **other)])
    assert len(groups) == 2


def test_negative_prompts_stay_aligned() -> None:
    groups = group_jobs([job("a", (1,), negative_prompt="x"), job("b", (2, 3), negative_prompt="")])
    assert groups[0].negative_prompts == ["x", "", ""]


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]])
def test_every_image_returns_once_in_order(order: list[int]) -> None:
    base = [
        job("a", (10, 11, 12)),
        job("b", (20,), size=128),
        job("c", (30, 31), steps=8),
        job("d", (40, 41)),
    ]
    jobs = [base[i] for i in order]
    groups = group_jobs(jobs)
    stacks = scatter(jobs, groups, fake_outputs(groups))
    for j, stack in zip(jobs, stacks, strict=True):
        assert stack.shape == (j.n, j.gen_height, j.gen_width, 3)
        assert [int(img[0, 0, 0]) for img in stack] == list(j.seeds)


def test_scatter_refuses_short_results() -> None:
    jobs = [job("a", (1, 2))]
    groups = group_jobs(jobs)
    with pytest.raises(RuntimeError, match="2 seeds"):
        scatter(jobs, groups, [np.zeros((1, 64, 64, 3), np.uint8)])


def test_given_seed_counts_up() -> None:
    assert assign_seeds(3, 42) == (42, 43, 44)
    assert assign_seeds(3, 42, increment=100) == (42, 142, 242)


def test_random_seeds_are_distinct_and_32_bit() -> None:
    seeds = assign_seeds(10, None)
    assert len(set(seeds)) == 10
    assert all(0 <= s < 2**32 for s in seeds)
