"""A go-bexpr evaluator: Consul's ``?filter=`` and service-resolver subset ``Filter`` language.

No maintained Python implementation of go-bexpr exists (PyPI has none), so
this is meshlib's own, written from the grammar in
``hashicorp/go-bexpr:grammar/grammar.peg`` and the evaluation rules of its
``evaluate.go``:

- ``or`` / ``and`` / ``not`` / parentheses (``and`` binds tighter than ``or``);
- ``Selector == Value``, ``!=``, ``contains``, ``not contains``, ``matches``,
  ``not matches`` (RE2, unanchored search, as Go's ``regexp.Match``),
  ``Selector is empty``, ``is not empty``, ``Value in Selector``, ``not in``;
- selectors: dotted (``Service.Meta.version``), indexed (``Service.Meta["a.b"]``),
  numeric (``Checks.0.Status``), a JSON pointer in quotes (``"/Service/Meta/a"``);
- values: numbers, ``"double-quoted"`` (Go escapes), `` `raw` `` strings, and bare
  identifiers (``Service.Meta.version == v1`` compares with the text ``v1``).

The value's text is coerced to the type of the datum, as go-bexpr does:
``Service.Port == 8080`` compares integers, ``Service.EnableTagOverride == true``
booleans (Go's ``strconv.ParseBool`` spellings). A value that does not
convert is an evaluation error, not a silent mismatch.

Collections (Consul's documented health selectors such as ``Checks.Status``):
when a selector steps *through* a list with a field name, the match is made
against every element — a positive operator (``==``, ``contains``, ``in``,
``matches``, ``is not empty``) holds when it holds for **any** element; its
negation (``!=``…, ``is empty``) is the negation of that (no element
matches). A missing map key (``Service.Meta.absent``) reads as an empty
string. Map keys are matched exactly, then case-insensitively.

>>> expr = parse('Service.Meta.version == v1 and "canary" not in Service.Tags')
>>> expr.evaluate({"Service": {"Meta": {"version": "v1"}, "Tags": ["primary"]}})
True
>>> parse("Service.Port == 80").evaluate({"Service": {"Port": 8080}})
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import re2

from meshlib.discovery.consul.bexpr_nodes import BexprError, Binary, Expression, Match, Not, Operator

MAX_EXPRESSION_LENGTH = 4096
MAX_NESTING = 32
MAX_SELECTOR_PARTS = 32

__all__ = ["BexprError", "Filter", "parse"]


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter. ``evaluate(datum)`` raises :class:`BexprError` on a type mismatch."""

    text: str
    root: Expression

    def evaluate(self, datum: Any) -> bool:
        return self.root.evaluate(datum)

    def select(self, items: Sequence[Any]) -> list[Any]:
        """The items the filter keeps, in order (Consul's ``?filter=`` on a list response)."""
        return [item for item in items if self.root.evaluate(item)]


