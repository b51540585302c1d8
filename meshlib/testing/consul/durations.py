"""Go ``time.Duration`` text, as Consul reads and writes it.

Consul's JSON carries durations two ways: requests may send a Go duration
string (``"10s"``, ``"1m30s"``, ``"500ms"``) or a number of nanoseconds;
responses always carry the string that Go's ``Duration.String()`` prints
(``"1m0s"`` for a minute, ``"0s"`` for zero). Both directions live here so the
emulator answers exactly what an agent would.

>>> parse_go_duration("1m30s")
90000000000
>>> format_go_duration(60_000_000_000)
'1m0s'
>>> format_go_duration(1_500_000)
'1.5ms'
"""

from __future__ import annotations

import re

_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|h|m|s)")
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
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{value}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            if _PART.match(text + "s", pos) is not None and text[pos:].replace(".", "").isdigit():
                raise DurationError(f'time: missing unit in duration "{value}"')
            raise DurationError(f'time: invalid duration "{value}"')
        total += float(match.group(1)) * _NANOS[match.group(2)]
        pos = match.end()
    if total > MAX_DURATION_NANOS:
        raise DurationError(f'time: invalid duration "{value}"')
    return sign * round(total)


def _fraction(value: int, digits: int) -> str:
    """``value`` / 10**digits with trailing zeros dropped (Go's fmtFrac)."""
    whole, frac = divmod(value, 10**digits)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"


def format_go_duration(nanos: int) -> str:
    """What Go's ``time.Duration(nanos).String()`` prints."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1_000:
        return f"{sign}{n}ns"
    if n < 1_000_000:
        return f"{sign}{_fraction(n, 3)}µs"
    if n < 1_000_000_000:
        return f"{sign}{_fraction(n, 6)}ms"
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _fraction(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"
