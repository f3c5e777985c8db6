"""The rows being denoised, grouped by what may share a denoiser call.

A tick group is the family's ``tick_key`` (a latent shape). DeepCache rows reuse deep
features of the same rows between steps, so they tick only with the rows placed in
the same round with the same interval (a cohort, its own group with its own cache).
Groups take turns round robin in the order they appeared: after a group ticks it goes
to the back, so no latent shape starves.

Each group also remembers when it last ticked: the time between two ticks of one
group is what a row of it waits per step, the policy's per-step time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deployments.model.families.base import Row, TickCache

GroupKey = tuple[Any, ...]


@dataclass(eq=False)
class TickGroup:
    key: GroupKey
    rows: list[Row] = field(default_factory=list)
    cache: TickCache | None = None  # a DeepCache for a cohort
    last_tick: float | None = None


class TickGroups:
    """Owned by the pipeline thread; ``row_count`` may be read from any thread."""

    def __init__(self, new_cache: Callable[[int], TickCache]) -> None:
        self._new_cache = new_cache
        self._groups: dict[GroupKey, TickGroup] = {}
        self._ticking: TickGroup | None = None  # out of the rotation while it ticks
        self._round = 0

    def __bool__(self) -> bool:
        return bool(self._groups)

    def __iter__(self) -> Iterator[TickGroup]:
        return iter(list(self._groups.values()))

    @property
    def row_count(self) -> int:
        # list(): one atomic copy, as the event loop may read while the pipeline thread adds.
        ticking = self._ticking
        rows = sum(len(group.rows) for group in list(self._groups.values()))
        return rows + (len(ticking.rows) if ticking is not None else 0)

    def new_round(self) -> None:
        """Rows placed from now on form new DeepCache cohorts."""
        self._round += 1

    def place(self, rows: list[Row], interval: int | None) -> None:
        """Add one request's rows to the group of their shape (or their cohort's)."""
        key: GroupKey = (rows[0].tick_key, interval, self._round if interval else None)
        group = self._groups.get(key)
        if group is None:
            group = TickGroup(key)
            if interval:
                group.cache = self._new_cache(interval)
            self._groups[key] = group
        group.rows.extend(rows)
        if group.cache is not None:
            group.cache.invalidate()

    def take(self, owner: Any) -> list[Row]:
        """Remove and return every row of ``owner`` (a request being paused or failed)."""
        taken: list[Row] = []
        for key, group in list(self._groups.items()):
            mine = [row for row in group.rows if row.owner is owner]
            if not mine:
                continue
            taken.extend(mine)
            group.rows = [row for row in group.rows if row.owner is not owner]
            if group.cache is not None:
                group.cache.invalidate()
            if not group.rows:
                del self._groups[key]
        return taken

    def next(self) -> TickGroup:
        """The group whose turn it is, out of the rotation until :meth:`requeue`."""
        self._ticking = self._groups.pop(next(iter(self._groups)))
        return self._ticking

    def requeue(self, group: TickGroup) -> None:
        """Back of the rotation, if it still has rows."""
        if group.rows:
            self._groups[group.key] = group
        self._ticking = None

    def clear(self) -> None:
        self._groups.clear()
        self._ticking = None
