"""Grouping by shape, and putting every image back exactly once, in order."""

from __future__ import annotations

import pytest

from common.job import GenerationJob, assign_seeds, partial_steps
from deployments.model.request_mode.batching import count_images, group_jobs


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


def test_given_seed_counts_up() -> None:
    assert assign_seeds(3, 42) == (42, 43, 44)
    assert assign_seeds(3, 42, increment=100) == (42, 142, 242)


def test_random_seeds_are_distinct_and_32_bit() -> None:
    seeds = assign_seeds(10, None)
    assert len(set(seeds)) == 10
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize(
    "total,count,expected",
    [
        (20, 2, [7, 13]),
        (20, 3, [5, 10, 15]),
        (20, 1, [10]),
        (4, 3, [1, 2, 3]),
        (2, 3, [1]),
        (20, 0, []),
    ],
)
def test_partial_steps_are_evenly_spaced_before_the_end(
    total: int, count: int, expected: list[int]
) -> None:
    assert partial_steps(total, count) == expected
