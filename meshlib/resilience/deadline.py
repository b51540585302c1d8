"""Deadline propagation: one absolute deadline per request chain, in a contextvar.

Envoy can cap an outbound call by its route timeout but cannot know how much
of the *inbound* request's time is left. meshlib can (semantics.md §5): the
server middleware/interceptor turns an inbound ``grpc-timeout`` or
``x-envoy-expected-rq-timeout-ms`` into an absolute monotonic deadline and
opens a :func:`deadline_scope`; every outbound call then uses
``min(route timeout, deadline − now)`` (:func:`effective_timeout`), writes the
remainder back into ``grpc-timeout`` / ``x-envoy-expected-rq-timeout-ms``, and
fails locally with :class:`DeadlineExceeded` (DEADLINE_EXCEEDED / 504) when
nothing is left, instead of sending work nobody will wait for.

A contextvar is the carrier because asyncio copies the context into every
task it spawns, so a deadline follows ``create_task``/``gather`` fan-out
without any plumbing, and concurrent requests never see each other's.

Scopes only tighten: a nested :func:`deadline_scope` with a later deadline
keeps the outer one (a callee may not grant itself more time than its caller
has). Deadlines are monotonic seconds (``time.monotonic()``), never wall time;
``now`` is always passed in so tests use plain floats.

Header formats:

- ``grpc-timeout``: 1–8 ASCII digits and a unit ``H`` ``M`` ``S`` ``m`` ``u``
  ``n`` (gRPC over HTTP/2 spec). Formatting picks the finest unit that fits
  in 8 digits and rounds up, as grpc-go's ``encodeTimeout`` does.
- ``x-envoy-expected-rq-timeout-ms``: integer milliseconds (Envoy sets it to
  the route timeout when ``respect_expected_rq_timeout`` is on); ``0`` means
  no timeout, as 0 does for Envoy's timeout headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from meshlib.errors import MeshError

GRPC_TIMEOUT = "grpc-timeout"
EXPECTED_RQ_TIMEOUT_MS = "x-envoy-expected-rq-timeout-ms"

_deadline: ContextVar[float | None] = ContextVar("meshlib_deadline", default=None)

_GRPC_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Finest first, with the unit's size in nanoseconds, for formatting.
_UNITS_NS = (("n", 1), ("u", 1_000), ("m", 1_000_000), ("S", 10**9), ("M", 60 * 10**9), ("H", 3600 * 10**9))
_MAX_GRPC_TIMEOUT_VALUE = 99_999_999  # 8 digits


class DeadlineExceeded(MeshError):
    """The request's deadline passed before the call could be made (answer 504 / DEADLINE_EXCEEDED)."""

    def __init__(self, deadline: float, now: float) -> None:
        self.deadline = deadline
        self.now = now
        super().__init__(f"deadline exceeded {now - deadline:.6f}s ago")


def current_deadline() -> float | None:
    """The absolute (monotonic) deadline of the current request chain, or ``None``."""
    return _deadline.get()


@contextmanager
def deadline_scope(deadline: float | None) -> Iterator[float | None]:
    """Run the block under ``deadline`` (tightened by any outer one); restore on exit.

    Yields the deadline in force inside the block. ``None`` keeps the outer one.
    """
    outer = _deadline.get()
    keep_outer = deadline is None or (outer is not None and outer <= deadline)
    effective = outer if keep_outer else deadline
    token = _deadline.set(effective)
    try:
        yield effective
    finally:
        _deadline.reset(token)


def remaining_timeout(route_timeout_s: float | None, deadline: float | None, now: float) -> float | None:
    """``min(route timeout, deadline − now)``; ``None`` when neither bounds the call.

    A route timeout of ``None`` or ``0`` is "disabled" (Istio's default; Envoy's
    ``0s``). Raises :class:`DeadlineExceeded` when ``deadline ≤ now``.
    """
    route = route_timeout_s if route_timeout_s else None
    if deadline is None:
        return route
    left = deadline - now
    if left <= 0:
        raise DeadlineExceeded(deadline, now)
    return left if route is None or left < route else route


def effective_timeout(route_timeout_s: float | None, now: float) -> float | None:
    """:func:`remaining_timeout` against the contextvar's deadline."""
    return remaining_timeout(route_timeout_s, _deadline.get(), now)


# ---------------------------------------------------------------------- headers


def parse_grpc_timeout(value: str) -> float:
    """``grpc-timeout`` → seconds. Raises :class:`ValueError` when malformed."""
    match = _GRPC_TIMEOUT_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"malformed grpc-timeout {value!r}: want 1-8 digits and one of H M S m u n")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_grpc_timeout(seconds: float) -> str:
    """Seconds → ``grpc-timeout``: finest unit whose value fits 8 digits, rounded up."""
    if seconds <= 0:
        return "0n"
    # Round to whole nanoseconds first so float noise (1.1 × 1e9 = 1100000000.0000002)
    # does not bump the value up one unit.
    nanos = max(round(seconds * 1e9), 1)
    for unit, size in _UNITS_NS:
        value = -(-nanos // size)  # ceiling division: never shorten the caller's timeout
        if value <= _MAX_GRPC_TIMEOUT_VALUE:
            return f"{value}{unit}"
    return f"{_MAX_GRPC_TIMEOUT_VALUE}H"  # ~11,400 years: effectively unbounded


def parse_expected_rq_timeout_ms(value: str) -> float | None:
    """``x-envoy-expected-rq-timeout-ms`` → seconds, ``None`` for 0. Raises :class:`ValueError`."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"malformed {EXPECTED_RQ_TIMEOUT_MS} {value!r}: want a non-negative integer")
    millis = int(text)
    return millis / 1000.0 if millis else None


def format_expected_rq_timeout_ms(seconds: float) -> str:
    """Seconds → whole milliseconds, rounded up so the callee never gets less time than it has."""
    return str(max(math.ceil(seconds * 1000.0), 0))


def deadline_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """The absolute deadline an inbound request carries, or ``None``.

    ``grpc-timeout`` wins over ``x-envoy-expected-rq-timeout-ms``. A malformed
    value is ignored, as Envoy and gRPC servers ignore it, rather than failing
    the request. Header names are expected lower-case (HTTP/2 form).
    """
    grpc = headers.get(GRPC_TIMEOUT)
    if grpc is not None:
        try:
            return now + parse_grpc_timeout(grpc)
        except ValueError:
            pass
    expected = headers.get(EXPECTED_RQ_TIMEOUT_MS)
    if expected is not None:
        try:
            timeout = parse_expected_rq_timeout_ms(expected)
        except ValueError:
            return None
        return None if timeout is None else now + timeout
    return None
