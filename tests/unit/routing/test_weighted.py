"""Weighted destinations: relative weights, zero weights dropped, precomputed per table."""

from __future__ import annotations

import gc
import random
from collections import Counter

from meshlib.config.model import Route
from meshlib.routing import RouteTable, WeightedPicker, destination_percents, pick_destination
from meshlib.routing import weighted as weighted_module

from .helpers import dest, route, snapshot


def draws(r: Route, n: int, seed: int = 7) -> Counter[str | None]:
    rng = random.Random(seed)
    counts: Counter[str | None] = Counter()
    for _ in range(n):
        d = pick_destination(r, rng)
        counts[None if d is None else d.subset] += 1
    return counts


def test_single_destination_always_wins_whatever_its_weight() -> None:
    r = route("r", destinations=(dest("v1", 0),))
    assert pick_destination(r, random.Random(1)) == dest("v1", 0)
    assert destination_percents(r) == [(dest("v1", 0), 100.0)]


def test_relative_weights_not_summing_to_100() -> None:
    r = route("r", destinations=(dest("v1", 1), dest("v2", 3)))
    counts = draws(r, 20_000)
    assert 0.23 < counts["v1"] / 20_000 < 0.27
    assert 0.73 < counts["v2"] / 20_000 < 0.77
    assert destination_percents(r) == [(dest("v1", 1), 25.0), (dest("v2", 3), 75.0)]


def test_zero_weights_are_dropped() -> None:
    r = route("r", destinations=(dest("v1", 0), dest("v2", 50), dest("v3", 50)))
    counts = draws(r, 5_000)
    assert counts["v1"] == 0
    assert counts["v2"] + counts["v3"] == 5_000
    assert [d.subset for d, _ in destination_percents(r)] == ["v2", "v3"]


def test_zero_weights_leaving_one() -> None:
    r = route("r", destinations=(dest("v1", 0), dest("v2", 10)))
    assert set(draws(r, 100)) == {"v2"}


def test_all_zero_and_empty_give_none() -> None:
    assert pick_destination(route("r", destinations=(dest("v1", 0), dest("v2", 0))), random.Random(1)) is None
    assert pick_destination(route("r", destinations=()), random.Random(1)) is None
    assert destination_percents(route("r", destinations=(dest("v1", 0), dest("v2", 0)))) == []
    assert WeightedPicker(route("r", destinations=())).pick(random.Random(1)) is None


def test_deterministic_with_seeded_rng() -> None:
    r = route("r", destinations=(dest("v1", 80), dest("v2", 20)))
    assert draws(r, 500, seed=3) == draws(r, 500, seed=3)


def test_compiled_table_registers_pickers_and_forgets_them() -> None:
    r = route("r", destinations=(dest("v1", 90), dest("v2", 10)))
    table = RouteTable.compile(snapshot((r,)))
    picker = weighted_module._PICKERS.get(id(r))
    assert picker is not None
    assert picker.route is r
    counts = draws(r, 10_000)
    assert 0.88 < counts["v1"] / 10_000 < 0.92
    del table
    gc.collect()
    assert weighted_module._PICKERS.get(id(r)) is None
    assert draws(r, 10) is not None  # still works uncompiled


def test_picker_and_function_agree() -> None:
    r = route("r", destinations=(dest("a", 5), dest("b", 0), dest("c", 7), dest("d", 1)))
    picker = WeightedPicker(r)
    rng1, rng2 = random.Random(11), random.Random(11)
    assert [picker.pick(rng1) for _ in range(200)] == [pick_destination(r, rng2) for _ in range(200)]
