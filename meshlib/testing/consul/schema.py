"""Case-insensitive decoding of Consul JSON bodies into canonical keys.

Consul decodes request bodies leniently: field names match regardless of case,
and the snake_case aliases it documents (``service_subset``,
``deregister_critical_service_after``) mean the same field. py-consul relies on
this: it sends ``name``, ``id``, ``checks``. The emulator therefore decodes every
body through a small schema that maps any spelling to the canonical CamelCase
name Consul answers with, converts durations to Go duration text, and reports
type errors with the field path. Config entries are strict (Consul's decoder
rejects unknown keys: ``'' has invalid keys: X``); agent registration bodies
ignore unknown keys, as Go's ``encoding/json`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.testing.consul.durations import DurationError, format_go_duration, parse_go_duration

MAX_DEPTH = 12
MAX_ITEMS = 4096


class Scalar:
    """A leaf type: ``str``, ``int``, ``float``, ``bool``, ``duration`` or ``any``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


@dataclass(frozen=True)
class ListOf:
    item: FieldType


@dataclass(frozen=True)
class MapOf:
    """A JSON object with user keys (kept verbatim) and typed values."""

    value: FieldType


@dataclass(frozen=True)
class Obj:
    """A JSON object with known fields; ``aliases`` maps extra spellings to a field."""

    fields: Mapping[str, FieldType]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def lookup(self) -> dict[str, str]:
        table = {_fold(name): name for name in self.fields}
        for alias, target in self.aliases.items():
            table[_fold(alias)] = target
        return table


FieldType = Scalar | ListOf | MapOf | Obj

STR = Scalar("str")
INT = Scalar("int")
FLOAT = Scalar("float")
BOOL = Scalar("bool")
DURATION = Scalar("duration")
ANY = Scalar("any")
STRLIST = ListOf(STR)
STRMAP = MapOf(STR)


class DecodeError(ValueError):
    """A body field Consul's decoder would refuse; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.detail = message


def _fold(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


_LOOKUPS: dict[int, dict[str, str]] = {}


def _lookup(obj: Obj) -> dict[str, str]:
    table = _LOOKUPS.get(id(obj))
    if table is None:
        table = obj.lookup()
        _LOOKUPS[id(obj)] = table
    return table


def decode(value: Any, schema: FieldType, *, strict: bool, path: str = "", depth: int = 0) -> Any:
    """Canonical form of ``value`` under ``schema`` (raises :class:`DecodeError`)."""
    if depth > MAX_DEPTH:
        raise DecodeError(path, "nested too deeply")
    if isinstance(schema, Scalar):
        return _scalar(value, schema.kind, path)
    if value is None:
        return None
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise DecodeError(path, f"expected a list, got {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise DecodeError(path, f"more than {MAX_ITEMS} items")
        return [
            decode(item, schema.item, strict=strict, path=f"{path}[{i}]", depth=depth + 1)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        raise DecodeError(path, f"expected an object, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise DecodeError(path, f"more than {MAX_ITEMS} keys")
    if isinstance(schema, MapOf):
        return {
            str(key): decode(item, schema.value, strict=strict, path=f"{path}[{key!r}]", depth=depth + 1)
            for key, item in value.items()
        }
    table = _lookup(schema)
    out: dict[str, Any] = {}
    for key, item in value.items():
        canonical = table.get(_fold(str(key)))
        if canonical is None:
            if strict:
                raise DecodeError(path, f"'{path}' has invalid keys: {key}")
            continue
        sub = _join(path, canonical)
        out[canonical] = decode(item, schema.fields[canonical], strict=strict, path=sub, depth=depth + 1)
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _scalar(value: Any, kind: str, path: str) -> Any:
    if kind == "any" or value is None:
        return value
    if kind == "str":
        if isinstance(value, str):
            if len(value) > 65536:
                raise DecodeError(path, "string longer than 65536 characters")
            return value
        if isinstance(value, bool | int | float):  # mapstructure's weak typing
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise DecodeError(path, f"expected a string, got {type(value).__name__}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int):
            return value != 0
        raise DecodeError(path, f"expected a bool, got {type(value).__name__}")
    if kind == "int":
        if isinstance(value, bool):
            raise DecodeError(path, "expected an integer, got bool")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise DecodeError(path, f"expected an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, bool):
            raise DecodeError(path, "expected a number, got bool")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise DecodeError(path, f"expected a number, got {value!r}")
    if kind == "duration":
        try:
            return format_go_duration(parse_go_duration(value))
        except DurationError as exc:
            raise DecodeError(path, str(exc)) from None
    raise AssertionError(kind)
