"""Weighted destination choice (VirtualService ``route[].weight``).

istiod turns one destination into a plain ``cluster`` (its weight is ignored)
and several into ``weighted_clusters`` with zero weights dropped; Envoy then
draws uniformly over the cumulative weights, so weights are *relative*
(``w / Σw``) and need not sum to 100. The cumulative array is built once per
route on the control path (:class:`WeightedPicker`); a draw is one
``rng.random()`` and one ``bisect``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from meshlib.config.model import Route, WeightedCluster

__all__ = ["WeightedPicker", "destination_percents", "pick_destination", "register_pickers"]


class WeightedPicker:
    """Precomputed choice among a route's destinations.

    ``route`` is kept so :func:`pick_destination` can verify that a picker
    found by ``id(route)`` really belongs to the route it was asked about.
    """

    __slots__ = ("cumulative", "only", "route", "targets", "total")

    def __init__(self, route: Route) -> None:
        self.route = route
        destinations = route.destinations
        self.only: WeightedCluster | None = None
        self.targets: tuple[WeightedCluster, ...] = ()
        self.cumulative: list[int] = []
        self.total = 0
        if len(destinations) == 1:
            self.only = destinations[0]
            return
        live = tuple(d for d in destinations if d.weight > 0)
        if len(live) == 1:
            self.only = live[0]
            return
        self.targets = live
        self.cumulative = list(accumulate(d.weight for d in live))
        self.total = self.cumulative[-1] if live else 0

    def pick(self, rng: random.Random) -> WeightedCluster | None:
        """One destination, or ``None`` when every weight is zero (or there are none)."""
        total = self.total
        if not total:
            return self.only  # the single destination, or None when all weights are zero
        # int(random() * total) is uniform over 0..total-1 like Envoy's
        # ``random % total``; bisect_right finds the first cumulative > draw.
        return self.targets[bisect_right(self.cumulative, int(rng.random() * total))]


# Pickers of live route tables, by id(route). Entries are removed when their
# table is collected (see register_pickers), and a picker keeps its route
# alive, so an id cannot be reused while its entry exists.
_PICKERS: dict[int, WeightedPicker] = {}


def register_pickers(pickers: Sequence[WeightedPicker]) -> None:
    """Make ``pickers`` findable by :func:`pick_destination` (called by the route table)."""
    for picker in pickers:
        _PICKERS[id(picker.route)] = picker


def unregister_pickers(pickers: Sequence[WeightedPicker]) -> None:
    """Forget ``pickers`` (only entries that are still these exact objects)."""
    for picker in pickers:
        key = id(picker.route)
        if _PICKERS.get(key) is picker:
            del _PICKERS[key]


def pick_destination(route: Route, rng: random.Random) -> WeightedCluster | None:
    """Choose ``route``'s destination for one request.

    One destination → it (whatever its weight, as istiod emits a plain
    cluster); several → weighted by ``w / Σw`` with zero weights dropped; all
    zero or none → ``None``. Routes of a compiled :class:`RouteTable` use the
    precomputed cumulative weights; any other route is compiled on the fly.
    """
    destinations = route.destinations
    if len(destinations) == 1:
        return destinations[0]
    if not destinations:
        return None
    picker = _PICKERS.get(id(route))
    if picker is None or picker.route is not route:
        return WeightedPicker(route).pick(rng)
    # WeightedPicker.pick inlined: this runs once per request.
    total = picker.total
    if not total:
        return picker.only
    return picker.targets[bisect_right(picker.cumulative, int(rng.random() * total))]


def destination_percents(route: Route) -> list[tuple[WeightedCluster, float]]:
    """Each destination that can be chosen, with its share in percent (for explain).

    A single destination gets 100; zero-weight destinations of a split are
    left out; a split whose weights are all zero gives an empty list.
    """
    destinations = route.destinations
    if len(destinations) == 1:
        return [(destinations[0], 100.0)]
    live = [d for d in destinations if d.weight > 0]
    total = sum(d.weight for d in live)
    return [(d, 100.0 * d.weight / total) for d in live]
