"""Compile Istio ``match`` blocks into predicates over a :class:`RequestView`.

Everything that can be decided once — lower-casing, regex compilation, which
request field a condition reads — is decided here on the control path, so the
request path only runs small closures. Semantics follow what istiod emits for
a sidecar and what Envoy then does with it (semantics.md §6):

* ``uri``: ``exact`` is Envoy's ``path``, ``prefix`` its ``prefix``, ``regex``
  its ``safe_regex`` (an RE2 *full* match on the path without the query).
  ``ignoreUriCase`` (``StringMatch.ignore_case``) applies to exact and prefix
  only. A block without ``uri`` is emitted by istiod as ``prefix: "/"``, so it
  still requires the path to start with ``/``.
* ``method`` / ``authority`` / ``scheme`` are header matchers on the
  ``:method`` / ``:authority`` / ``:scheme`` pseudo-headers.
* ``headers``: exact / prefix / regex (full match); ``present`` (``{}``) means
  the header exists with any value, even empty. A header sent several times is
  matched against its values joined with ``,`` as Envoy does.
* ``withoutHeaders``: istiod sets ``invert_match`` and, for value matchers,
  ``treat_missing_header_as_empty`` — so a missing header is matched as ``""``
  and then inverted (``exact: jason`` matches when the header is absent or not
  ``jason``); ``{}`` inverted matches exactly when the header is absent.
* ``queryParams``: exact / prefix / regex on the first value; ``present`` =
  the parameter exists. A missing parameter never matches a value matcher.

Fields within a block AND; blocks of a route OR (handled by the route table).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# Python's own regex parser, to find literal prefixes of RE2 patterns (see
# regex_literal_prefixes); meshlib.config.regex uses it the same way.
from re import _constants as _c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any, Literal

from meshlib.config.model import RouteMatch, StringMatch
from meshlib.config.regex import full_match_predicate, regex_problem
from meshlib.request import RequestView

__all__ = [
    "Condition",
    "RequestPredicate",
    "StringPredicate",
    "compile_condition",
    "compile_conditions",
    "compile_match",
    "compile_string_match",
    "conditions",
    "header_value",
    "match_always",
    "regex_literal_prefixes",
]

StringPredicate = Callable[[str], bool]
RequestPredicate = Callable[[RequestView], bool]

# Envoy's default path matcher for a block without ``uri`` (istiod: ``prefix: "/"``).
DEFAULT_PREFIX = "/"


def match_always(request: RequestView) -> bool:
    """The predicate of an empty block: matches every request."""
    return True


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value Envoy matches for header ``name``: ``None`` if absent, repeats joined by ``,``.

    ``name`` must be lower-case (plain dicts are expected to use lower-case
    keys; ``CIMultiDict`` does not care). The join costs only when the header
    is present, and only multidicts can hold repeats.
    """
    value = headers.get(name)
    if value is None or type(headers) is dict:
        return value
    # Duck-typed rather than isinstance(Protocol): that check costs ~1 µs per call.
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values: list[str] = getall(name, ())
        if len(values) > 1:
            return ",".join(values)
    return value


def compile_regex(pattern: str) -> StringPredicate:
    """An RE2 full-match predicate for ``pattern`` (Envoy ``safe_regex``; linear time).

    Raises :class:`~meshlib.config.regex.RegexInvalid` for a pattern RE2 rejects.
    """
    return full_match_predicate(pattern)


def compile_string_match(match: StringMatch) -> StringPredicate:
    """A predicate over one value for an Istio ``StringMatch``.

    ``present`` accepts every value (presence itself is checked by the caller,
    which knows whether the value exists). ``ignore_case`` affects exact and
    prefix only, like ``ignoreUriCase``; regex is always a case-sensitive full
    match.
    """
    kind = match.kind
    value = match.value
    if kind == "exact":
        if match.ignore_case:
            lowered = value.lower()
            return lambda s: s.lower() == lowered
        return value.__eq__
    if kind == "prefix":
        if match.ignore_case:
            lowered = value.lower()
            return lambda s: s.lower().startswith(lowered)
        return lambda s: s.startswith(value)
    if kind == "regex":
        return full_match_predicate(value)
    if kind == "present":
        return lambda s: True
    raise ValueError(f"unknown StringMatch kind {kind!r}")


