"""The syntax tree of a go-bexpr filter and its evaluation over JSON-shaped data.

See :mod:`meshlib.discovery.consul.bexpr` for the language and its semantics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Operator = Literal[
    "==", "!=", "contains", "not contains", "matches", "not matches", "in", "not in", "is empty", "is not empty"
]
_NEGATED: Mapping[str, str] = {
    "!=": "==",
    "not contains": "contains",
    "not matches": "matches",
    "not in": "in",
    "is empty": "is not empty",
}
_TRUE_WORDS = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE_WORDS = {"0", "f", "F", "FALSE", "false", "False"}


class BexprError(ValueError):
    """A filter that cannot be parsed or evaluated. ``position`` is 0-based (parse errors only)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where}")


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Match:
    """One ``selector op value`` comparison."""

    selector: tuple[str, ...]
    operator: Operator
    value: str | None  # the value's raw text; None for is (not) empty
    inline: tuple[str, ...] | None = None  # ``"x" in ["a", "b"]``: the inline list
    _pattern: Any = None  # compiled RE2 for matches

    def evaluate(self, datum: Any) -> bool:
        positive = _NEGATED.get(self.operator)
        if positive is not None:
            return not self._positive(positive, datum)
        return self._positive(self.operator, datum)

    def _positive(self, operator: str, datum: Any) -> bool:
        if self.inline is not None:
            return self.value in self.inline
        return any(_compare(self, operator, found) for found in _resolve(datum, self.selector, 0))


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expression

    def evaluate(self, datum: Any) -> bool:
        return not self.operand.evaluate(datum)


@dataclass(frozen=True, slots=True)
class Binary:
    operator: Literal["and", "or"]
    left: Expression
    right: Expression

    def evaluate(self, datum: Any) -> bool:
        if self.operator == "and":
            return self.left.evaluate(datum) and self.right.evaluate(datum)
        return self.left.evaluate(datum) or self.right.evaluate(datum)


Expression = Match | Not | Binary


# --------------------------------------------------------------------------- evaluation


def _lookup(node: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    if key in node:
        return True, node[key]
    folded = key.lower()
    for name, value in node.items():
        if isinstance(name, str) and name.lower() == folded:
            return True, value
    return False, None


def _resolve(datum: Any, path: tuple[str, ...], start: int) -> list[Any]:
    """Every value the selector reaches (more than one when it steps through a list)."""
    node = datum
    for i in range(start, len(path)):
        part = path[i]
        if isinstance(node, Mapping):
            found, node = _lookup(node, part)
            if not found:
                return [""]  # a missing key reads as the empty string
        elif isinstance(node, list | tuple):
            if part.isdigit():
                index = int(part)
                if index >= len(node):
                    raise BexprError(f"index {index} out of range for selector {'.'.join(path)!r}")
                node = node[index]
            else:
                results: list[Any] = []
                for element in node:
                    results.extend(_resolve(element, path, i))
                return results
        elif node is None:
            return [""]
        else:
            raise BexprError(f"selector {'.'.join(path)!r}: cannot select {part!r} from a {_kind(node)}")
    return [node]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return "null" if value is None else type(value).__name__


def _coerced_equal(raw: str, value: Any) -> bool:
    """go-bexpr equality: the value's text converted to the datum's type."""
    if isinstance(value, bool):
        if raw in _TRUE_WORDS:
            return value is True
        if raw in _FALSE_WORDS:
            return value is False
        raise BexprError(f"value {raw!r} is not a boolean")
    if isinstance(value, int):
        try:
            return int(raw, 10) == value
        except ValueError:
            raise BexprError(f"value {raw!r} is not an integer") from None
    if isinstance(value, float):
        try:
            number = float(raw)
        except ValueError:
            raise BexprError(f"value {raw!r} is not a number") from None
        return not math.isnan(number) and number == value
    if value is None:
        return raw == ""
    if isinstance(value, str):
        return raw == value
    raise BexprError(f"cannot compare a {_kind(value)} with ==")


def _compare(match: Match, operator: str, value: Any) -> bool:
    raw = match.value if match.value is not None else ""
    if operator == "==":
        return _coerced_equal(raw, value)
    if operator == "is not empty":
        if value is None:
            return False
        if isinstance(value, str | Mapping | list | tuple):
            return len(value) > 0
        raise BexprError(f"cannot test a {_kind(value)} for emptiness")
    if operator == "matches":
        if not isinstance(value, str):
            raise BexprError(f"cannot match a regular expression against a {_kind(value)}")
        return match._pattern.search(value) is not None
    # "in" / "contains": membership in a map's keys, a list, or a substring
    if value is None:
        return False  # a JSON null is Go's nil slice or map: empty, so nothing is in it
    if isinstance(value, Mapping):
        return raw in value
    if isinstance(value, list | tuple):
        for element in value:
            try:
                if _coerced_equal(raw, element):
                    return True
            except BexprError:
                continue  # go-bexpr skips elements the value does not convert to
        return False
    if isinstance(value, str):
        return raw in value
    raise BexprError(f"cannot perform in/contains on a {_kind(value)}")
