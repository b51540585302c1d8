"""Regex validation: must compile in Python *and* stay inside RE2's language.

Envoy evaluates Istio regexes with RE2; meshlib evaluates them with Python's
``re``. The two agree on the common subset, so we accept only that subset:
anything Python supports but RE2 rejects (lookaround, backreferences, atomic
groups, possessive quantifiers, conditionals, ``\\Z``, the verbose flag,
repeat counts above 1000) is an error here, so a config that works in
meshlib also works on an Envoy sidecar and vice versa.

We walk the parse tree of Python's own regex parser rather than scanning the
text, so escapes and character classes cannot fool the check.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# Python 3.11+ keeps the parser in re._parser (sre_parse is a deprecated alias).
# Private and untyped, hence Any; its tree shape has been stable since 3.5.
_p: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

RE2_MAX_REPEAT = 1000

_UNSUPPORTED_OPS: dict[str, tuple[str, str]] = {
    "GROUPREF": ("uses a backreference", "backreferences"),
    "GROUPREF_EXISTS": ("uses a conditional group", "conditional groups"),
    "ATOMIC_GROUP": ("uses an atomic group", "atomic groups"),
    "POSSESSIVE_REPEAT": ("uses a possessive quantifier", "possessive quantifiers"),
}


def regex_problem(pattern: str) -> str | None:
    """Return why ``pattern`` is not an acceptable RE2 regex, or None when it is.

    The text is the message body after ``invalid regex "<pattern>": ``.
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    except (RecursionError, OverflowError, ValueError) as exc:  # pathological nesting/sizes
        return str(exc) or type(exc).__name__
    try:
        parsed: Any = _p.parse(pattern)
    except Exception as exc:  # compile succeeded, so this cannot really happen
        return str(exc)
    flags = int(parsed.state.flags)
    if flags & re.VERBOSE:
        return "uses the x (verbose) flag (RE2 does not support the x flag)"
    return _walk(parsed)


def _walk(items: Any) -> str | None:
    for op, arg in items:
        name = str(op)
        if name in ("ASSERT", "ASSERT_NOT"):
            direction = "lookahead" if arg[0] >= 0 else "lookbehind"
            return f"uses a {direction} assertion (RE2 does not support lookahead or lookbehind)"
        if name in _UNSUPPORTED_OPS:
            what, plural = _UNSUPPORTED_OPS[name]
            return f"{what} (RE2 does not support {plural})"
        if name == "AT" and str(arg) == "AT_END_STRING":
            return "uses \\Z (RE2 does not support \\Z)"
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, sub = arg
            for bound in (low, high):
                if bound != _c.MAXREPEAT and bound > RE2_MAX_REPEAT:
                    return (
                        f"repeat count {bound} exceeds {RE2_MAX_REPEAT} "
                        f"(RE2 does not support repeat counts above {RE2_MAX_REPEAT})"
                    )
            found = _walk(sub)
        elif name == "SUBPATTERN":
            add_flags = arg[1]
            if add_flags & re.VERBOSE:
                return "uses the x (verbose) flag (RE2 does not support the x flag)"
            found = _walk(arg[3])
        elif name == "BRANCH":
            found = None
            for branch in arg[1]:
                found = _walk(branch)
                if found:
                    break
        else:
            found = None
        if found:
            return found
    return None
