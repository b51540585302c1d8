from __future__ import annotations

import pytest

from meshlib.balancing import PriorityPlan, level_health, plan_priorities, priority_loads


@pytest.mark.parametrize(
    ("available", "total", "health"),
    [(10, 10, 100), (8, 10, 100), (7, 10, 98), (5, 10, 70), (3, 10, 42), (1, 3, 46), (0, 10, 0), (0, 0, 0)],
)
def test_level_health(available: int, total: int, health: int) -> None:
    assert level_health(available, total) == health


def test_p0_keeps_everything_until_below_71_4_percent() -> None:
    # 71.4% of 1000 hosts: 715 healthy → 140*715//1000 = 100; 714 → 99.
    assert priority_loads([level_health(715, 1000), 100]) == (100, 0)
    assert priority_loads([level_health(714, 1000), 100]) == (99, 1)


@pytest.mark.parametrize(
    ("available", "total", "loads"),
    [
        ([5, 10], [10, 10], (70, 30)),  # health 70 + 100 → NTH 100
        ([8, 10], [10, 10], (100, 0)),
        ([7, 10], [10, 10], (98, 2)),
        ([3, 3], [10, 10], (50, 50)),  # health 42 + 42, NTH 84: 42*100//84 = 50 each
        ([1, 1], [3, 3], (50, 50)),  # 46 + 46 → 50 / 50
        ([0, 10], [10, 10], (0, 100)),
        ([2, 5, 10], [10, 10, 10], (28, 70, 2)),  # 28 + 70 + 100 → NTH 100
        # Rounding remainder goes to the first healthy level: 20, 23, 15 (NTH 58) →
        # 34, 39, 25 = 98, +2 on P0.
        ([1, 1, 1], [7, 6, 9], (36, 39, 25)),
        ([0, 1, 1], [5, 7, 6], (0, 47, 53)),  # 0, 20, 23 (NTH 43): 46, 53 → +1 on P1
    ],
)
def test_priority_loads_table(available: list[int], total: list[int], loads: tuple[int, ...]) -> None:
    plan = plan_priorities(available, total, 0.0)
    assert plan.loads == loads
    assert sum(plan.loads) == 100


def test_all_unhealthy_panics_on_p0_when_threshold_positive() -> None:
    assert plan_priorities([0, 0], [10, 10], 50.0) == PriorityPlan((100, 0), (True, True))


def test_all_unhealthy_with_threshold_zero_has_no_host() -> None:
    plan = plan_priorities([0, 0], [10, 10], 0.0)
    assert plan.no_host


@pytest.mark.parametrize(
    ("available", "total", "threshold", "panic"),
    [
        ([4], [10], 50.0, (True,)),  # 40% < 50%
        ([5], [10], 50.0, (False,)),  # 50% is not below 50%
        ([6], [10], 50.0, (False,)),
        ([4], [10], 0.0, (False,)),  # threshold 0 disables panic
        ([3, 10], [10, 10], 50.0, (False, False)),  # NTH == 100: nobody panics
        ([3, 2], [10, 10], 50.0, (True, True)),  # NTH 70
        ([6, 2], [10, 10], 50.0, (False, False)),  # health 84 + 28 → NTH 100: no panic anywhere
    ],
)
def test_panic_flags(
    available: list[int], total: list[int], threshold: float, panic: tuple[bool, ...]
) -> None:
    assert plan_priorities(available, total, threshold).panic == panic
