"""Retry budgets: how many retries a cluster may send, beyond each request's own limit.

A per-request ``num_retries`` bounds one request; it does not stop a fleet of
clients from multiplying load by ``1 + num_retries`` exactly when the upstream
is failing — a retry storm. Two budget shapes bound that:

- :class:`ConcurrencyRetryBudget` — Envoy's ``retry_budget`` circuit breaker:
  concurrent retries ≤ ``max(min_retry_concurrency, budget_percent% ×
  (active + pending))``, defaults 20% and 3. It replaces ``max_retries`` when
  configured (:class:`meshlib.resilience.limits.ClusterLimits` applies it).
  Concurrency-shaped: it caps retries *in flight*, not retries per second.
- :class:`TokenRetryBudget` — Finagle's ``RetryBudget`` (``TokenRetryBudget``
  over a ``WindowedAdder``): every request deposits, every retry withdraws, the
  balance counts over a sliding ``ttl`` window, plus a fixed reserve so that a
  quiet client can still retry. Defaults ttl 10 s, ``min_retries_per_sec`` 10,
  ``percent_can_retry`` 0.2. Rate-shaped: retries ≤ 20% of requests over the
  last 10 s, plus 100 (10/s × 10 s) that refill as old withdrawals expire.

**meshlib's default (a deliberate extra over Istio):** every cluster gets a
``TokenRetryBudget(ttl 10 s, 10/s, 20%)`` — see :func:`default_retry_budget` —
in addition to Envoy's ``max_retries`` circuit breaker from the
DestinationRule. Why:

1. Istio sets ``max_retries`` to 2³²−1, so under Istio defaults nothing but
   the per-request attempt count limits retries: a hard-down upstream sees
   3× its normal load (mesh default of 2 retries). The token budget caps that
   at ~1.2× once the reserve is spent, which is Finagle's production-proven
   answer to retry storms.
2. It is rate-based, so it still bounds amplification when requests are short
   and concurrency is low — the case where Envoy's concurrency budget (20% of
   a handful in flight, floor 3) lets nearly every failed request retry.
3. The 10/s reserve keeps retries available to low-traffic clients and right
   after start-up, where a pure percentage would allow none.

An explicit Envoy ``retry_budget`` (via xDS) is honoured as Envoy honours it.

Both classes are pure, O(1) per operation and take ``now`` (monotonic seconds)
from the caller. They are not thread-safe: one event loop owns them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Finagle's scale factor: deposits and withdrawals are integers in thousandths
# so that a 20% budget (withdrawal = 1000 / 0.2 = 5000) stays exact.
_SCALE = 1000
_SLICES = 10  # Finagle's WindowedAdder splits the ttl into 10 slices


@dataclass(frozen=True, slots=True)
class ConcurrencyRetryBudget:
    """Envoy's ``circuit_breakers.thresholds.retry_budget``."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget_percent <= 100.0:
            raise ValueError(f"budget_percent must be in 0..100, got {self.budget_percent}")
        if self.min_retry_concurrency < 0:
            raise ValueError(f"min_retry_concurrency must be >= 0, got {self.min_retry_concurrency}")

    def max_retries(self, active_requests: int, pending_requests: int) -> int:
        """Concurrent retries allowed now; Envoy truncates the percentage to an integer."""
        by_percent = int(self.budget_percent / 100.0 * (active_requests + pending_requests))
        return max(by_percent, self.min_retry_concurrency)


