"""User-supplied regexes, evaluated with RE2 as Envoy and Istio evaluate them.

Every regex a user can write — VirtualService header/uri/authority/query
matches, ``uriRegexRewrite``, CORS origins, xDS ``safe_regex`` — is compiled
here with Google's RE2 (``google-re2``), never with Python's backtracking
``re``: RE2 runs in time linear in the input, so ``^(a+)+$`` against
``"a" * 40 + "!"`` costs microseconds instead of hanging the event loop.

Limits, all checked at validation time so a config that validates also runs:

- RE2 syntax (no lookaround, backreferences, atomic groups, possessive
  quantifiers, ``\\Z``…): the same language Envoy accepts.
- :data:`MAX_REGEX_LENGTH` characters (Istio's validation rejects longer regexes).
- :data:`MAX_PROGRAM_SIZE` compiled RE2 program size. Envoy refuses a regex
  whose program exceeds the runtime key ``re2.max_program_size.error_level``:
  100 by Envoy's default, 32768 as istiod sets it for every sidecar; meshlib
  follows the sidecar (Istio) value.

Semantics: Envoy's ``safe_regex`` is a *full* match (RE2 ``FullMatch``), so
matchers built here are anchored at both ends; a rewrite is RE2
``GlobalReplace`` (every non-overlapping match, searched).

>>> matches = full_match_predicate("/api/v[0-9]+/.*")
>>> matches("/api/v2/users"), matches("/web/api/v2/users")
(True, False)
>>> regex_problem("(a)\\\\1")
'invalid escape sequence: \\\\1 (RE2 does not support backreferences)'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2
from re2 import _re2

MAX_REGEX_LENGTH = 1024
MAX_PROGRAM_SIZE = 32768
ENVOY_DEFAULT_MAX_PROGRAM_SIZE = 100
SYNTAX_URL = "https://github.com/google/re2/wiki/Syntax"

_ANCHOR_BOTH: Any = _re2.RE2.Anchor.ANCHOR_BOTH
_HINTS = (
    ("(?=", "RE2 does not support lookahead or lookbehind"),
    ("(?!", "RE2 does not support lookahead or lookbehind"),
    ("(?<=", "RE2 does not support lookahead or lookbehind"),
    ("(?<!", "RE2 does not support lookahead or lookbehind"),
    ("(?P=", "RE2 does not support backreferences"),
    ("(?P>", "RE2 does not support recursion"),
    ("(?>", "RE2 does not support atomic groups"),
    ("(?(", "RE2 does not support conditional groups"),
    ("(?x", "RE2 does not support the x (verbose) flag"),
    ("*+", "RE2 does not support possessive quantifiers"),
    ("++", "RE2 does not support possessive quantifiers"),
    ("?+", "RE2 does not support possessive quantifiers"),
    ("}+", "RE2 does not support possessive quantifiers"),
)


class RegexInvalid(ValueError):
    """A regex RE2 (or meshlib's limits) rejects; the message says why."""


def _options(*, capture: bool) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every rejected pattern to stderr
    options.never_capture = not capture
    return options


def _explain(pattern: str, message: str) -> str:
    """RE2's message plus, for syntax other engines accept, why RE2 does not."""
    for needle, hint in _HINTS:
        if needle in message or (message.startswith(("invalid perl operator", "bad repetition")) and needle in pattern):
            return f"{message} ({hint})"
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return f"{message} (RE2 does not support backreferences)"
    if message.startswith("invalid repetition size"):
        return f"{message} (RE2 allows at most 1000 repetitions, nested counts multiplied)"
    return message


def _check(pattern: str, *, capture: bool) -> Any:
    """The compiled low-level RE2 object, or :class:`RegexInvalid`."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise RegexInvalid(f"regex is too large: {len(pattern)} characters (Istio allows at most {MAX_REGEX_LENGTH})")
    compiled = _re2.RE2(pattern.encode("utf-8", "surrogatepass"), _options(capture=capture))
    if not compiled.ok():
        error = compiled.error()
        text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        raise RegexInvalid(_explain(pattern, text))
    size = int(compiled.ProgramSize())
    if size > MAX_PROGRAM_SIZE:
        raise RegexInvalid(
            f"RE2 program size {size} exceeds the maximum {MAX_PROGRAM_SIZE} "
            f"(re2.max_program_size.error_level as istiod sets it; Envoy's own default is "
            f"{ENVOY_DEFAULT_MAX_PROGRAM_SIZE})"
        )
    return compiled


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an acceptable regex (RE2 syntax and limits), or None.

    The text is the message body after ``invalid regex "<pattern>": ``.

    >>> regex_problem("^/api/v[0-9]+/.*") is None
    True
    >>> regex_problem("(?=a)b")
    'invalid perl operator: (?= (RE2 does not support lookahead or lookbehind)'
    """
    try:
        _check(pattern, capture=False)
    except RegexInvalid as exc:
        return str(exc)
    except (UnicodeError, ValueError, TypeError) as exc:  # e.g. a NUL byte the binding refuses
        return str(exc) or type(exc).__name__
    return None


@lru_cache(maxsize=4096)
def full_match_predicate(pattern: str) -> Callable[[str], bool]:
    """A predicate: does the *whole* value match ``pattern`` (Envoy ``safe_regex``)?

    Raises :class:`RegexInvalid` for a pattern :func:`regex_problem` rejects.
    The predicate costs about a microsecond on short values, whatever the
    pattern (linear time).
    """
    match = _check(pattern, capture=False).Match

    def full_match(value: str) -> bool:
        data = value.encode("utf-8", "surrogatepass")
        return bool(match(_ANCHOR_BOTH, data, 0, len(data))[0][0] >= 0)

    return full_match


@lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> Any:
    """A ``re2`` pattern object (``.sub``, ``.search``, ``.fullmatch``) for rewrites and filters.

    Raises :class:`RegexInvalid` for a pattern :func:`regex_problem` rejects.
    """
    _check(pattern, capture=True)
    options = _options(capture=True)
    return re2.compile(pattern, options)
