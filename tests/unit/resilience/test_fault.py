"""Fault injection draws: independent delay then abort, Envoy's per-million sampling."""

from __future__ import annotations

import math
import random

import pytest

from meshlib.config.model import FaultPolicy
from meshlib.resilience.fault import NO_FAULT, FaultAbort, FaultDecision, decide_fault

N = 10_000


def _rate(fault: FaultPolicy, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    decisions = [decide_fault(fault, rng) for _ in range(N)]
    return (
        sum(d.delay_s is not None for d in decisions) / N,
        sum(d.abort is not None for d in decisions) / N,
    )


def test_thirty_percent_within_three_sigma() -> None:
    fault = FaultPolicy(delay_s=0.5, delay_percent=30.0, abort_http_status=503, abort_percent=30.0)
    delayed, aborted = _rate(fault, seed=11)
    sigma = math.sqrt(0.3 * 0.7 / N)
    assert abs(delayed - 0.3) < 3 * sigma
    assert abs(aborted - 0.3) < 3 * sigma


def test_zero_percent_never_and_hundred_always() -> None:
    never = FaultPolicy(delay_s=1.0, delay_percent=0.0, abort_http_status=500, abort_percent=0.0)
    always = FaultPolicy(delay_s=1.0, delay_percent=100.0, abort_grpc_status=14, abort_percent=100.0)
    assert _rate(never, seed=1) == (0.0, 0.0)
    assert _rate(always, seed=1) == (1.0, 1.0)
    assert decide_fault(always, random.Random(0)) == FaultDecision(1.0, FaultAbort(None, 14))


def test_fractional_percent() -> None:
    fault = FaultPolicy(abort_http_status=503, abort_percent=0.5)
    rng = random.Random(5)
    hits = sum(decide_fault(fault, rng).abort is not None for _ in range(200_000))
    expected = 200_000 * 0.005
    assert abs(hits - expected) < 4 * math.sqrt(expected)


def test_delay_and_abort_are_drawn_independently() -> None:
    fault = FaultPolicy(delay_s=0.1, delay_percent=50.0, abort_http_status=503, abort_percent=50.0)
    rng = random.Random(21)
    decisions = [decide_fault(fault, rng) for _ in range(N)]
    both = sum(d.delay_s is not None and d.abort is not None for d in decisions) / N
    sigma = math.sqrt(0.25 * 0.75 / N)
    assert abs(both - 0.25) < 3 * sigma


def test_delay_is_drawn_first() -> None:
    fault = FaultPolicy(delay_s=0.1, delay_percent=50.0, abort_http_status=503, abort_percent=50.0)
    rng = random.Random(3)
    first, second = rng.random(), rng.random()
    decision = decide_fault(fault, random.Random(3))
    assert (decision.delay_s is not None) == (int(first * 1_000_000) < 500_000)
    assert (decision.abort is not None) == (int(second * 1_000_000) < 500_000)


def test_unconfigured_parts_never_fire_and_draw_nothing() -> None:
    assert decide_fault(None, random.Random(0)) is NO_FAULT
    only_abort = FaultPolicy(delay_percent=100.0, abort_http_status=418, abort_percent=100.0)
    assert decide_fault(only_abort, random.Random(0)) == FaultDecision(None, FaultAbort(418, None))
    rng = random.Random(9)
    decide_fault(FaultPolicy(delay_percent=100.0, abort_percent=100.0), rng)
    assert rng.random() == random.Random(9).random()


@pytest.mark.parametrize("percent", [100.0, 150.0])
def test_at_or_above_hundred_always(percent: float) -> None:
    fault = FaultPolicy(delay_s=0.2, delay_percent=percent)
    rng = random.Random(0)
    assert all(decide_fault(fault, rng).delay_s == 0.2 for _ in range(1000))
