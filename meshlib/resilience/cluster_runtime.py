"""Per-cluster runtime state that outlives configuration swaps.

Like :mod:`meshlib.host_stats` for hosts, a :class:`ClusterRuntime` keeps
what a cluster has *done* — circuit-breaker counts in flight, the outlier
detector's counters and ejections, the retry budget's balance, the
Envoy-named counters — apart from the frozen configuration. On a new snapshot
:meth:`RuntimeTable.sync` updates each runtime's limits and detector in place
and closes the runtimes of clusters that disappeared.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Mapping
from typing import Any

from meshlib.config.model import Cluster
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.budget import ConcurrencyRetryBudget, TokenRetryBudget, default_retry_budget
from meshlib.resilience.limits import ClusterLimits
from meshlib.resilience.outlier import OutlierDetector
from meshlib.resilience.ratelimit import TokenBucket

# Counters kept per cluster, named as Envoy names its cluster stats.
COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_budget_exhausted",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_cx_connect_fail",
    "upstream_rq_rx_reset",
    "upstream_cx_protocol_error",
    "upstream_rq_2xx",
    "upstream_rq_3xx",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
    "upstream_rq_maintenance_mode",
    "upstream_cx_none_healthy",
    "fault_delays_injected",
    "fault_aborts_injected",
    "ratelimit_rate_limited",
)


class ClusterRuntime:
    """Limits, outlier detector, retry budget and counters of one cluster."""

    __slots__ = ("bucket", "budget", "counters", "limits", "name", "outlier", "waiters")

    def __init__(self, cluster: Cluster, stats: HostStatsTable, rng: random.Random, now: float) -> None:
        self.name = cluster.name
        self.limits = ClusterLimits(cluster.policy.connection_pool, _retry_budget(cluster))
        self.budget: TokenRetryBudget = default_retry_budget()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.outlier: OutlierDetector | None = None
        self.bucket: TokenBucket | None = None
        # Requests waiting for a connection slot (pending), first come first served.
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._configure_outlier(cluster, stats, rng, now)
        self._configure_bucket(cluster, now)

    def update(self, cluster: Cluster, stats: HostStatsTable, rng: random.Random, now: float) -> None:
        self.limits.update(cluster.policy.connection_pool, _retry_budget(cluster))
        self._configure_outlier(cluster, stats, rng, now)
        self._configure_bucket(cluster, now)

    def _configure_bucket(self, cluster: Cluster, now: float) -> None:
        spec = cluster.policy.rate_limit
        if spec is None:
            self.bucket = None
            return
        current = self.bucket
        if current is not None and (current.max_tokens, current.tokens_per_fill, current.fill_interval_s) == (
            spec.max_tokens, spec.tokens_per_fill, spec.fill_interval_s
        ):
            return  # unchanged: keep the bucket's level across the swap
        self.bucket = TokenBucket(spec.max_tokens, spec.tokens_per_fill, spec.fill_interval_s, created_at=now)

    def _configure_outlier(self, cluster: Cluster, stats: HostStatsTable, rng: random.Random, now: float) -> None:
        config = cluster.policy.outlier_detection
        if config is None:
            if self.outlier is not None:
                self.outlier.close(now)  # return the hosts it ejected
                self.outlier = None
            return
        if self.outlier is None:
            self.outlier = OutlierDetector(config, stats, rng)
        else:
            self.outlier.update_config(config)
        self.outlier.set_hosts([e.key for e in cluster.endpoints], now)

    async def wait_for_connection(self) -> bool:
        """After ``limits.try_acquire_connection()`` failed: wait as *pending* for a slot.

        meshlib's HTTP/1.1 client carries one request per connection at a time, so
        a busy connection is an in-flight request. ``False`` means the pending
        queue is full too: the caller answers 503 overflow at once.
        """
        limits = self.limits
        if not limits.try_acquire_pending():
            return False
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # resolved by release_connection handing its slot over
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release_connection()  # we were handed a slot but will not use it
            else:
                self.waiters.remove(waiter)
            raise
        finally:
            limits.release_pending()
        return True

    def release_connection(self) -> None:
        """Return a slot, handing it straight to the first pending request if any."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; the active count stays
                return
        self.limits.release_connection()

    def release_admitted(self, holding_connection: bool) -> None:
        """End a request admitted by ``limits.try_admit()``; its connection slot goes to the first pending one."""
        if holding_connection and self.waiters:
            self.release_connection()
            holding_connection = False
        self.limits.release_admitted(holding_connection)

    def close(self, now: float) -> None:
        if self.outlier is not None:
            self.outlier.close(now)

    def count_status(self, status: int) -> None:
        klass = status // 100
        if 2 <= klass <= 5:
            self.counters[STATUS_COUNTERS[klass]] += 1

    def stats(self, now: float) -> dict[str, Any]:
        result: dict[str, Any] = dict(self.counters)
        result.update(self.limits.stats())
        result["retry_budget_balance"] = self.budget.balance(now)
        if self.outlier is not None:
            result.update(self.outlier.counters)
            result["ejected_hosts"] = self.outlier.ejected_hosts(now)
        else:
            result["ejected_hosts"] = {}
        return result


def _retry_budget(cluster: Cluster) -> ConcurrencyRetryBudget | None:
    spec = cluster.policy.retry_budget
    if spec is None:
        return None
    return ConcurrencyRetryBudget(budget_percent=spec.percent, min_retry_concurrency=spec.min_retry_concurrency)


# The counter of each status class (status // 100); other classes are not counted.
STATUS_COUNTERS = {2: "upstream_rq_2xx", 3: "upstream_rq_3xx", 4: "upstream_rq_4xx", 5: "upstream_rq_5xx"}


class RuntimeTable:
    """Every cluster's :class:`ClusterRuntime`, kept in step with the snapshots."""

    __slots__ = ("_rng", "_stats", "runtimes")

    def __init__(self, stats: HostStatsTable, rng: random.Random) -> None:
        self._stats = stats
        self._rng = rng
        self.runtimes: dict[str, ClusterRuntime] = {}

    def sync(self, clusters: Mapping[str, Cluster], now: float) -> None:
        """Create, update and close runtimes so they match ``clusters`` (control path)."""
        for name, cluster in clusters.items():
            runtime = self.runtimes.get(name)
            if runtime is None:
                self.runtimes[name] = ClusterRuntime(cluster, self._stats, self._rng, now)
            else:
                runtime.update(cluster, self._stats, self._rng, now)
        for name in [n for n in self.runtimes if n not in clusters]:
            self.runtimes.pop(name).close(now)

    def tick(self, now: float) -> None:
        """Run every outlier detector's interval work that is due."""
        for runtime in self.runtimes.values():
            if runtime.outlier is not None:
                runtime.outlier.maybe_tick(now)
