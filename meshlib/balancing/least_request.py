"""Least request, Envoy's ``LEAST_REQUEST`` and Istio's default (semantics.md §1).

Equal weights: "power of d choices" (Mitzenmacher). Draw ``choice_count``
hosts (default 2, never fewer) uniformly *with replacement* and keep the one
with the fewest active requests; on a tie the earlier draw stays. Sampling a
few hosts instead of scanning all keeps a pick O(d) and avoids the herd
effect of every client sending to the single least-loaded host.

Unequal weights: EDF where a host re-enters the schedule with effective weight
``weight / (active + 1) ** active_request_bias``. The weight is recomputed
only for the host just picked (as Envoy does), so a pick stays O(log n).
Bias 0 turns this into weighted round robin; bias 1 (default) divides by load.

The load metric (active requests from :class:`~meshlib.host_stats.HostStats`)
is kept apart from the choice algorithm, as in tower's ``balance::p2c``.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlib.balancing.context import PickContext, Picker
from meshlib.balancing.edf import EdfScheduler
from meshlib.balancing.round_robin import weights_equal
from meshlib.config.model import Endpoint

__all__ = ["LeastRequestPicker", "WeightedLeastRequestPicker", "least_request_picker"]


class LeastRequestPicker:
    """Equal weights: best of ``choice_count`` uniform draws by active requests."""

    __slots__ = ("_extra_draws", "_hosts", "_keys", "_size")

    def __init__(self, hosts: Sequence[Endpoint], choice_count: int = 2) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        self._hosts = tuple(hosts)
        # Keys precomputed: Endpoint.key formats a string on every access.
        self._keys = tuple(h.key for h in self._hosts)
        self._size = len(self._hosts)
        self._extra_draws = max(2, choice_count) - 1

    def pick(self, ctx: PickContext) -> Endpoint:
        size = self._size
        if size == 1:
            return self._hosts[0]
        rand = ctx.rng.random
        peek = ctx.stats.peek
        keys = self._keys
        best = int(rand() * size)
        stats = peek(keys[best])
        best_active = stats.active_requests if stats is not None else 0
        if self._extra_draws == 1:
            # The default two choices, unrolled: the loop setup costs as much as a draw.
            drawn = int(rand() * size)
            stats = peek(keys[drawn])
            if stats is not None and stats.active_requests < best_active:
                return self._hosts[drawn]
            if stats is None and best_active > 0:
                return self._hosts[drawn]
            return self._hosts[best]
        for _ in range(self._extra_draws):
            drawn = int(rand() * size)
            stats = peek(keys[drawn])
            active = stats.active_requests if stats is not None else 0
            if active < best_active:  # strict: a tie keeps the earlier draw
                best = drawn
                best_active = active
        return self._hosts[best]


class WeightedLeastRequestPicker:
    """Unequal weights: EDF with ``weight / (active + 1) ** bias`` on re-insert."""

    __slots__ = ("_bias", "_hosts", "_keys", "_scheduler", "_weights")

    def __init__(self, hosts: Sequence[Endpoint], weights: Sequence[float], bias: float = 1.0) -> None:
        if not hosts or len(hosts) != len(weights):
            raise ValueError("need one positive weight per host, and at least one host")
        if bias < 0:
            raise ValueError("active_request_bias must be >= 0")
        self._hosts = tuple(hosts)
        self._keys = tuple(h.key for h in self._hosts)
        self._weights = tuple(float(w) for w in weights)
        self._bias = bias
        # The schedule starts from the configured weights; live load enters as
        # each host is picked and re-inserted.
        self._scheduler = EdfScheduler(self._weights)

    def pick(self, ctx: PickContext) -> Endpoint:
        index = self._scheduler.next_index()
        weight = self._weights[index]
        bias = self._bias
        if bias != 0.0:
            stats = ctx.stats.peek(self._keys[index])
            active = stats.active_requests if stats is not None else 0
            if active > 0:
                # Special-case bias 1 (the default): a division is cheaper than pow.
                weight = weight / (active + 1) if bias == 1.0 else weight / (active + 1) ** bias
        self._scheduler.readd(index, weight)
        return self._hosts[index]


def least_request_picker(
    hosts: Sequence[Endpoint], weights: Sequence[float] | None, choice_count: int = 2, bias: float = 1.0
) -> Picker:
    """P2C when all weights are equal, otherwise EDF on load-adjusted weights."""
    if weights is None or weights_equal(weights):
        return LeastRequestPicker(hosts, choice_count)
    return WeightedLeastRequestPicker(hosts, weights, bias)