def _field_predicate(getter: Callable[[RequestView], str], match: StringMatch) -> RequestPredicate:
    check = compile_string_match(match)
    return lambda r: check(getter(r))


_PSEUDO_HEADERS: dict[str, Callable[[RequestView], str]] = {
    ":method": lambda r: r.method,
    ":authority": lambda r: r.authority,
    ":scheme": lambda r: r.scheme,
    ":path": lambda r: r.path,
}


def _header_predicate(name: str, match: StringMatch) -> RequestPredicate:
    name = name.lower()
    pseudo = _PSEUDO_HEADERS.get(name)
    if pseudo is not None:
        # A pseudo-header always exists; its value comes from the request line.
        return _field_predicate(pseudo, match)
    if match.kind == "present":
        return lambda r: header_value(r.headers, name) is not None
    check = compile_string_match(match)

    def header_matches(r: RequestView) -> bool:
        value = header_value(r.headers, name)
        return value is not None and check(value)

    return header_matches


def _without_header_predicate(name: str, match: StringMatch) -> RequestPredicate:
    name = name.lower()
    pseudo = _PSEUDO_HEADERS.get(name)
    if pseudo is not None:
        if match.kind == "present":
            return lambda r: False
        positive = _field_predicate(pseudo, match)
        return lambda r: not positive(r)
    if match.kind == "present":
        return lambda r: header_value(r.headers, name) is None
    check = compile_string_match(match)

    def header_does_not_match(r: RequestView) -> bool:
        # treat_missing_header_as_empty: a missing header is matched as "".
        value = header_value(r.headers, name)
        return not check("" if value is None else value)

    return header_does_not_match


def _query_predicate(name: str, match: StringMatch) -> RequestPredicate:
    if match.kind == "present":
        return lambda r: name in r.query
    check = compile_string_match(match)

    def query_matches(r: RequestView) -> bool:
        value = r.query.get(name)
        return value is not None and check(value)

    return query_matches


@dataclass(frozen=True, slots=True)
class Condition:
    """One AND'ed condition of a match block, in a form the route table can index.

    ``field`` is the request part it reads; ``name`` the header or query
    parameter (lower-case for headers), "" otherwise.
    """

    field: Literal["uri", "method", "authority", "scheme", "header", "without_header", "query"]
    name: str
    match: StringMatch


_PSEUDO_FIELDS: dict[str, Literal["method", "authority", "scheme"]] = {
    ":method": "method",
    ":authority": "authority",
    ":scheme": "scheme",
}


def conditions(match: RouteMatch) -> list[Condition]:
    """The conditions of ``match``, uri first (``prefix: "/"`` when it has none, as istiod emits)."""
    uri = match.uri
    if uri is None or uri.kind == "present":
        uri = StringMatch("prefix", DEFAULT_PREFIX)
    out = [Condition("uri", "", uri)]
    if match.method is not None:
        out.append(Condition("method", "", match.method))
    if match.authority is not None:
        out.append(Condition("authority", "", match.authority))
    if match.scheme is not None:
        out.append(Condition("scheme", "", match.scheme))
    for name, m in match.headers:
        lowered = name.lower()
        pseudo = _PSEUDO_FIELDS.get(lowered)
        if pseudo is not None and m.kind != "present":
            out.append(Condition(pseudo, "", m))
        else:
            out.append(Condition("header", lowered, m))
    out.extend(Condition("without_header", name.lower(), m) for name, m in match.without_headers)
    out.extend(Condition("query", name, m) for name, m in match.query_params)
    return out


