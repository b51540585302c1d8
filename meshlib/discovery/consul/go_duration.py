"""Go ``time.Duration`` text, as Consul reads and writes it: one grammar, one printer.

Shared by the Consul config reader (:mod:`meshlib.discovery.consul.fields`, durations in
seconds) and the Consul emulator (:mod:`meshlib.testing.consul.durations`, integer
nanoseconds with Go's error messages); each applies its own bounds and error style.

>>> scan_go_duration("1m30s")
(90000000000.0, 5)
>>> scan_go_duration("1m30")        # stops where no number+unit part starts
(60000000000.0, 2)
>>> format_go_duration(90_000_000_000), format_go_duration(1_500_000), format_go_duration(0)
('1m30s', '1.5ms', '0s')
"""

from __future__ import annotations

import re

MAX_GO_DURATION_TEXT = 64  # characters after the sign; a longer text is refused unread

NANOS_PER_UNIT = {
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
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def scan_go_duration(body: str) -> tuple[float, int]:
    """Sum the ``<number><unit>`` parts at the start of ``body`` (no sign).

    Returns the nanoseconds (a float: unrounded, unbounded) and the index where scanning
    stopped; ``body`` is a whole duration when that index is ``len(body)``.
    """
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            break
        total += float(match.group(1)) * NANOS_PER_UNIT[match.group(2)]
        pos = match.end()
    return total, pos


def parse_go_duration_nanos(text: str) -> float | None:
    """Go's ``time.ParseDuration`` grammar: nanoseconds with the sign applied (a float, not
    range-checked), or None when ``text`` is not a duration (or is longer than
    :data:`MAX_GO_DURATION_TEXT` after its sign).

    >>> parse_go_duration_nanos(" -1.5s "), parse_go_duration_nanos("0"), parse_go_duration_nanos("10")
    (-1500000000.0, 0.0, None)
    """
    value = text.strip()
    sign = 1.0
    if value[:1] in "+-" and value:
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == "0":
        return 0.0
    if not value or len(value) > MAX_GO_DURATION_TEXT:
        return None
    total, stop = scan_go_duration(value)
    if stop != len(value):
        return None
    return sign * total


def lacks_unit(text: str) -> bool:
    """Whether ``text`` fails as a duration only because its last number has no unit (``"1m30"``, ``"10"``)."""
    value = text.strip()
    if value[:1] in "+-" and value:
        value = value[1:]
    _, stop = scan_go_duration(value)
    return stop < len(value) and _NUMBER.fullmatch(value, stop) is not None


def format_go_duration(nanos: int) -> str:
    """What Go's ``time.Duration(nanos).String()`` prints (``1m0s``, ``1.5s``, ``250ms``, ``0s``)."""
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


def _fraction(value: int, digits: int) -> str:
    """``value`` / 10**digits with trailing zeros dropped (Go's fmtFrac)."""
    whole, frac = divmod(value, 10**digits)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"
