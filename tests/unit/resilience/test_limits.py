"""Per-cluster circuit-breaker counters with Envoy's thresholds and stat names."""

from __future__ import annotations

import pytest

from meshlib.config.model import UINT32_MAX, ConnectionPool
from meshlib.resilience.budget import ConcurrencyRetryBudget
from meshlib.resilience.limits import ClusterLimits


def test_istio_defaults_are_effectively_unlimited() -> None:
    limits = ClusterLimits(ConnectionPool())
    assert all(limits.try_acquire_request() for _ in range(1000))
    assert limits.remaining_rq == UINT32_MAX - 1000
    assert limits.rq_open == 0


def test_request_overflow_counts_and_release_readmits() -> None:
    limits = ClusterLimits(ConnectionPool(max_requests=2))
    assert limits.try_acquire_request()
    assert limits.try_acquire_request()
    assert limits.rq_open == 1
    assert limits.remaining_rq == 0
    assert not limits.try_acquire_request()
    assert not limits.try_acquire_request()
    assert limits.upstream_rq_pending_overflow == 2  # Envoy counts request overflow here too
    assert limits.upstream_rq_active == 2
    limits.release_request()
    assert limits.upstream_rq_active == 1
    assert limits.rq_open == 0
    assert limits.try_acquire_request()


def test_pending_overflow() -> None:
    limits = ClusterLimits(ConnectionPool(max_pending_requests=1))
    assert limits.try_acquire_pending()
    assert not limits.try_acquire_pending()
    assert limits.upstream_rq_pending_overflow == 1
    assert limits.upstream_rq_pending_active == 1
    assert limits.rq_pending_open == 1
    limits.release_pending()
    assert limits.remaining_pending == 1


def test_retry_overflow_uses_max_retries() -> None:
    limits = ClusterLimits(ConnectionPool(max_retries=1))
    assert limits.try_acquire_retry()
    assert not limits.try_acquire_retry()
    assert limits.upstream_rq_retry_overflow == 1
    assert limits.rq_retry_open == 1
    assert limits.remaining_retries == 0
    limits.release_retry()
    assert limits.try_acquire_retry()


def test_retry_budget_replaces_max_retries() -> None:
    limits = ClusterLimits(ConnectionPool(max_retries=0), retry_budget=ConcurrencyRetryBudget())
    assert limits.max_retries() == 3  # min_retry_concurrency with nothing active
    for _ in range(100):
        limits.try_acquire_request()
    assert limits.max_retries() == 20  # 20% of 100 active
    assert sum(limits.try_acquire_retry() for _ in range(25)) == 20
    assert limits.upstream_rq_retry_overflow == 5


def test_connection_overflow() -> None:
    limits = ClusterLimits(ConnectionPool(max_connections=1))
    assert limits.try_acquire_connection()
    assert not limits.try_acquire_connection()
    assert limits.upstream_cx_overflow == 1
    assert limits.cx_open == 1
    limits.release_connection()
    assert limits.upstream_cx_active == 0
    assert limits.remaining_cx == 1


@pytest.mark.parametrize("kind", ["request", "pending", "retry", "connection"])
def test_release_without_acquire_is_an_error(kind: str) -> None:
    limits = ClusterLimits(ConnectionPool())
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        getattr(limits, f"release_{kind}")()


def test_config_swap_keeps_active_counts_and_counters() -> None:
    limits = ClusterLimits(ConnectionPool(max_requests=10))
    for _ in range(5):
        limits.try_acquire_request()
    limits.update(ConnectionPool(max_requests=3))
    # Lowered below what is in flight: refuse until drained, forget nothing.
    assert limits.upstream_rq_active == 5
    assert not limits.try_acquire_request()
    assert limits.upstream_rq_pending_overflow == 1
    for _ in range(3):
        limits.release_request()
    assert limits.try_acquire_request()
    limits.update(ConnectionPool(max_requests=100), retry_budget=ConcurrencyRetryBudget())
    assert limits.upstream_rq_pending_overflow == 1
    assert limits.max_retries() == 3


def test_stats_use_envoy_names() -> None:
    limits = ClusterLimits(ConnectionPool(max_requests=1))
    limits.try_acquire_request()
    limits.try_acquire_request()
    stats = limits.stats()
    assert stats["upstream_rq_active"] == 1
    assert stats["upstream_rq_pending_overflow"] == 1
    assert stats["rq_open"] == 1
    assert stats["remaining_rq"] == 0
    assert set(stats) >= {
        "upstream_rq_pending_active", "upstream_rq_retry_overflow", "upstream_cx_overflow",
        "upstream_cx_active", "rq_pending_open", "rq_retry_open", "cx_open", "remaining_pending",
        "remaining_retries", "remaining_cx",
    }


def test_try_admit_takes_request_and_connection_in_one_step() -> None:
    from meshlib.resilience.limits import ADMITTED, ADMITTED_PENDING, REFUSED

    limits = ClusterLimits(ConnectionPool(max_requests=3, max_connections=1))
    assert limits.try_admit() == ADMITTED
    assert (limits.upstream_rq_active, limits.upstream_cx_active) == (1, 1)
    assert limits.try_admit() == ADMITTED_PENDING  # admitted, but it must wait for a connection
    assert (limits.upstream_rq_active, limits.upstream_cx_active, limits.upstream_cx_overflow) == (2, 1, 1)
    assert limits.try_admit() == ADMITTED_PENDING
    assert limits.try_admit() == REFUSED  # nothing taken
    assert (limits.upstream_rq_active, limits.upstream_rq_pending_overflow) == (3, 1)
    limits.release_admitted(connection=True)
    limits.release_admitted(connection=False)
    limits.release_admitted(connection=False)
    assert (limits.upstream_rq_active, limits.upstream_cx_active) == (0, 0)
    with pytest.raises(RuntimeError):
        limits.release_admitted(connection=False)
    assert limits.try_admit() == ADMITTED
    with pytest.raises(RuntimeError):
        limits.release_admitted(connection=True) or limits.release_admitted(connection=True)
    assert (limits.upstream_rq_active, limits.upstream_cx_active) == (0, 0)
