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
from collections.abc import Callable, Mapping

from meshlib.config.model import RouteMatch, StringMatch
from meshlib.request import RequestView

__all__ = [
    "RequestPredicate",
    "StringPredicate",
    "compile_match",
    "compile_string_match",
    "header_value",
    "literal_regex_prefix",
    "match_always",
]

StringPredicate = Callable[[str], bool]
RequestPredicate = Callable[[RequestView], bool]

# Envoy's default path matcher for a block without ``uri`` (istiod: ``prefix: "/"``).
DEFAULT_PREFIX = "/"

_REGEX_META = frozenset("\\.^$|?*+()[]{}")
_QUANTIFIERS = frozenset("*+?{")


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
    if value is None:
        return None
    # Duck-typed rather than isinstance(Protocol): that check costs ~1 µs per call.
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values: list[str] = getall(name, ())
        if len(values) > 1:
            return ",".join(values)
    return value


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern with Python's ``re`` (the common RE2 subset is identical)."""
    return re.compile(pattern)


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
        fullmatch = compile_regex(value).fullmatch
        return lambda s: fullmatch(s) is not None
    if kind == "present":
        return lambda s: True
    raise ValueError(f"unknown StringMatch kind {kind!r}")


def _uri_predicate(uri: StringMatch | None) -> RequestPredicate:
    if uri is None or uri.kind == "present":
        # istiod emits ``prefix: "/"`` for a block without a uri condition.
        return lambda r: r.path.startswith(DEFAULT_PREFIX)
    check = compile_string_match(uri)
    return lambda r: check(r.path)


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


def _all_of(checks: list[RequestPredicate]) -> RequestPredicate:
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


def compile_match(match: RouteMatch, *, include_uri: bool = True) -> RequestPredicate:
    """Compile one match block (fields AND'ed) into a predicate.

    With ``include_uri=False`` the uri condition is left out: the route table
    uses that when its path index already guarantees the uri condition, so the
    request path does not test it twice. The workload-identity fields (port,
    source labels/namespace, gateways) are decided when the snapshot is built
    and are not looked at here.
    """
    checks: list[RequestPredicate] = []
    if include_uri:
        checks.append(_uri_predicate(match.uri))
    if match.method is not None:
        checks.append(_field_predicate(_PSEUDO_HEADERS[":method"], match.method))
    if match.authority is not None:
        checks.append(_field_predicate(_PSEUDO_HEADERS[":authority"], match.authority))
    if match.scheme is not None:
        checks.append(_field_predicate(_PSEUDO_HEADERS[":scheme"], match.scheme))
    checks.extend(_header_predicate(name, m) for name, m in match.headers)
    checks.extend(_without_header_predicate(name, m) for name, m in match.without_headers)
    checks.extend(_query_predicate(name, m) for name, m in match.query_params)
    return _all_of(checks)


def literal_regex_prefix(pattern: str) -> str:
    """A literal every full match of ``pattern`` must start with ("" when unsure).

    Used to index regex routes by path prefix. Conservative by construction:
    any alternation gives "", the scan stops at the first metacharacter, and a
    literal followed by a quantifier is not part of the prefix.
    """
    if "|" in pattern:
        return ""
    out: list[str] = []
    for i, ch in enumerate(pattern):
        if ch in _REGEX_META:
            break
        if i + 1 < len(pattern) and pattern[i + 1] in _QUANTIFIERS:
            break
        out.append(ch)
    return "".join(out)