class TokenRetryBudget:
    """Finagle's token retry budget over a sliding window of ``ttl_s``.

    The window is ``_SLICES`` time-aligned buckets of ``ttl_s / _SLICES`` each,
    kept with a running total, so every operation is O(1) (at most ``_SLICES``
    buckets are cleared when the clock has jumped). A deposit or withdrawal
    leaves the balance between ``ttl_s − slice`` and ``ttl_s`` later, as with
    Finagle's ``WindowedAdder``.
    """

    __slots__ = (
        "_buckets",
        "_deposit",
        "_reserve",
        "_slice_end",
        "_slice_index",
        "_slice_s",
        "_slot",
        "_total",
        "_withdrawal",
        "min_retries_per_sec",
        "percent_can_retry",
        "ttl_s",
    )

    def __init__(
        self, ttl_s: float = 10.0, min_retries_per_sec: float = 10.0, percent_can_retry: float = 0.2
    ) -> None:
        # Finagle's bounds: ttl in [1 s, 60 s], percent in [0, 1000] (×1000 scale).
        if not 1.0 <= ttl_s <= 60.0:
            raise ValueError(f"ttl_s must be between 1 and 60 seconds, got {ttl_s}")
        if min_retries_per_sec < 0:
            raise ValueError(f"min_retries_per_sec must be >= 0, got {min_retries_per_sec}")
        if not 0.0 <= percent_can_retry <= 1000.0:
            raise ValueError(f"percent_can_retry must be in 0..1000, got {percent_can_retry}")
        self.ttl_s = ttl_s
        self.min_retries_per_sec = min_retries_per_sec
        self.percent_can_retry = percent_can_retry
        # With no percentage, requests earn nothing and a retry costs one unit:
        # only the reserve (min_retries_per_sec × ttl) remains, as in Finagle.
        if percent_can_retry == 0.0:
            self._deposit = 0
            self._withdrawal = 1
        else:
            self._deposit = _SCALE
            self._withdrawal = int(_SCALE / percent_can_retry)
        self._reserve = int(min_retries_per_sec * ttl_s * self._withdrawal)
        self._slice_s = ttl_s / _SLICES
        self._buckets = [0] * _SLICES
        self._total = 0
        self._slice_index: int | None = None
        self._slot = 0  # the current slice's bucket
        self._slice_end = -math.inf  # where the current slice ends: a deposit before it needs no window move

    def _advance(self, now: float) -> None:
        """Move the window to the slice holding ``now``, expiring older slices."""
        index = math.floor(now / self._slice_s)
        last = self._slice_index
        if last is None:
            self._enter(index)
            return
        gap = index - last
        if gap <= 0:
            # Same slice, or a clock that went backwards: keep writing here.
            return
        buckets = self._buckets
        if gap >= _SLICES:
            for i in range(_SLICES):
                buckets[i] = 0
            self._total = 0
        else:
            for step in range(1, gap + 1):
                slot = (last + step) % _SLICES
                self._total -= buckets[slot]
                buckets[slot] = 0
        self._enter(index)

    def _enter(self, index: int) -> None:
        self._slice_index = index
        self._slot = index % _SLICES
        # The first time floor(now / slice) calls the next slice: the product can be an ulp off that.
        slice_s = self._slice_s
        end = (index + 1) * slice_s
        while math.floor(end / slice_s) <= index:
            end = math.nextafter(end, math.inf)
        while math.floor(math.nextafter(end, -math.inf) / slice_s) > index:
            end = math.nextafter(end, -math.inf)
        self._slice_end = end

    def _put(self, amount: int) -> None:
        """Add to the current slice; :meth:`_advance` must have run for this ``now``."""
        self._buckets[self._slot] += amount
        self._total += amount

    def deposit(self, now: float) -> None:
        """Credit one request (call once per original request, not per retry).

        Runs once per request: while ``now`` is still in the current slice (or
        before it: a clock that went backwards keeps writing there) the deposit
        is two additions; only a new slice moves the window.
        """
        amount = self._deposit
        if now >= self._slice_end:
            self._advance(now)
        self._buckets[self._slot] += amount
        self._total += amount

    def try_withdraw(self, now: float) -> bool:
        """Take the cost of one retry; ``False`` means the budget is spent — do not retry."""
        self._advance(now)
        if self._total + self._reserve >= self._withdrawal:
            self._put(-self._withdrawal)
            return True
        return False

    def balance(self, now: float) -> int:
        """Retries affordable right now."""
        self._advance(now)
        return max(self._total + self._reserve, 0) // self._withdrawal

    def __repr__(self) -> str:
        return (
            f"TokenRetryBudget(ttl_s={self.ttl_s}, min_retries_per_sec={self.min_retries_per_sec}, "
            f"percent_can_retry={self.percent_can_retry})"
        )


def default_retry_budget() -> TokenRetryBudget:
    """meshlib's per-cluster default: Finagle's ttl 10 s, 10 retries/s reserve, 20% of requests."""
    return TokenRetryBudget(ttl_s=10.0, min_retries_per_sec=10.0, percent_can_retry=0.2)
