"""Istio duration strings → seconds, bounded as Istio bounds them.

Istio's CRDs accept Go ``time.ParseDuration`` text (``1h30m``, ``1.5s``,
``100ms``, ``250us``, ``10ns``) as well as the protobuf JSON form, which is the
special case ``<decimal>s``. A bare ``0`` is valid in Go and means zero.
Negative durations, a missing unit and YAML numbers (``timeout: 5``) are
rejected: Istio rejects them too, and a unit-less number is ambiguous.

Bounds, so that anything that validates can also be encoded and scheduled:

- Go's ``time.Duration`` is int64 nanoseconds: ParseDuration refuses anything
  above :data:`MAX_DURATION_NS` (about 292 years) — well inside protobuf's
  ``Duration`` range (:data:`PROTOBUF_MAX_SECONDS`, 10,000 years).
  ``99999999999999999999h`` is therefore invalid, never ``Infinity``.
- Istio's ``ValidateDuration`` (most fields): at least 1 ms, and a whole number
  of milliseconds; :func:`duration_problem` applies it.

Parsing is exact (integer nanoseconds), so ``0.001s`` is exactly 1 ms.

>>> parse_duration("1h30m"), parse_duration("0.5s"), parse_duration("99999999999999999999h")
(5400.0, 0.5, None)
>>> duration_problem(parse_duration_ns("1.5ms"))
'only durations to ms precision are supported'
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration: 2562047h47m16.854775807s
PROTOBUF_MAX_SECONDS = 315_576_000_000
MAX_DURATION_S = MAX_DURATION_NS / NS_PER_S
MAX_TEXT_LENGTH = 64

_UNIT_NS = {
    "h": 3600 * NS_PER_S,
    "m": 60 * NS_PER_S,
    "s": NS_PER_S,
    "ms": NS_PER_MS,
    "us": 1000,
    "µs": 1000,  # both micro signs Go accepts
    "μs": 1000,
    "ns": 1,
}
# Longest units first so "ms" is not read as "m" followed by "s".
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")


def parse_duration_ns(text: object) -> int | None:
    """The duration in integer nanoseconds, or None when ``text`` is not a valid, in-range duration."""
    if not isinstance(text, str):
        return None
    value = text.strip()
    if value == "0":
        return 0
    if not value or len(value) > MAX_TEXT_LENGTH:
        return None
    total = 0
    pos = 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            return None
        try:
            amount = Decimal(match.group(1))
        except InvalidOperation:  # pragma: no cover - the pattern only admits decimals
            return None
        total += int(amount * _UNIT_NS[match.group(2)])  # Go truncates below a nanosecond
        if total > MAX_DURATION_NS:
            return None
        pos = match.end()
    return total


def parse_duration(text: object) -> float | None:
    """The duration in seconds, or None when ``text`` is not a valid, in-range duration."""
    ns = parse_duration_ns(text)
    return None if ns is None else ns / NS_PER_S


def duration_problem(ns: int | None, *, minimum_ns: int = NS_PER_MS, precision_ns: int = NS_PER_MS) -> str | None:
    """Istio's ``ValidateDuration``: why ``ns`` is not acceptable, or None.

    ``minimum_ns=0`` allows zero; ``precision_ns=NS_PER_S`` demands whole seconds
    (CORS ``maxAge``).
    """
    if ns is None:
        return "invalid duration"
    if ns < minimum_ns:
        return f"duration must be at least {format_duration(minimum_ns / NS_PER_S)}"
    if precision_ns > 1 and ns % precision_ns:
        unit = "ms" if precision_ns == NS_PER_MS else "seconds"
        return f"only durations to {unit} precision are supported"
    return None


def format_duration(seconds: float) -> str:
    """Short human form used in messages (``1ms``, ``2.5s``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
