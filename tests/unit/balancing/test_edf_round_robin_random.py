from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlib.balancing import EdfScheduler, RandomPicker, RoundRobinPicker, WeightedRoundRobinPicker
from meshlib.balancing.round_robin import round_robin_picker

from .helpers import CHI2_999, chi_square, ctx, endpoints


def test_edf_exact_sequence_small_weights() -> None:
    # A=1, B=2: deadlines A 1.0, B 0.5 → B; then A(1.0, inserted first) beats B(1.0) → A; …
    sched = EdfScheduler([1, 2])
    assert [sched.pick() for _ in range(8)] == [1, 0, 1, 1, 0, 1, 1, 0]


def test_edf_ties_break_by_insertion_order() -> None:
    sched = EdfScheduler([1, 1, 1])
    assert [sched.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_edf_exact_proportions_over_full_periods() -> None:
    sched = EdfScheduler([1, 2, 3])
    counts = Counter(sched.pick() for _ in range(6000))
    assert counts == {0: 1000, 1: 2000, 2: 3000}


def test_edf_readd_with_new_weight() -> None:
    sched = EdfScheduler([1, 1])
    first = sched.next_index()
    sched.readd(first, 0.001)  # pushed far into the future
    assert [sched.pick() for _ in range(5)] == [1, 1, 1, 1, 1]


def test_edf_rejects_non_positive_weight() -> None:
    with pytest.raises(ValueError, match="positive"):
        EdfScheduler([1, 0])


def test_round_robin_visits_every_host_once_per_cycle() -> None:
    hosts = endpoints(5)
    picker = RoundRobinPicker(hosts, start=3)
    c = ctx()
    seq = [picker.pick(c) for _ in range(10)]
    assert seq[:5] == [hosts[3], hosts[4], hosts[0], hosts[1], hosts[2]]
    assert seq[5:] == seq[:5]


def test_round_robin_starts_at_random_offset() -> None:
    hosts = endpoints(10)
    starts = {round_robin_picker(hosts, None, random.Random(seed)).pick(ctx()) for seed in range(50)}
    assert len(starts) > 5  # clients do not all begin at host 0


def test_weighted_round_robin_is_edf_over_weights() -> None:
    hosts = endpoints(2, weights=[1, 2])
    picker = round_robin_picker(hosts, [1.0, 2.0], random.Random(1))
    assert isinstance(picker, WeightedRoundRobinPicker)
    c = ctx()
    a, b = hosts
    assert [picker.pick(c) for _ in range(6)] == [b, a, b, b, a, b]


def test_round_robin_equal_weights_uses_cursor() -> None:
    picker = round_robin_picker(endpoints(3), [2.0, 2.0, 2.0], random.Random(1))
    assert isinstance(picker, RoundRobinPicker)


def test_random_is_uniform_and_ignores_weights() -> None:
    hosts = endpoints(10, weights=[1] * 9 + [100])
    picker = RandomPicker(hosts)
    c = ctx(7)
    counts = Counter(picker.pick(c).key for _ in range(20_000))
    assert chi_square(counts, {h.key: 2000.0 for h in hosts}) < CHI2_999[9]
