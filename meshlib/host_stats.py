"""Per-endpoint runtime state, kept apart from the frozen configuration.

A :class:`HostStatsTable` outlives configuration swaps: pushing a new
snapshot does not reset active-request counts, latency estimates or
ejections. Keys are :attr:`meshlib.config.model.Endpoint.key` (``ip:port``),
so one host shared by several subsets' clusters has one state — a host that
is bad is bad whichever subset reaches it (Envoy keeps state per cluster;
this is a deliberate meshlib difference, documented in docs/semantics-differences.md).
"""

from __future__ import annotations


class HostStats:
    """Mutable counters for one endpoint. Plain attributes: the request path writes them."""

    __slots__ = (
        "active_requests",
        "ejected",
        "ejected_at",
        "ejection_count",
        "ewma_cost_s",
        "ewma_stamp",
        "first_seen",
        "key",
    )

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.active_requests = 0
        # Peak-EWMA latency estimate in seconds; 0.0 = no history yet.
        self.ewma_cost_s = 0.0
        self.ewma_stamp = now
        # When this host was first seen; slow start (warmup) measures from here.
        self.first_seen = now
        self.ejected = False
        self.ejected_at = 0.0
        self.ejection_count = 0


class HostStatsTable:
    """All endpoints' :class:`HostStats`, created on first use.

    ``health_version`` increases whenever any host's availability changes, so
    balancers can cache the available host set and rebuild only when it moves.
    """

    __slots__ = ("_stats", "health_version")

    def __init__(self) -> None:
        self._stats: dict[str, HostStats] = {}
        self.health_version = 0

    def get(self, key: str, now: float) -> HostStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = HostStats(key, now)
        return stats

    def peek(self, key: str) -> HostStats | None:
        return self._stats.get(key)

    def is_available(self, key: str) -> bool:
        stats = self._stats.get(key)
        return stats is None or not stats.ejected

    def set_ejected(self, key: str, ejected: bool, now: float) -> None:
        stats = self.get(key, now)
        if stats.ejected != ejected:
            stats.ejected = ejected
            if ejected:
                stats.ejected_at = now
                stats.ejection_count += 1
            self.health_version += 1

    def __len__(self) -> int:
        return len(self._stats)

    def items(self) -> list[tuple[str, HostStats]]:
        return list(self._stats.items())
