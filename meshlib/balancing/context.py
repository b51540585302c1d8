"""What one pick reads, and the contract every picker fulfils.

Following grpc-go's split, a *balancer* (:class:`~meshlib.balancing.cluster.ClusterBalancer`)
reacts to configuration and health, and a *picker* decides per request. A picker
is built once over a fixed tuple of hosts and never changes membership; the
only state it may mutate is its own cursor (round robin) or scheduler (EDF).

Everything a decision depends on — the clock, the random source, the live
per-host counters, the request hash, the retry attempt and the hosts already
tried — arrives in one :class:`PickContext`, so pickers are plain synchronous
code and tests drive them with a seeded :class:`random.Random` and a fixed
``now`` (architecture.md, "Pure decisions, injected time and randomness").
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Protocol

from meshlib.config.model import Endpoint
from meshlib.host_stats import HostStatsTable

__all__ = ["PickContext", "Picker"]


class PickContext:
    """Inputs of one host pick.

    ``hash_key`` is the request hash for ring hash / maglev (``None``: no hash
    policy produced one, so those pickers fall back to a random point).
    ``attempt`` is 0 on the first try and k on the k-th retry; hash pickers
    offset their choice by it. ``avoid`` holds the :attr:`Endpoint.key` of
    hosts already tried (Envoy's ``previous_hosts`` retry predicate).

    A context is only valid for the duration of one ``pick`` call: the request
    path refills one context per runner instead of allocating one per attempt,
    so pickers and balancers must not keep a reference to it.
    """

    __slots__ = ("attempt", "avoid", "hash_key", "now", "rng", "stats")

    # Positional on purpose: PickContext(rng, now, stats, ...) where one is built on a hot path.
    def __init__(  # noqa: PLR0917
        self,
        rng: random.Random,
        now: float,
        stats: HostStatsTable,
        hash_key: int | None = None,
        attempt: int = 0,
        avoid: Collection[str] = (),
    ) -> None:
        self.rng = rng
        self.now = now  # monotonic seconds
        self.stats = stats
        self.hash_key = hash_key
        self.attempt = attempt
        self.avoid = avoid

    def __repr__(self) -> str:
        return (
            f"PickContext(now={self.now!r}, hash_key={self.hash_key!r}, "
            f"attempt={self.attempt!r}, avoid={self.avoid!r})"
        )


class Picker(Protocol):
    """Chooses one host of a fixed, non-empty host set for one request."""

    def pick(self, ctx: PickContext) -> Endpoint: ...
