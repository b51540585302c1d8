"""Typed, located field access for validating YAML trees.

:class:`Fields` wraps one YAML mapping with the set of fields the Istio API
defines there: unknown keys are reported as they are found, and each typed
getter reports a bad value (with the key's line and the dotted field path) and
returns None, so a parser simply carries on and every problem in a file is
collected in one pass rather than stopping at the first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from meshlib.config.durations import (
    NS_PER_S,
    duration_problem,
    parse_duration_ns,
)
from meshlib.config.yaml_nodes import Node
from meshlib.errors import ConfigProblem

# Kubernetes label syntax: name ≤ 63 chars, optional DNS-subdomain prefix "example.com/".
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DURATION_SHAPE = re.compile(r"^((\d+(\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s))+$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@lru_cache(maxsize=4096)  # the same few labels appear on thousands of endpoints
def label_problem(key: str, value: str) -> str | None:
    """Why ``key: value`` is not a valid Kubernetes label, or None."""
    prefix, _, name = key.rpartition("/")
    if (
        not name
        or not _LABEL_NAME.match(name)
        or (prefix and not _LABEL_PREFIX.match(prefix))
        or ("/" in key and not prefix)
    ):
        return f'invalid label key "{key}"'
    if not _LABEL_NAME.match(value):
        return f'invalid label value "{value}"'
    return None


@dataclass(slots=True)
class Sink:
    """Collects problems for one document (file, kind and ``namespace/name`` fixed)."""

    file: str
    kind: str = ""
    name: str = ""
    problems: list[ConfigProblem] = field(default_factory=list)

    def error(self, line: int, path: str, message: str) -> None:
        """Record one problem at ``line`` for field ``path``."""
        self.problems.append(ConfigProblem(self.file, line, self.kind, self.name, path, message))

    def warn(self, line: int, path: str, message: str, code: str = "") -> None:
        """Record a warning: Istio accepts this (maybe with an analyzer ``code``), so it does not reject the config."""
        self.problems.append(ConfigProblem(self.file, line, self.kind, self.name, path, message, "warning", code))


def join(path: str, key: str) -> str:
    """``spec`` + ``hosts`` → ``spec.hosts``; the root path is empty."""
    return f"{path}.{key}" if path else key


def range_message(low: float | None, high: float | None) -> str:
    """The one wording used for every numeric bound."""
    if low is not None and high is not None:
        return f"must be between {low:g} and {high:g}"
    if low is not None:
        return f"must be at least {low:g}"
    return f"must be at most {high:g}"


class Fields:
    """One YAML mapping being validated against a known field set."""

    __slots__ = ("node", "ok", "path", "sink")

    def __init__(self, sink: Sink, node: Node, path: str, known: Iterable[str]) -> None:
        self.sink = sink
        self.node = node
        self.path = path
        self.ok = node.kind == "map"
        if not self.ok:
            sink.error(node.line, path, f"expected a mapping, got {node.type_name}")
            return
        allowed = known if isinstance(known, set | frozenset) else set(known)
        for key, value in node.mapping.items():
            if key not in allowed:
                # The path names the unknown key itself (as kubectl does); the message repeats
                # it so it survives when only the message is shown.
                sink.error(value.line, join(path, key), f'unknown field "{key}"')

    # ----------------------------------------------------------------- basics

    def at(self, key: str) -> str:
        """The field path of ``key``."""
        return join(self.path, key)

    def get(self, key: str) -> Node | None:
        """The value node, or None when absent. YAML ``null`` counts as absent (as in Kubernetes)."""
        if not self.ok:
            return None
        node = self.node.mapping.get(key)
        if node is None or (node.kind == "scalar" and node.scalar is None):
            return None
        return node

    def has(self, key: str) -> bool:
        """True when ``key`` is present with a non-null value."""
        return self.get(key) is not None

    def line(self, key: str | None = None) -> int:
        """Line of ``key`` when present, else of this mapping."""
        node = self.get(key) if key else None
        return node.line if node is not None else self.node.line

    def error(self, key: str | None, message: str) -> None:
        """Report ``message`` about ``key`` (or the mapping itself when None)."""
        self.sink.error(self.line(key), self.at(key) if key else self.path, message)

    def warn(self, key: str | None, message: str, code: str = "") -> None:
        """A warning about ``key`` (or the mapping itself when None); see :meth:`Sink.warn`."""
        self.sink.warn(self.line(key), self.at(key) if key else self.path, message, code)

    def require(self, key: str) -> Node | None:
        """Like :meth:`get`, reporting ``is required`` when missing."""
        node = self.get(key)
        if node is None and self.ok:
            self.sink.error(self.node.line, self.at(key), "is required")
        return node

    def _wrong(self, key: str, node: Node, expected: str) -> None:
        self.sink.error(node.line, self.at(key), f"expected {expected}, got {node.type_name}")

    # ----------------------------------------------------------------- scalars

    def string(self, key: str, *, required: bool = False) -> str | None:
        """A string value."""
        node = self.require(key) if required else self.get(key)
        if node is None:
            return None
        if node.kind != "scalar" or not isinstance(node.scalar, str):
            self._wrong(key, node, "string")
            return None
        return node.scalar

    def integer(
        self, key: str, low: int | None = None, high: int | None = None, *, required: bool = False
    ) -> int | None:
        """An integer within [low, high]."""
        node = self.require(key) if required else self.get(key)
        if node is None:
            return None
        value = node.scalar
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, node, "integer")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            self.sink.error(node.line, self.at(key), range_message(low, high))
            return None
        return value

    def number(self, key: str, low: float | None = None, high: float | None = None) -> float | None:
        """A number (integer or decimal) within [low, high]."""
        node = self.get(key)
        if node is None:
            return None
        value = node.scalar
        if node.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, node, "number")
            return None
        if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
            self.sink.error(node.line, self.at(key), range_message(low, high))
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        """A boolean."""
        node = self.get(key)
        if node is None:
            return None
        if node.kind != "scalar" or not isinstance(node.scalar, bool):
            self._wrong(key, node, "boolean")
            return None
        return node.scalar

    def duration(
        self,
        key: str,
        *,
        minimum_s: float = 0.001,
        precision_s: float = 0.001,
        allow_zero: bool = False,
    ) -> float | None:
        """An Istio duration in seconds (see :mod:`meshlib.config.durations`).

        By default Istio's ``ValidateDuration`` applies: at least 1 ms, whole
        milliseconds. ``allow_zero`` also accepts ``0s`` (fields where zero
        means "disabled"); ``precision_s=1`` demands whole seconds.
        """
        node = self.get(key)
        if node is None:
            return None
        if node.kind != "scalar":
            self._wrong(key, node, "duration string")
            return None
        ns = parse_duration_ns(node.scalar)
        if ns is None:
            text = node.scalar if isinstance(node.scalar, str) else str(node.scalar).lower()
            hint = ""
            if isinstance(node.scalar, str) and _DURATION_SHAPE.match(node.scalar.strip()):
                hint = " (longer than the maximum 2562047h47m16.854775807s, Go's time.Duration)"
            self.sink.error(node.line, self.at(key), f'invalid duration "{text[:64]}"{hint}')
            return None
        if ns == 0 and allow_zero:
            return 0.0
        problem = duration_problem(
            ns, minimum_ns=round(minimum_s * NS_PER_S), precision_ns=round(precision_s * NS_PER_S)
        )
        if problem is not None:
            self.sink.error(node.line, self.at(key), problem)
            return None
        return ns / NS_PER_S

    def enum(self, key: str, values: Sequence[str]) -> str | None:
        """One of ``values`` (case-sensitive, as protobuf enums are)."""
        text = self.string(key)
        if text is None:
            return None
        if text not in values:
            self.error(key, f'unknown value "{text}" (expected one of {", ".join(values)})')
            return None
        return text

    # ----------------------------------------------------------------- containers

    def mapping(self, key: str, known: Iterable[str]) -> Fields | None:
        """A nested message, validated against ``known``; None when absent or not a mapping."""
        node = self.get(key)
        if node is None:
            return None
        nested = Fields(self.sink, node, self.at(key), known)
        return nested if nested.ok else None

    def items(self, key: str) -> list[tuple[str, Node]]:
        """Entries of a list as (field path, node); empty when absent or not a list."""
        node = self.get(key)
        if node is None:
            return []
        if node.kind != "seq":
            self._wrong(key, node, "list")
            return []
        base = self.at(key)
        return [(f"{base}[{i}]", item) for i, item in enumerate(node.sequence)]

    def entries(self, key: str) -> list[tuple[str, str, Node]]:
        """Entries of a map field as (name, field path, value node)."""
        node = self.get(key)
        if node is None:
            return []
        if node.kind != "map":
            self._wrong(key, node, "mapping")
            return []
        base = self.at(key)
        return [(name, f'{base}["{name}"]', value) for name, value in node.mapping.items()]

    def string_list(self, key: str) -> list[str] | None:
        """A list of strings; bad entries are reported and skipped."""
        node = self.get(key)
        if node is None:
            return None
        out: list[str] = []
        for path, item in self.items(key):
            if item.kind != "scalar" or not isinstance(item.scalar, str):
                self.sink.error(item.line, path, f"expected string, got {item.type_name}")
                continue
            out.append(item.scalar)
        return out

    def string_map(self, key: str) -> dict[str, str] | None:
        """A ``map<string, string>`` (labels, header values)."""
        node = self.get(key)
        if node is None:
            return None
        if node.kind != "map":
            self._wrong(key, node, "mapping")
            return {}
        out: dict[str, str] = {}
        # Endpoint lists repeat small maps thousands of times: field paths are built only for errors.
        for name, value in node.mapping.items():
            if value.kind != "scalar" or not isinstance(value.scalar, str):
                self.sink.error(value.line, f'{self.at(key)}["{name}"]', f"expected string, got {value.type_name}")
                continue
            out[name] = value.scalar
        return out

    def labels(self, key: str) -> dict[str, str] | None:
        """A label map, each key and value checked against Kubernetes label syntax."""
        values = self.string_map(key)
        if values is None:
            return None
        out: dict[str, str] = {}
        for name, value in values.items():
            problem = label_problem(name, value)
            if problem:
                self.sink.error(
                    self.node.mapping[key].mapping[name].line, f'{self.at(key)}["{name}"]', problem
                )
            else:
                out[name] = value
        return out

    def percent(self, key: str) -> float | None:
        """An Istio ``Percent`` message ``{value: 0..100}``."""
        message = self.mapping(key, ("value",))
        if message is None:
            return None
        value = message.number("value", 0, 100)
        return 0.0 if value is None and not message.has("value") else value


def item_fields(sink: Sink, path: str, node: Node, known: Iterable[str]) -> Fields | None:
    """A list entry that must be a mapping."""
    fields = Fields(sink, node, path, known)
    return fields if fields.ok else None
