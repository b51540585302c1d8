"""Shared builders for balancing tests: endpoints, clusters, contexts, statistics."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from meshlib.balancing import PickContext
from meshlib.config.model import Cluster, Endpoint, LbPolicy, Locality, TrafficPolicy
from meshlib.host_stats import HostStatsTable

NOWHERE = Locality()


def endpoints(
    count: int,
    *,
    weights: Sequence[int] | None = None,
    locality: Locality = NOWHERE,
    priority: int = 0,
    base: int = 0,
) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"10.0.0.{base + i + 1}",
            8080,
            weight=weights[i] if weights else 1,
            locality=locality,
            priority=priority,
        )
        for i in range(count)
    )


def cluster(eps: Iterable[Endpoint], lb: LbPolicy | None = None) -> Cluster:
    return Cluster(
        "outbound|8080||svc.ns.svc.cluster.local",
        "svc.ns.svc.cluster.local",
        8080,
        "",
        tuple(eps),
        TrafficPolicy(lb=lb or LbPolicy()),
    )


def ctx(
    seed: int = 1,
    *,
    stats: HostStatsTable | None = None,
    now: float = 0.0,
    hash_key: int | None = None,
    attempt: int = 0,
    avoid: Iterable[str] = (),
) -> PickContext:
    return PickContext(
        random.Random(seed),
        now,
        stats if stats is not None else HostStatsTable(),
        hash_key,
        attempt,
        frozenset(avoid),
    )


def chi_square(counts: Counter[str], expected: dict[str, float]) -> float:
    return sum((counts.get(k, 0) - e) ** 2 / e for k, e in expected.items())


# Upper 0.1% points of the chi-square distribution, by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 9: 27.88, 19: 43.82}


class ScriptedRandom(random.Random):
    """A Random whose ``random()`` replays a fixed script (for tie-break tests)."""

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(0)
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)
