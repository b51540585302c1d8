"""Reading Consul JSON: key aliases, Go durations, and problems named ``consul <kind>/<name>: <field>``.

Consul accepts a config entry's keys in CamelCase (``PathPrefix``, the API's
own form) and snake_case (``path_prefix``, the HCL/CLI alias), so keys are
matched after dropping underscores and case. Keys of user maps (subset
names, ``Meta``, header names) are data and are matched exactly.

Durations are Go ``time.Duration`` text (``"15s"``, ``"1m30s"``, ``"500ms"``);
a JSON number is a count of nanoseconds, as Go's encoder writes a Duration.

>>> parse_go_duration("1m30s")
90.0
>>> go_duration_string(90.0), go_duration_string(5.0), go_duration_string(0.25)
('1m30s', '5s', '250ms')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.discovery.consul.go_duration import format_go_duration, parse_go_duration_nanos
from meshlib.errors import ConfigProblem

MAX_DURATION_S = 315_360_000.0  # ten years: anything longer is a typo, and Go's int64 tops out near 292 years


@dataclass(frozen=True, slots=True)
class ConsulProblem(ConfigProblem):
    """A :class:`ConfigProblem` about a Consul object: ``kind`` is the config-entry kind (or ``health``),
    ``name`` the entry or service name, ``file`` is ``consul``; it renders as
    ``consul <kind>/<name>: <field>: <message>``."""

    def __str__(self) -> str:
        parts = [f"{self.file} {self.kind}/{self.name}"]
        if self.field:
            parts.append(self.field)
        parts.append(f"warning: {self.message}" if self.is_warning else self.message)
        return ": ".join(parts)


def problem(kind: str, name: str, field: str, message: str) -> ConfigProblem:
    """A problem rendered as ``consul <kind>/<name>: <field>: <message>``.

    >>> p = problem("service-splitter", "web", "Splits", "no splits configured")
    >>> str(p), p.kind, p.name
    ('consul service-splitter/web: Splits: no splits configured', 'service-splitter', 'web')
    """
    return ConsulProblem(file="consul", line=0, kind=kind, name=name, field=field, message=message)


def normalize_key(key: str) -> str:
    """``PathPrefix`` / ``path_prefix`` / ``pathprefix`` → ``pathprefix``."""
    return key.replace("_", "").replace("-", "").lower()


class Fields:
    """A JSON object read by normalized key, remembering its field path for messages."""

    __slots__ = ("_items", "path")

    def __init__(self, raw: Mapping[str, Any], path: str = "") -> None:
        self.path = path
        self._items: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(key, str):
                self._items.setdefault(normalize_key(key), value)

    def get(self, name: str) -> Any:
        return self._items.get(normalize_key(name))

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def at(self, name: str) -> str:
        """The path of field ``name`` under this object (``Routes[0].Match``)."""
        return f"{self.path}.{name}" if self.path else name


class FieldError(ValueError):
    """A value of the wrong type or range; ``field`` is its path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def as_object(value: Any, field: str, *, required: bool = False) -> Mapping[str, Any] | None:
    if value is None:
        if required:
            raise FieldError(field, "is required")
        return None
    if not isinstance(value, Mapping):
        raise FieldError(field, f"must be an object, not {_json_type(value)}")
    return value


def object_at(value: Any, path: str) -> Fields:
    """A required JSON object at ``path``, as :class:`Fields`; :class:`FieldError` when absent or not an object."""
    return Fields(as_object(value, path, required=True) or {}, path)


def objects_in(parent: Fields, key: str, limit: int) -> Iterator[Fields]:
    """The first ``limit`` items of the list field ``key``, each a required object (paths ``Key[0]``, ``Key[1]``…)."""
    for index, item in enumerate(as_list(parent.get(key), parent.at(key))[:limit]):
        yield object_at(item, f"{parent.at(key)}[{index}]")


def as_list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise FieldError(field, f"must be a list, not {_json_type(value)}")
    return list(value)


def as_str(value: Any, field: str, *, max_length: int = 1024) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(field, f"must be a string, not {_json_type(value)}")
    if len(value) > max_length:
        raise FieldError(field, f"longer than {max_length} characters")
    return value


def as_bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise FieldError(field, f"must be true or false, not {_json_type(value)}")
    return value


def as_int(value: Any, field: str, *, minimum: int = 0, maximum: int = 2**32 - 1) -> int | None:
    """An integer in range; None when absent. Whole floats (JSON ``5.0``) are accepted."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(field, f"must be an integer, not {_json_type(value)}")
    number: int
    if isinstance(value, float):
        if not value.is_integer():
            raise FieldError(field, f"must be an integer, not {value}")
        number = int(value)
    else:
        number = value
    if number < minimum or number > maximum:
        raise FieldError(field, f"must be between {minimum} and {maximum}, not {number}")
    return number


def as_float(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(field, f"must be a number, not {_json_type(value)}")
    return float(value)


def as_duration(value: Any, field: str) -> float | None:
    """A Go duration (text, or a JSON number of nanoseconds) in seconds; None when absent.

    Negative values are returned as such: the callers apply Consul's own
    ``must be >= 0`` rules with Consul's messages.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError(field, f"must be a duration such as \"5s\", not {_json_type(value)}")
    if isinstance(value, int | float):
        seconds = float(value) / 1e9
    elif isinstance(value, str):
        parsed = parse_go_duration(value)
        if parsed is None:
            raise FieldError(field, f"invalid duration {value!r} (Go syntax: \"300ms\", \"1.5s\", \"2m\")")
        seconds = parsed
    else:
        raise FieldError(field, f"must be a duration such as \"5s\", not {_json_type(value)}")
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION_S:
        raise FieldError(field, f"duration {value!r} is out of range")
    return seconds


def parse_go_duration(text: str) -> float | None:
    """Go's ``time.ParseDuration`` in seconds (sign allowed); None when the text is not a duration."""
    nanos = parse_go_duration_nanos(text)
    return None if nanos is None else nanos / 1e9


def go_duration_string(seconds: float) -> str:
    """Go's ``time.Duration.String()`` (``1m0s``, ``1.5s``, ``250ms``, ``0s``), as Consul renders durations."""
    return format_go_duration(round(seconds * 1e9))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
