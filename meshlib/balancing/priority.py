"""Priority levels: load split, failover and panic (Envoy ``LoadBalancerBase``).

Arithmetic exactly as Envoy's code (semantics.md §1), in integer percents:

* ``health(P) = min(100, 140 * available(P) // total(P))`` — the 1.4
  overprovisioning factor means a level keeps *all* its traffic until fewer
  than 100/1.4 ≈ 71.4% of its hosts are available;
* ``NTH = min(100, Σ health)`` (normalised total health);
* ``load(P0) = min(100, health(P0) * 100 // NTH)``,
  ``load(Pi) = min(100 - Σ load(P<i), health(Pi) * 100 // NTH)``;
* any rounding remainder goes to the first level with health > 0 (Envoy's
  ``recalculatePriorityLoad``), so loads always sum to 100.

Panic (Envoy ``isHostSetInPanic``): a level is in panic when
``100 * available / total < threshold``, and then balances over *all* its
hosts, healthy or not — better to spread load over a partly broken set than
to crush the few survivors. If ``NTH == 100`` no level is in panic (there is
enough capacity somewhere). If ``NTH == 0``: with threshold > 0 the whole
cluster panics onto P0; with threshold 0 there is no host (503 "no healthy
upstream").

The level for a request is chosen by ``r = hash % 100`` (hash policies: the
request hash, so a key sticks to one level) or a random ``r`` in [0, 100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshlib.balancing.context import PickContext, Picker
from meshlib.config.model import Endpoint

__all__ = [
    "OVERPROVISIONING_PERCENT",
    "PriorityPicker",
    "PriorityPlan",
    "level_health",
    "plan_priorities",
    "priority_loads",
]

OVERPROVISIONING_PERCENT = 140  # Envoy's default overprovisioning factor, 1.4


def level_health(available: int, total: int, overprovisioning: int = OVERPROVISIONING_PERCENT) -> int:
    """Integer health percent of one level: ``min(100, 140 * available // total)``."""
    if total <= 0:
        return 0
    return min(100, overprovisioning * available // total)


def priority_loads(healths: Sequence[int]) -> tuple[int, ...]:
    """Per-level load percents from per-level health; all zero when ``NTH == 0``."""
    nth = min(100, sum(healths))
    if nth == 0:
        return tuple(0 for _ in healths)
    remaining = 100
    loads: list[int] = []
    first_healthy = -1
    for i, health in enumerate(healths):
        if first_healthy < 0 and health > 0:
            first_healthy = i
        load = min(remaining, health * 100 // nth)
        loads.append(load)
        remaining -= load
    if remaining:
        loads[first_healthy] += remaining
    return tuple(loads)


@dataclass(frozen=True, slots=True)
class PriorityPlan:
    """Where traffic goes given the current availability.

    ``loads[i]`` is level i's percent; ``panic[i]`` says level i balances over
    all its hosts. ``no_host`` is the threshold-0, nothing-available case.
    """

    loads: tuple[int, ...]
    panic: tuple[bool, ...]
    no_host: bool = False


def plan_priorities(
    available: Sequence[int], total: Sequence[int], panic_threshold_percent: float
) -> PriorityPlan:
    """Loads and panic flags for levels with ``available[i]`` of ``total[i]`` hosts up."""
    healths = [level_health(a, t) for a, t in zip(available, total, strict=True)]
    nth = min(100, sum(healths))
    levels = len(healths)
    if nth == 0:
        if panic_threshold_percent > 0 and levels:
            # Total panic: everything to P0, over all of P0's hosts.
            return PriorityPlan((100,) + (0,) * (levels - 1), (True,) * levels)
        return PriorityPlan((0,) * levels, (False,) * levels, no_host=True)
    loads = priority_loads(healths)
    if nth == 100:
        panic = (False,) * levels
    else:
        panic = tuple(
            (100.0 * a / t if t else 0.0) < panic_threshold_percent
            for a, t in zip(available, total, strict=True)
        )
    return PriorityPlan(loads, panic)


class PriorityPicker:
    """Chooses a level by its load percent, then delegates to that level's picker."""

    __slots__ = ("_bounds", "_pickers")

    def __init__(self, loads: Sequence[int], pickers: Sequence[Picker | None]) -> None:
        bounds: list[int] = []
        chosen: list[Picker] = []
        cumulative = 0
        for load, picker in zip(loads, pickers, strict=True):
            if load <= 0:
                continue
            if picker is None:
                raise ValueError("a level with load needs a picker")
            cumulative += load
            bounds.append(cumulative)
            chosen.append(picker)
        if not chosen:
            raise ValueError("no level carries load")
        self._bounds = tuple(bounds)
        self._pickers = tuple(chosen)

    def pick(self, ctx: PickContext) -> Endpoint:
        hash_key = ctx.hash_key
        r = hash_key % 100 if hash_key is not None else int(ctx.rng.random() * 100)
        for bound, picker in zip(self._bounds, self._pickers):  # noqa: B905 - equal by construction
            if r < bound:
                return picker.pick(ctx)
        return self._pickers[-1].pick(ctx)