def parse(text: str) -> Filter:
    """Parse a bexpr filter; raises :class:`BexprError` naming the position of the problem.

    >>> parse("Service.Tags contains") # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BexprError: expected a value at position 21
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise BexprError(f"filter longer than {MAX_EXPRESSION_LENGTH} characters")
    return Filter(text, _Parser(text).parse())


# --------------------------------------------------------------------------- parser


_WHITESPACE = " \t\r\n"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported to the caller, not logged by RE2
_RE2_OPTIONS.max_mem = 1 << 20


def _is_ident_start(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _is_ident_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in "_/")


class _Parser:
    """A recursive-descent parser following grammar.peg's ordered choices."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- helpers

    def _error(self, message: str, position: int | None = None) -> BexprError:
        return BexprError(message, self.pos if position is None else position)

    def _skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1
        return self.pos > start

    def _keyword(self, word: str) -> bool:
        """Consume ``word`` if it is followed by whitespace (keywords need it)."""
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and end < len(self.text) and self.text[end] in _WHITESPACE:
            self.pos = end
            self._skip_ws()
            return True
        return False

    def _keywords(self, *words: str) -> bool:
        """Consume ``_ w1 _ w2 …`` (whitespace before each word), or nothing."""
        start = self.pos
        for word in words:
            if not self._skip_ws():
                self.pos = start
                return False
            end = self.pos + len(word)
            if not self.text.startswith(word, self.pos):
                self.pos = start
                return False
            self.pos = end
        if self.pos < len(self.text) and _is_ident_char(self.text[self.pos]):
            self.pos = start  # "is emptyish"
            return False
        return True

    # -- grammar

    def parse(self) -> Expression:
        self._skip_ws()
        if self.pos >= len(self.text):
            raise self._error("empty filter")
        expr = self._or()
        self._skip_ws()
        if self.pos < len(self.text):
            raise self._error(f"unexpected {self.text[self.pos:self.pos + 10]!r}")
        return expr

    def _or(self) -> Expression:
        left = self._and()
        start = self.pos
        if self._skip_ws() and self._keyword("or"):
            return Binary("or", left, self._or())
        self.pos = start
        return left

    def _and(self) -> Expression:
        left = self._not()
        start = self.pos
        if self._skip_ws() and self._keyword("and"):
            return Binary("and", left, self._and())
        self.pos = start
        return left

    def _not(self) -> Expression:
        if self._keyword("not"):
            return Not(self._nested(self._not))
        return self._paren()

    def _nested(self, parse_next: Any) -> Expression:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self._error(f"filter nested deeper than {MAX_NESTING} levels")
        try:
            result: Expression = parse_next()
        finally:
            self.depth -= 1
        return result

    def _paren(self) -> Expression:
        if self.pos < len(self.text) and self.text[self.pos] == "(":
            open_at = self.pos
            self.pos += 1
            self._skip_ws()
            inner = self._nested(self._or)
            self._skip_ws()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self._error("unmatched parenthesis", open_at)
            self.pos += 1
            return inner
        return self._match()

    def _match(self) -> Match:
        start = self.pos
        # Selector-first forms: Selector (==|!=|contains|…) Value, Selector is [not] empty
        selector = self._try_selector()
        if selector is not None:
            after_selector = self.pos
            operator = self._selector_operator()
            if operator in ("is empty", "is not empty"):
                return Match(selector, operator, None)
            if operator is not None:
                value = self._value()
                pattern = self._compile(value, after_selector) if operator.endswith("matches") else None
                return Match(selector, operator, value, _pattern=pattern)
            self.pos = start
        # Value (in|not in) Selector
        value_start = self.pos
        left_value = self._value_or_none()
        if left_value is None:
            raise self._error("expected a selector or a value")
        operator_text: Operator | None = None
        if self._keywords("not", "in"):
            operator_text = "not in"
        elif self._keywords("in"):
            operator_text = "in"
        if operator_text is not None:
            self._skip_ws()
            inline = self._try_inline_list()
            if inline is not None:
                return Match((), operator_text, left_value, inline=inline)
            target = self._try_selector()
            if target is None:
                raise self._error("invalid selector")
            return Match(target, operator_text, left_value)
        raise self._error("expected an operator (==, !=, contains, matches, in, is empty…)", value_start)

    def _compile(self, pattern: str, position: int) -> Any:
        try:
            return re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else ""
            text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            raise self._error(f"invalid regular expression {pattern!r}: {text}", position) from None

    def _selector_operator(self) -> Operator | None:
        start = self.pos
        self._skip_ws()
        for symbol in ("==", "!="):
            if self.text.startswith(symbol, self.pos):
                self.pos += 2
                self._skip_ws()
                return "==" if symbol == "==" else "!="
        self.pos = start
        if self._keywords("is", "not", "empty"):
            return "is not empty"
        if self._keywords("is", "empty"):
            return "is empty"
        for words, name in (
            (("not", "contains"), "not contains"),
            (("contains",), "contains"),
            (("not", "matches"), "not matches"),
            (("matches",), "matches"),
        ):
            if self._keywords(*words):
                self._skip_ws()
                return name  # type: ignore[return-value]
        self.pos = start
        return None

    def _value(self) -> str:
        value = self._value_or_none()
        if value is None:
            raise self._error("expected a value")
        return value

    def _value_or_none(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        if ch == '"' and self.text.startswith('"/', self.pos):
            pointer = self._try_pointer()
            if pointer is not None:
                return "/" + "/".join(pointer)
        if _is_ident_start(ch):
            selector = self._try_selector()
            return ".".join(selector) if selector is not None else None
        if ch == "-" or ch.isdigit():
            return self._number()
        if ch in "\"`":
            return self._string()
        return None

    def _number(self) -> str:
        start = self.pos
        if self.text[self.pos] == "-":
            self.pos += 1
        digits = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        integer = self.text[digits:self.pos]
        if not integer or (len(integer) > 1 and integer[0] == "0"):
            raise self._error("invalid number literal", start)
        if self.text.startswith(".", self.pos):
            self.pos += 1
            fraction = self.pos
            while self.pos < len(self.text) and self.text[self.pos].isdigit():
                self.pos += 1
            if self.pos == fraction:
                raise self._error("invalid number literal", start)
        if self.pos < len(self.text) and self.text[self.pos] not in _WHITESPACE + ")":
            raise self._error("invalid number literal", start)
        return self.text[start:self.pos]

    def _string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self._error("unterminated string literal", start)
        raw = self.text[self.pos + 1:end]
        self.pos = end + 1
        return raw if quote == "`" else _unquote(raw, start)

    def _try_selector(self) -> tuple[str, ...] | None:
        if self.pos >= len(self.text):
            return None
        if self.text.startswith('"/', self.pos):
            return self._try_pointer()
        if not _is_ident_start(self.text[self.pos]):
            return None
        parts = [self._identifier()]
        while self.pos < len(self.text) and len(parts) <= MAX_SELECTOR_PARTS:
            ch = self.text[self.pos]
            if ch == "." and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                if _is_ident_start(nxt):
                    self.pos += 1
                    parts.append(self._identifier())
                    continue
                if nxt.isdigit():
                    self.pos += 1
                    digits = self.pos
                    while self.pos < len(self.text) and self.text[self.pos].isdigit():
                        self.pos += 1
                    parts.append(self.text[digits:self.pos])
                    continue
                break
            if ch == "[":
                open_at = self.pos
                self.pos += 1
                self._skip_ws()
                if self.pos >= len(self.text) or self.text[self.pos] not in "\"`":
                    raise self._error("invalid index", open_at)
                key = self._string()
                self._skip_ws()
                if self.pos >= len(self.text) or self.text[self.pos] != "]":
                    raise self._error("unclosed index expression", open_at)
                self.pos += 1
                parts.append(key)
                continue
            break
        if len(parts) > MAX_SELECTOR_PARTS:
            raise self._error(f"selector longer than {MAX_SELECTOR_PARTS} parts")
        return tuple(parts)

    def _identifier(self) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and _is_ident_char(self.text[self.pos]):
            self.pos += 1
        return self.text[start:self.pos]

    def _try_pointer(self) -> tuple[str, ...] | None:
        start = self.pos
        end = self.text.find('"', start + 1)
        if end < 0:
            return None
        body = self.text[start + 1:end]
        segments = body.split("/")[1:]
        if not segments or any(not s or not all(c.isalnum() or c in "-_.~:|" for c in s) for s in segments):
            return None
        if len(segments) > MAX_SELECTOR_PARTS:
            raise self._error(f"selector longer than {MAX_SELECTOR_PARTS} parts", start)
        self.pos = end + 1
        return tuple(s.replace("~1", "/").replace("~0", "~") for s in segments)

    def _try_inline_list(self) -> tuple[str, ...] | None:
        if not self.text.startswith("[", self.pos):
            return None
        self.pos += 1
        values: list[str] = []
        while True:
            self._skip_ws()
            if self.pos >= len(self.text) or self.text[self.pos] not in "\"`":
                raise self._error("expected a string in the inline list")
            values.append(self._string())
            self._skip_ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                continue
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return tuple(values)
            raise self._error("expected , or ] in the inline list")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(body: str, position: int) -> str:
    """Go ``strconv.Unquote`` for the escapes a filter can hold."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise BexprError("invalid escape in string literal", position + 1 + i)
        code = body[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)) if len(digits) == width else "")
            except (ValueError, OverflowError):
                raise BexprError("invalid escape in string literal", position + 1 + i) from None
            if len(digits) != width:
                raise BexprError("invalid escape in string literal", position + 1 + i)
            i += 2 + width
        else:
            raise BexprError("invalid escape in string literal", position + 1 + i)
    return "".join(out)
