from __future__ import annotations

from collections import Counter

import pytest

from meshlib.balancing import LeastRequestPicker, WeightedLeastRequestPicker
from meshlib.balancing.least_request import least_request_picker
from meshlib.host_stats import HostStatsTable

from .helpers import CHI2_999, ScriptedRandom, chi_square, ctx, endpoints


def _stats(active: dict[str, int]) -> HostStatsTable:
    table = HostStatsTable()
    for key, n in active.items():
        table.get(key, 0.0).active_requests = n
    return table


def test_equal_load_is_uniform() -> None:
    hosts = endpoints(10)
    picker = LeastRequestPicker(hosts)
    c = ctx(3)
    counts = Counter(picker.pick(c).key for _ in range(20_000))
    assert chi_square(counts, {h.key: 2000.0 for h in hosts}) < CHI2_999[9]


def test_prefers_less_loaded_host() -> None:
    # Busy host B wins only when both draws are B: probability 1/4.
    a, b = endpoints(2)
    picker = LeastRequestPicker((a, b))
    c = ctx(5, stats=_stats({b.key: 10}))
    n = 40_000
    share_b = sum(picker.pick(c) is b for _ in range(n)) / n
    assert share_b == pytest.approx(0.25, abs=0.01)


def test_choice_count_three() -> None:
    # Host with the most load is chosen only if all three draws hit it: (1/3)^3.
    hosts = endpoints(3)
    picker = LeastRequestPicker(hosts, choice_count=3)
    c = ctx(9, stats=_stats({hosts[1].key: 1, hosts[2].key: 2}))
    n = 54_000
    share = sum(picker.pick(c) is hosts[2] for _ in range(n)) / n
    assert share == pytest.approx(1 / 27, abs=0.004)


def test_choice_count_below_two_is_raised_to_two() -> None:
    a, b = endpoints(2)
    picker = LeastRequestPicker((a, b), choice_count=1)
    c = ctx(5, stats=_stats({b.key: 10}))
    share_b = sum(picker.pick(c) is b for _ in range(20_000)) / 20_000
    assert share_b == pytest.approx(0.25, abs=0.015)


def test_tie_keeps_earlier_draw() -> None:
    a, b = endpoints(2)
    picker = LeastRequestPicker((a, b))
    c = ctx()
    c.rng = ScriptedRandom([0.9, 0.1])  # draws B, then A; equal load
    assert picker.pick(c) is b
    c.rng = ScriptedRandom([0.1, 0.9])
    assert picker.pick(c) is a


def test_fewer_active_beats_earlier_draw() -> None:
    a, b = endpoints(2)
    picker = LeastRequestPicker((a, b))
    c = ctx(stats=_stats({b.key: 1}))
    c.rng = ScriptedRandom([0.9, 0.1])
    assert picker.pick(c) is a


def test_weighted_bias_zero_is_weighted_round_robin() -> None:
    hosts = endpoints(2, weights=[1, 3])
    picker = least_request_picker(hosts, [1.0, 3.0], bias=0.0)
    assert isinstance(picker, WeightedLeastRequestPicker)
    c = ctx(stats=_stats({hosts[1].key: 50}))  # load ignored with bias 0
    counts = Counter(picker.pick(c).key for _ in range(4000))
    assert counts == {hosts[0].key: 1000, hosts[1].key: 3000}


def test_weighted_load_divides_weight() -> None:
    # Weight 3 host with 2 active → effective 3/3 = 1: both hosts then share equally.
    hosts = endpoints(2, weights=[1, 3])
    picker = least_request_picker(hosts, [1.0, 3.0], bias=1.0)
    c = ctx(stats=_stats({hosts[1].key: 2}))
    counts = Counter(picker.pick(c).key for _ in range(4000))
    assert counts[hosts[1].key] == pytest.approx(2000, abs=5)


def test_weighted_bias_exponent() -> None:
    # Weight 8 with 3 active and bias 1.5: 8 / 4**1.5 = 1 → equal share with a weight-1 host.
    hosts = endpoints(2, weights=[1, 8])
    picker = WeightedLeastRequestPicker(hosts, [1.0, 8.0], bias=1.5)
    c = ctx(stats=_stats({hosts[1].key: 3}))
    counts = Counter(picker.pick(c).key for _ in range(4000))
    assert counts[hosts[1].key] == pytest.approx(2000, abs=10)
