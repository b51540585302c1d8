"""Envoy's jittered exponential backoff and gRPC's retry and connection backoff."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import pytest

from meshlib.resilience.backoff import (
    envoy_backoff,
    envoy_backoff_bound,
    grpc_connection_backoff,
    grpc_retry_backoff,
    wait_envoy_backoff,
    wait_grpc_connection_backoff,
)

MS = 0.001


@pytest.mark.parametrize(
    ("n", "bound"),
    [(1, 25 * MS), (2, 50 * MS), (3, 100 * MS), (4, 200 * MS), (5, 250 * MS), (6, 250 * MS), (100, 250 * MS)],
)
def test_envoy_bounds_per_retry(n: int, bound: float) -> None:
    assert envoy_backoff_bound(n, 0.025, 0.25) == pytest.approx(bound)
    rng = random.Random(n)
    samples = [envoy_backoff(n, rng, 0.025, 0.25) for _ in range(5000)]
    assert min(samples) >= 0.0
    assert max(samples) < bound
    # Uniform over [0, bound): the mean is half the bound.
    assert statistics.fmean(samples) == pytest.approx(bound / 2, rel=0.05)


def test_envoy_max_defaults_to_ten_times_base() -> None:
    assert envoy_backoff_bound(10, 0.1) == pytest.approx(1.0)
    assert envoy_backoff_bound(1, 0.1) == pytest.approx(0.1)


def test_envoy_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError, match="retry_number"):
        envoy_backoff_bound(0)


def test_envoy_huge_retry_number_does_not_overflow() -> None:
    assert envoy_backoff_bound(10_000, 0.025, 0.25) == pytest.approx(0.25)


@pytest.mark.parametrize(("n", "bound"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)])
def test_grpc_retry_backoff_is_full_jitter(n: int, bound: float) -> None:
    rng = random.Random(n)
    samples = [grpc_retry_backoff(n, rng, initial_s=0.1, multiplier=2.0, max_s=0.5) for _ in range(5000)]
    assert min(samples) >= 0.0
    assert max(samples) < bound
    assert statistics.fmean(samples) == pytest.approx(bound / 2, rel=0.05)


@pytest.mark.parametrize(("n", "base"), [(1, 1.0), (2, 1.6), (3, 2.56), (20, 120.0)])
def test_grpc_connection_backoff_jitter_is_twenty_percent(n: int, base: float) -> None:
    rng = random.Random(n)
    samples = [grpc_connection_backoff(n, rng) for _ in range(5000)]
    assert min(samples) >= 0.8 * base - 1e-9
    assert max(samples) <= 1.2 * base + 1e-9
    assert statistics.fmean(samples) == pytest.approx(base, rel=0.02)


@dataclass
class _FakeRetryState:
    attempt_number: int


def test_tenacity_compatible_wait_callables() -> None:
    wait = wait_envoy_backoff(0.025, 0.25, rng=random.Random(3))
    assert 0.0 <= wait(_FakeRetryState(1)) < 0.025
    assert 0.0 <= wait(_FakeRetryState(4)) < 0.2
    reconnect = wait_grpc_connection_backoff(rng=random.Random(3))
    assert 0.8 <= reconnect(_FakeRetryState(1)) <= 1.2
