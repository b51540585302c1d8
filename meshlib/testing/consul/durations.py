"""Go ``time.Duration`` text, as Consul reads and writes it.

Consul's JSON carries durations two ways: requests may send a Go duration
string (``"10s"``, ``"1m30s"``, ``"500ms"``) or a number of nanoseconds;
responses always carry the string that Go's ``Duration.String()`` prints
(``"1m0s"`` for a minute, ``"0s"`` for zero). Both directions live here so the
emulator answers exactly what an agent would. The grammar and the printer are
:mod:`meshlib.discovery.consul.go_duration`'s; this module adds Go's errors and bounds.

>>> parse_go_duration("1m30s")
90000000000
>>> format_go_duration(60_000_000_000)
'1m0s'
>>> format_go_duration(1_500_000)
'1.5ms'
"""

from __future__ import annotations

from meshlib.discovery.consul.go_duration import format_go_duration, lacks_unit, parse_go_duration_nanos

__all__ = ["MAX_DURATION_NANOS", "DurationError", "format_go_duration", "parse_go_duration"]

MAX_DURATION_NANOS = (1 << 63) - 1  # Go's time.Duration is an int64


class DurationError(ValueError):
    """Text that Go's ``time.ParseDuration`` would reject."""


def parse_go_duration(value: object) -> int:
    """Nanoseconds from a Go duration string or a JSON number (nanoseconds).

    Raises :class:`DurationError` with Go's wording (``time: invalid duration "x"``).
    """
    if isinstance(value, bool):
        raise DurationError(f"time: invalid duration {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if not isinstance(value, str):
        raise DurationError(f"time: invalid duration {value!r}")
    text = value.strip()
    if len(text) > 64:
        raise DurationError(f'time: invalid duration "{text[:64]}…"')
    total = parse_go_duration_nanos(text)
    if total is None:
        if lacks_unit(text):
            raise DurationError(f'time: missing unit in duration "{value}"')
        raise DurationError(f'time: invalid duration "{value}"')
    if abs(total) > MAX_DURATION_NANOS:
        raise DurationError(f'time: invalid duration "{value}"')
    return round(total)
