"""Peak EWMA, a meshlib extension (Finagle ``PeakEwma``, Linkerd, tower ``PeakEwma``).

Envoy has no latency-aware balancer; Finagle's is the reference. Each host
keeps a ``cost``: a latency estimate that jumps *up* to any slower sample at
once (the "peak") and decays towards faster samples exponentially::

    if rtt > cost:  cost = rtt
    else:           cost = cost * w + rtt * (1 - w),   w = exp(-Δt / τ),  τ = 10 s

A pick is power-of-two-choices on ``load = cost * (pending + 1)``, so a host
that is slow *or* busy loses. A host with no latency history (cost 0) but
requests already in flight gets a large penalty: it might be hanging, and we
know nothing good about it. A host with no history and nothing in flight has
load 0, so new hosts get probed promptly.

As in Finagle, reading the cost decays it towards zero for the time since the
last sample, so a host that was slow once and then left idle is retried
eventually instead of being starved forever. The read is pure: the decayed
value is not written back, only :func:`observe_rtt` writes.

The update (:func:`observe_rtt`) is separate from the choice
(:class:`PeakEwmaPicker`), as tower separates load metrics from P2C.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from meshlib.balancing.context import PickContext
from meshlib.config.model import Endpoint
from meshlib.host_stats import HostStats

__all__ = ["PENALTY", "PeakEwmaPicker", "decayed_cost", "observe_rtt", "peak_ewma_load"]

# Finagle's penalty (Long.MaxValue >> 16): larger than any real cost * pending.
PENALTY = float((2**63 - 1) >> 16)


def observe_rtt(stats: HostStats, rtt_s: float, now: float, decay_s: float = 10.0) -> None:
    """Fold one round-trip time (seconds, measured at ``now``) into ``stats.ewma_cost_s``."""
    cost = stats.ewma_cost_s
    if rtt_s > cost:
        stats.ewma_cost_s = rtt_s
    else:
        elapsed = now - stats.ewma_stamp
        w = math.exp(-elapsed / decay_s) if elapsed > 0.0 else 1.0
        stats.ewma_cost_s = cost * w + rtt_s * (1.0 - w)
    stats.ewma_stamp = now


def decayed_cost(stats: HostStats, now: float, decay_s: float = 10.0) -> float:
    """The cost as of ``now``: the stored estimate decayed towards 0 since its last sample."""
    cost = stats.ewma_cost_s
    elapsed = now - stats.ewma_stamp
    if cost == 0.0 or elapsed <= 0.0:
        return cost
    return cost * math.exp(-elapsed / decay_s)


def peak_ewma_load(stats: HostStats | None, now: float, decay_s: float = 10.0) -> float:
    """``cost * (pending + 1)``; a host with no history but pending requests is penalised."""
    if stats is None:
        return 0.0
    pending = stats.active_requests
    if stats.ewma_cost_s == 0.0:
        # + pending: among unknown hosts, the less busy still wins.
        return PENALTY + pending if pending > 0 else 0.0
    return decayed_cost(stats, now, decay_s) * (pending + 1)


class PeakEwmaPicker:
    """P2C (``choice_count`` draws with replacement) on :func:`peak_ewma_load`; weights ignored."""

    __slots__ = ("_decay_s", "_extra_draws", "_hosts", "_keys", "_size")

    def __init__(self, hosts: Sequence[Endpoint], choice_count: int = 2, decay_s: float = 10.0) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        if decay_s <= 0:
            raise ValueError("peak EWMA decay must be positive")
        self._hosts = tuple(hosts)
        self._keys = tuple(h.key for h in self._hosts)
        self._size = len(self._hosts)
        self._extra_draws = max(2, choice_count) - 1
        self._decay_s = decay_s

    def pick(self, ctx: PickContext) -> Endpoint:
        size = self._size
        if size == 1:
            return self._hosts[0]
        rand = ctx.rng.random
        peek = ctx.stats.peek
        keys = self._keys
        now = ctx.now
        decay = self._decay_s
        best = int(rand() * size)
        best_load = peak_ewma_load(peek(keys[best]), now, decay)
        for _ in range(self._extra_draws):
            drawn = int(rand() * size)
            load = peak_ewma_load(peek(keys[drawn]), now, decay)
            if load < best_load:  # a tie keeps the earlier draw
                best = drawn
                best_load = load
        return self._hosts[best]
