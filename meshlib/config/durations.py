"""Istio duration strings → float seconds.

Istio's CRDs accept Go ``time.ParseDuration`` text (``1h30m``, ``1.5s``,
``100ms``, ``250us``, ``10ns``) as well as the protobuf JSON form, which is the
special case ``<decimal>s``. A bare ``0`` is valid in Go and means zero.
Negative durations, a missing unit and YAML numbers (``timeout: 5``) are
rejected: Istio rejects them too, and a unit-less number is ambiguous.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,  # both micro signs Go accepts
    "μs": 1e-6,
    "ns": 1e-9,
}
# Longest units first so "ms" is not read as "m" followed by "s".
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")


def parse_duration(text: object) -> float | None:
    """Return the duration in seconds, or None when ``text`` is not a valid duration."""
    if not isinstance(text, str) or isinstance(text, bool):
        return None
    value = text.strip()
    if value == "0":
        return 0.0
    if not value:
        return None
    total = 0.0
    pos = 0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Short human form used in messages (``1ms``, ``2.5s``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
