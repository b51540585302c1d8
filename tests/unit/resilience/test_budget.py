"""Envoy's concurrency retry budget and Finagle's token retry budget."""

from __future__ import annotations

import pytest

from meshlib.resilience.budget import ConcurrencyRetryBudget, TokenRetryBudget, default_retry_budget


@pytest.mark.parametrize(
    ("active", "pending", "allowed"),
    [(0, 0, 3), (10, 0, 3), (15, 0, 3), (20, 0, 4), (100, 0, 20), (60, 40, 20), (104, 0, 20), (1000, 0, 200)],
)
def test_envoy_retry_budget_arithmetic(active: int, pending: int, allowed: int) -> None:
    assert ConcurrencyRetryBudget().max_retries(active, pending) == allowed


def test_envoy_retry_budget_custom_and_validation() -> None:
    assert ConcurrencyRetryBudget(budget_percent=50.0, min_retry_concurrency=1).max_retries(3, 0) == 1
    assert ConcurrencyRetryBudget(budget_percent=50.0, min_retry_concurrency=1).max_retries(10, 0) == 5
    with pytest.raises(ValueError, match="budget_percent"):
        ConcurrencyRetryBudget(budget_percent=120.0)
    with pytest.raises(ValueError, match="min_retry_concurrency"):
        ConcurrencyRetryBudget(min_retry_concurrency=-1)


def test_deposits_allow_twenty_percent() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=0.0, percent_can_retry=0.2)
    now = 100.0
    assert budget.balance(now) == 0
    assert not budget.try_withdraw(now)
    for _ in range(100):
        budget.deposit(now)
    assert budget.balance(now) == 20
    assert all(budget.try_withdraw(now) for _ in range(20))
    assert not budget.try_withdraw(now)
    assert budget.balance(now) == 0


def test_minimum_retries_per_second_is_a_reserve_over_ttl() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=10.0, percent_can_retry=0.2)
    now = 0.0
    # No traffic yet: 10/s × 10 s = 100 retries in reserve.
    assert budget.balance(now) == 100
    assert sum(budget.try_withdraw(now) for _ in range(150)) == 100
    # Withdrawals expire after ttl, restoring the reserve.
    assert budget.balance(now + 5.0) == 0
    assert budget.balance(now + 10.5) == 100


def test_percent_and_reserve_add_up() -> None:
    budget = default_retry_budget()
    now = 50.0
    for _ in range(1000):
        budget.deposit(now)
    assert budget.balance(now) == 100 + 200


def test_deposits_expire_after_ttl() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=0.0, percent_can_retry=0.2)
    for _ in range(50):
        budget.deposit(0.0)
    assert budget.balance(0.0) == 10
    assert budget.balance(8.9) == 10  # still inside the window
    assert budget.balance(10.0) == 0  # the slice holding t=0 has rolled out
    assert not budget.try_withdraw(10.0)


def test_sliding_window_expires_slice_by_slice() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=0.0, percent_can_retry=1.0)
    for second in range(10):
        budget.deposit(float(second))  # one deposit in each 1 s slice
    assert budget.balance(9.5) == 10
    assert budget.balance(10.5) == 9
    assert budget.balance(14.5) == 5
    assert budget.balance(1000.0) == 0  # a long jump clears everything


def test_zero_percent_leaves_only_the_reserve() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=1.0, percent_can_retry=0.0)
    for _ in range(1000):
        budget.deposit(0.0)
    assert budget.balance(0.0) == 10
    assert sum(budget.try_withdraw(0.0) for _ in range(20)) == 10


def test_clock_going_backwards_is_harmless() -> None:
    budget = TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=0.0, percent_can_retry=0.5)
    budget.deposit(5.0)
    budget.deposit(4.0)
    assert budget.balance(4.0) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttl_s": 0.5}, "ttl_s"),
        ({"ttl_s": 61.0}, "ttl_s"),
        ({"min_retries_per_sec": -1.0}, "min_retries"),
        ({"percent_can_retry": -0.1}, "percent_can_retry"),
        ({"percent_can_retry": 1001.0}, "percent_can_retry"),
    ],
)
def test_token_budget_validation(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TokenRetryBudget(**kwargs)


def test_a_deposit_lands_in_the_slice_floor_of_its_time_names() -> None:
    """The fast path's slice end agrees with floor(now / slice) to the ulp, for a slice not exact in binary."""
    import math

    budget = TokenRetryBudget(ttl_s=3.0, min_retries_per_sec=0.0, percent_can_retry=0.2)  # 0.3 s slices
    slice_s = 3.0 / 10
    for index in range(1, 200):
        edge = index * slice_s
        for now in (math.nextafter(edge, -math.inf), edge, math.nextafter(edge, math.inf)):
            budget.deposit(now)
            assert budget._slot == math.floor(now / slice_s) % 10, (index, now)
