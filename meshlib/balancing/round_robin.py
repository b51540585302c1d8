"""Round robin, Envoy's ``ROUND_ROBIN`` (semantics.md §1).

Equal weights: a cursor over the host tuple, advanced once per pick. It starts
at a random offset so that many clients built from the same configuration at
the same moment do not all hit host 0 first and then move in lockstep.

Unequal weights (including weights skewed by slow start): earliest deadline
first (:mod:`meshlib.balancing.edf`), so a host of weight 3 is chosen three
times as often as one of weight 1, interleaved rather than in bursts.

The balancer builds a new picker when membership, health or weights change;
pickers themselves are fixed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from meshlib.balancing.context import PickContext, Picker
from meshlib.balancing.edf import EdfScheduler
from meshlib.config.model import Endpoint

__all__ = ["RoundRobinPicker", "WeightedRoundRobinPicker", "round_robin_picker", "weights_equal"]


def weights_equal(weights: Sequence[float]) -> bool:
    """True when every weight is the same (the unweighted fast paths apply)."""
    first = weights[0]
    return all(w == first for w in weights)


class RoundRobinPicker:
    """Equal-weight round robin: ``hosts[i]``, ``i`` advancing by one per pick."""

    __slots__ = ("_hosts", "_next", "_size")

    def __init__(self, hosts: Sequence[Endpoint], start: int = 0) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        self._hosts = tuple(hosts)
        self._size = len(self._hosts)
        self._next = start % self._size

    def pick(self, ctx: PickContext) -> Endpoint:
        i = self._next
        nxt = i + 1
        self._next = 0 if nxt == self._size else nxt
        return self._hosts[i]


class WeightedRoundRobinPicker:
    """Weighted round robin by EDF: deadline ``virtual_now + 1/weight``, ties by order."""

    __slots__ = ("_hosts", "_scheduler")

    def __init__(self, hosts: Sequence[Endpoint], weights: Sequence[float]) -> None:
        if not hosts or len(hosts) != len(weights):
            raise ValueError("need one positive weight per host, and at least one host")
        self._hosts = tuple(hosts)
        self._scheduler = EdfScheduler(weights)

    def pick(self, ctx: PickContext) -> Endpoint:
        return self._hosts[self._scheduler.pick()]


def round_robin_picker(
    hosts: Sequence[Endpoint], weights: Sequence[float] | None, rng: random.Random
) -> Picker:
    """The round-robin picker for ``hosts``: cursor when weights are equal, else EDF."""
    if weights is None or weights_equal(weights):
        return RoundRobinPicker(hosts, start=rng.randrange(len(hosts)) if hosts else 0)
    return WeightedRoundRobinPicker(hosts, weights)
