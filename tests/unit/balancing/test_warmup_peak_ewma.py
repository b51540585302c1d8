from __future__ import annotations

import math

import pytest

from meshlib.balancing import PeakEwmaPicker, observe_rtt, peak_ewma_load, warmup_factor
from meshlib.balancing.peak_ewma import PENALTY, decayed_cost
from meshlib.config.model import Warmup
from meshlib.host_stats import HostStats, HostStatsTable

from .helpers import ctx, endpoints


@pytest.mark.parametrize(
    ("age", "warmup", "factor"),
    [
        (0.0, Warmup(60.0), 0.1),  # max(0.1, 1/60)
        (0.5, Warmup(60.0), 0.1),
        (30.0, Warmup(60.0), 0.5),
        (30.0, Warmup(60.0, aggression=2.0), math.sqrt(0.5)),
        (3.0, Warmup(60.0, min_weight_percent=1.0), 0.05),
        (0.0, Warmup(60.0, min_weight_percent=0.0), 1 / 60),  # max(secs, 1)
        (60.0, Warmup(60.0), 1.0),  # out of the window
        (500.0, Warmup(60.0), 1.0),
    ],
)
def test_warmup_factor(age: float, warmup: Warmup, factor: float) -> None:
    assert warmup_factor(age, warmup) == pytest.approx(factor)


def test_observe_rtt_peak_then_decay() -> None:
    s = HostStats("h", 0.0)
    observe_rtt(s, 0.100, now=1.0, decay_s=10.0)
    assert s.ewma_cost_s == 0.100  # first sample: rtt > 0 → cost = rtt
    observe_rtt(s, 0.300, now=2.0, decay_s=10.0)
    assert s.ewma_cost_s == 0.300  # a slower sample jumps straight up
    observe_rtt(s, 0.100, now=7.0, decay_s=10.0)
    w = math.exp(-5.0 / 10.0)
    assert s.ewma_cost_s == pytest.approx(0.300 * w + 0.100 * (1 - w))
    assert s.ewma_stamp == 7.0


def test_observe_rtt_same_instant_keeps_cost() -> None:
    s = HostStats("h", 0.0)
    observe_rtt(s, 0.2, now=1.0)
    observe_rtt(s, 0.1, now=1.0)  # Δt 0 → w 1
    assert s.ewma_cost_s == 0.2


def test_load_and_penalty() -> None:
    assert peak_ewma_load(None, 0.0) == 0.0
    s = HostStats("h", 0.0)
    assert peak_ewma_load(s, 0.0) == 0.0  # unknown and idle: try it
    s.active_requests = 2
    assert peak_ewma_load(s, 0.0) == PENALTY + 2  # unknown but busy: avoid
    observe_rtt(s, 0.05, now=1.0)
    assert peak_ewma_load(s, 1.0) == pytest.approx(0.05 * 3)
    # Reading decays toward zero with idle time (Finagle), without writing back.
    assert decayed_cost(s, 11.0, 10.0) == pytest.approx(0.05 * math.exp(-1.0))
    assert s.ewma_cost_s == 0.05


def test_picker_prefers_lower_latency() -> None:
    slow, fast = endpoints(2)
    table = HostStatsTable()
    observe_rtt(table.get(slow.key, 0.0), 0.100, now=0.0)
    observe_rtt(table.get(fast.key, 0.0), 0.010, now=0.0)
    picker = PeakEwmaPicker((slow, fast))
    c = ctx(4, stats=table, now=0.0)
    n = 20_000
    share_fast = sum(picker.pick(c) is fast for _ in range(n)) / n
    assert share_fast == pytest.approx(0.75, abs=0.015)  # slow wins only if drawn twice


def test_picker_prefers_less_pending_at_equal_latency() -> None:
    a, b = endpoints(2)
    table = HostStatsTable()
    for h in (a, b):
        observe_rtt(table.get(h.key, 0.0), 0.050, now=0.0)
    table.get(a.key, 0.0).active_requests = 5
    picker = PeakEwmaPicker((a, b))
    c = ctx(4, stats=table)
    share_b = sum(picker.pick(c) is b for _ in range(10_000)) / 10_000
    assert share_b == pytest.approx(0.75, abs=0.02)
