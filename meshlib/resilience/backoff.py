"""Retry and reconnect backoff: Envoy's jittered exponential and gRPC's two schedules.

All functions are pure: they take the retry number and an injected
:class:`random.Random`, and return seconds to wait. Nothing here sleeps.

- **Envoy** (``JitteredExponentialBackOffStrategy``, used by the router's
  retry state): the n-th retry waits ``uniform[0, min(2^(n-1)·base, max))`` —
  "full jitter". Defaults base 25 ms, max 10 × base (250 ms). Istio's
  ``retries.backoff`` sets only the base, so the cap follows it at 10 × base
  unless the model says otherwise (``RetryPolicy.backoff_max_s``).
- **gRPC A6 retries**: the n-th retry waits
  ``random(0, min(initialBackoff × multiplier^(n-1), maxBackoff))`` — also full
  jitter (A6 text: "the initial retry attempt will occur at random(0,
  initialBackoff)").
- **gRPC connection backoff** (``doc/connection-backoff.md``, also used for xDS
  stream reconnects): ``min(initial × multiplier^(n-1), max) × U(1 − j, 1 + j)``
  with j = 0.2 — a *bounded* jitter around the exponential, never near zero.
  (semantics.md §4 attributes this ``× U(0.8, 1.2)`` form to A6; A6 itself
  uses full jitter, so both are provided under names that say which is which.)

Tenacity is too slow for the per-request path (~25 µs per call), but the
control path (xDS/Consul reconnect loops) may use it: :func:`wait_envoy_backoff`
and :func:`wait_grpc_connection_backoff` return tenacity-compatible ``wait``
callables without importing tenacity (it is not a runtime dependency).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

ENVOY_BASE_S = 0.025
ENVOY_MAX_FACTOR = 10  # Envoy: max_interval defaults to 10 × base_interval

GRPC_CONNECT_INITIAL_S = 1.0
GRPC_CONNECT_MULTIPLIER = 1.6
GRPC_CONNECT_MAX_S = 120.0
GRPC_CONNECT_JITTER = 0.2


def envoy_backoff_bound(retry_number: int, base_s: float = ENVOY_BASE_S, max_s: float | None = None) -> float:
    """The exclusive upper bound of the wait before retry ``retry_number`` (1-based)."""
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    cap = base_s * ENVOY_MAX_FACTOR if max_s is None else max_s
    # Envoy doubles the interval until it would pass the cap; cap the exponent
    # too so a long retry chain cannot overflow the float.
    return min(base_s * (1 << min(retry_number - 1, 62)), cap)


def envoy_backoff(
    retry_number: int, rng: random.Random, base_s: float = ENVOY_BASE_S, max_s: float | None = None
) -> float:
    """Seconds to wait before retry ``retry_number``: ``uniform[0, min(2^(n-1)·base, max))``."""
    return rng.random() * envoy_backoff_bound(retry_number, base_s, max_s)


def grpc_retry_backoff(
    retry_number: int,
    rng: random.Random,
    *,
    initial_s: float,
    multiplier: float,
    max_s: float,
) -> float:
    """gRPC A6: ``random(0, min(initial × multiplier^(n-1), max))`` before retry ``n`` (1-based).

    ``n`` counts retries since the last server pushback, as A6 specifies; the
    caller resets it when it honours ``grpc-retry-pushback-ms``.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    return rng.random() * min(initial_s * multiplier ** (retry_number - 1), max_s)


def grpc_connection_backoff(
    retry_number: int,
    rng: random.Random,
    *,
    initial_s: float = GRPC_CONNECT_INITIAL_S,
    multiplier: float = GRPC_CONNECT_MULTIPLIER,
    max_s: float = GRPC_CONNECT_MAX_S,
    jitter: float = GRPC_CONNECT_JITTER,
) -> float:
    """gRPC connection backoff: ``min(initial × multiplier^(n-1), max) × U(1 − jitter, 1 + jitter)``."""
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    base = min(initial_s * multiplier ** (retry_number - 1), max_s)
    return base * (1.0 - jitter + 2.0 * jitter * rng.random())


class _AttemptState(Protocol):
    """The part of tenacity's ``RetryCallState`` a wait strategy reads."""

    @property
    def attempt_number(self) -> int: ...


WaitStrategy = Callable[[_AttemptState], float]


def wait_envoy_backoff(
    base_s: float = ENVOY_BASE_S, max_s: float | None = None, rng: random.Random | None = None
) -> WaitStrategy:
    """A tenacity ``wait=`` callable using Envoy's schedule (control-path loops only).

    Tenacity calls ``wait`` after attempt k has failed, with
    ``attempt_number == k``; the coming retry is therefore retry number k.
    """
    source = rng if rng is not None else random.Random()

    def wait(state: _AttemptState) -> float:
        return envoy_backoff(max(state.attempt_number, 1), source, base_s, max_s)

    return wait


def wait_grpc_connection_backoff(
    initial_s: float = GRPC_CONNECT_INITIAL_S,
    multiplier: float = GRPC_CONNECT_MULTIPLIER,
    max_s: float = GRPC_CONNECT_MAX_S,
    jitter: float = GRPC_CONNECT_JITTER,
    rng: random.Random | None = None,
) -> WaitStrategy:
    """A tenacity ``wait=`` callable using gRPC's connection backoff (reconnect loops)."""
    source = rng if rng is not None else random.Random()

    def wait(state: _AttemptState) -> float:
        return grpc_connection_backoff(
            max(state.attempt_number, 1), source,
            initial_s=initial_s, multiplier=multiplier, max_s=max_s, jitter=jitter,
        )

    return wait