def compile_condition(condition: Condition) -> RequestPredicate:
    """A predicate for one condition."""
    field = condition.field
    if field == "uri":
        check = compile_string_match(condition.match)
        return lambda r: check(r.path)
    if field in ("method", "authority", "scheme"):
        return _field_predicate(_PSEUDO_HEADERS[":" + field], condition.match)
    if field == "header":
        return _header_predicate(condition.name, condition.match)
    if field == "without_header":
        return _without_header_predicate(condition.name, condition.match)
    return _query_predicate(condition.name, condition.match)


def compile_conditions(items: Iterable[Condition]) -> RequestPredicate:
    """All of ``items`` (AND); :func:`match_always` when there are none."""
    checks = [compile_condition(c) for c in items]
    if not checks:
        return match_always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda r: first(r) and second(r)
    frozen = tuple(checks)

    def all_hold(r: RequestView) -> bool:
        # A plain loop: all() over a generator costs a frame per request.
        for check in frozen:  # noqa: SIM110
            if not check(r):
                return False
        return True

    return all_hold


def compile_match(match: RouteMatch) -> RequestPredicate:
    """Compile one match block (fields AND'ed) into a predicate over a request.

    The workload-identity fields (port, source labels/namespace, gateways) are
    decided when the snapshot is built and are not looked at here.
    """
    return compile_conditions(conditions(match))


# --------------------------------------------------------------------------- regex literal prefixes

_MAX_PREFIXES = 16


def _prefixes_of(items: Any) -> tuple[list[str], bool]:
    """Literal prefixes of a parsed sequence, and whether the sequence was wholly literal."""
    prefixes = [""]
    for op, arg in items:
        if op is _c.LITERAL:
            prefixes = [p + chr(arg) for p in prefixes]
            continue
        if op is _c.AT and arg in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING):
            continue  # ``^`` is implied by a full match
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg
            if add_flags or del_flags:
                return prefixes, False
            tails, complete = _prefixes_of(sub)
        elif op is _c.IN and all(item_op is _c.LITERAL for item_op, _ in arg):
            # A small class of plain characters (Python's parser folds ``a|b`` into one).
            tails, complete = [chr(ch) for _, ch in arg], True
        elif op is _c.BRANCH:
            tails, complete = [], True
            for branch in arg[1]:
                branch_tails, branch_complete = _prefixes_of(branch)
                tails.extend(branch_tails)
                complete = complete and branch_complete
        else:
            return prefixes, False
        combined = [p + t for p in prefixes for t in tails]
        if len(combined) > _MAX_PREFIXES:
            return prefixes, False
        prefixes = combined
        if not complete:
            return prefixes, False
    return prefixes, True


def regex_literal_prefixes(pattern: str) -> tuple[str, ...]:
    """Literals one of which every full match of ``pattern`` starts with; ``()`` when none is known.

    Lets the route table index regex routes: ``/api/v[0-9]+/.*`` needs
    ``/api/v``, ``(/a|/b)/.*`` needs ``/a/`` or ``/b/``. Works on Python's
    parse tree, so escapes, classes and quantifiers cannot fool it; a
    case-insensitive pattern, or any branch without a literal start, gives
    ``()``.
    """
    # Python's parser reads the common RE2 subset the same way; where RE2's syntax differs
    # (POSIX classes such as [[:alpha:]], \Q...\E quoting, \p classes) it either
    # fails or might invent literals, so such patterns are not indexed at all.
    if "[:" in pattern or "\\Q" in pattern or regex_problem(pattern) is not None:
        return ()
    try:
        parsed: Any = _parser.parse(pattern)
    except Exception:
        return ()
    if int(parsed.state.flags) & re.IGNORECASE:
        return ()
    prefixes, _complete = _prefixes_of(parsed)
    if "" in prefixes:
        return ()
    return tuple(dict.fromkeys(prefixes))
