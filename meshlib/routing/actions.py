"""What a matched route does to the request: rewrites, redirects, header edits, mirrors.

Each function reproduces what Envoy does with the resource istiod emits for
the VirtualService field (semantics.md §6), so the rules that look arbitrary
are Envoy's:

* ``rewrite.uri`` is Envoy's ``prefix_rewrite``: it replaces the *matched*
  prefix. For an exact or regex uri match the matched part is the whole path.
  A block without a uri condition is emitted as ``prefix: "/"``, so only the
  leading ``/`` is replaced (``rewrite.uri: /v2`` turns ``/a`` into ``/v2a``,
  exactly as a sidecar does).
* ``uriRegexRewrite`` is ``regex_rewrite``: RE2 ``GlobalReplace`` over the
  path, ``\\N`` referring to group N.
* ``redirect`` follows istiod's ``ApplyRedirect`` (derived/explicit port,
  :80/:443 dropped for http/https) and Envoy's ``newUri`` (port stripping of
  the request host, path replacement keeping the query).
* header ``set`` overwrites, ``add`` appends, ``remove`` deletes; removal runs
  first (Envoy's remove-before-add). Keys starting with ``:`` and ``host`` are
  dropped like istiod drops them.
* mirrors fire with their percentage (100 when absent, never when 0) and send
  ``Host: <host>-shadow[:port]``.

The query string stays the caller's business except for redirects, whose
``Location`` must carry it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from meshlib.config.model import HeaderOps, Mirror, Redirect, Rewrite, Route, RouteMatch
from meshlib.config.regex import compile_regex
from meshlib.request import RequestView
from meshlib.routing.match import DEFAULT_PREFIX

__all__ = [
    "apply_header_ops",
    "authority_from_header_ops",
    "is_internal_header",
    "mirrors_to_send",
    "re2_substitution",
    "redirect_location",
    "rewrite_authority",
    "rewrite_path",
    "shadow_authority",
    "should_mirror",
]

_DEFAULT_PORT = {"http": 80, "https": 443}


# --------------------------------------------------------------------------- rewrites


def re2_substitution(rewrite: str) -> str:
    """Translate an RE2 rewrite string (``\\1``, ``\\\\``) into a Python ``re.sub`` template.

    RE2 knows only single-digit group references and an escaped backslash;
    everything else is literal, so literal backslashes are doubled for Python.
    """
    out: list[str] = []
    i = 0
    n = len(rewrite)
    while i < n:
        ch = rewrite[i]
        if ch == "\\" and i + 1 < n:
            nxt = rewrite[i + 1]
            if nxt.isdigit():
                out.append(f"\\g<{nxt}>")
                i += 2
                continue
            if nxt == "\\":
                out.append("\\\\")
                i += 2
                continue
        out.append("\\\\" if ch == "\\" else ch)
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def _regex_rewriter(pattern: str, rewrite: str) -> tuple[Any, str]:
    """Compiled once per (pattern, rewrite) with RE2 (linear time); a route table holds only a handful."""
    return compile_regex(pattern), re2_substitution(rewrite)


def rewrite_path(rewrite: Rewrite, path: str, matched: RouteMatch | None) -> str:
    """The upstream path (without query) after ``rewrite``; ``path`` if nothing applies.

    ``matched`` is the match block that selected the route (``RouteHit.matched``);
    ``None`` means the route had no blocks, i.e. Envoy's implicit ``prefix: "/"``.
    """
    if rewrite.uri_regex is not None:
        regex, template = _regex_rewriter(*rewrite.uri_regex)
        return str(regex.sub(template, path))
    replacement = rewrite.uri
    if not replacement:  # istiod ignores an empty rewrite.uri
        return path
    uri = matched.uri if matched is not None else None
    if uri is None or uri.kind == "present":
        return replacement + path[len(DEFAULT_PREFIX) :]
    if uri.kind == "prefix":
        # Case-insensitive prefixes replace the same number of characters.
        return replacement + path[len(uri.value) :]
    return replacement  # exact or regex: the matched part is the whole path


def rewrite_authority(rewrite: Rewrite | None, authority: str) -> str:
    """The Host to send: ``rewrite.authority`` (Envoy ``host_rewrite_literal``) or unchanged."""
    if rewrite is not None and rewrite.authority:
        return rewrite.authority
    return authority


# --------------------------------------------------------------------------- redirects


def _split_port(authority: str) -> tuple[str, str]:
    """``(host, ":port")`` as Envoy's processRequestHost splits them (IPv6 aware)."""
    if authority.startswith("["):
        end = authority.rfind("]:")
        if end == -1:
            return authority, ""
        end += 1
    else:
        end = authority.rfind(":")
        if end == -1:
            return authority, ""
    return authority[:end], authority[end:]


def _query_string(query: Mapping[str, str]) -> str:
    items: Any = query.items()  # multidicts yield every (key, value) pair
    return urlencode(list(items))


def redirect_location(
    redirect: Redirect, request: RequestView, port: int, query: str | None = None
) -> tuple[int, str]:
    """``(status, Location)`` for a redirect route.

    ``port`` is the port the request was sent to (the route configuration's
    port: istiod resolves ``derivePort: FROM_REQUEST_PORT`` to it). ``query``
    is the raw query string without ``?``; when ``None`` it is rebuilt from
    ``request.query``. The request's scheme stands in for Envoy's
    ``x-forwarded-proto``.
    """
    status = redirect.code or 301
    scheme = redirect.scheme or request.scheme
    new_port = 0
    if redirect.port:
        new_port = redirect.port
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        new_port = port
    if new_port and _DEFAULT_PORT.get(scheme) == new_port:
        new_port = 0  # istiod: no explicit :80 for http or :443 for https
    port_text = f":{new_port}" if new_port else ""

    if redirect.authority:
        host = redirect.authority
    else:
        host = request.authority
        bare, request_port = _split_port(host)
        if request_port:
            remove = bool(port_text)
            if scheme != request.scheme:
                remove = remove or request_port == f":{_DEFAULT_PORT.get(request.scheme, 0)}"
            if remove:
                host = bare

    if query is None:
        query = _query_string(request.query) if request.query else ""
    if redirect.uri:
        path = redirect.uri
        if "?" not in path and query:
            path = f"{path}?{query}"
    else:
        path = f"{request.path}?{query}" if query else request.path
    if not path.startswith("/"):
        path = "/" + path
    return status, f"{scheme}://{host}{port_text}{path}"


# --------------------------------------------------------------------------- headers


def is_internal_header(name: str) -> bool:
    """Pseudo-headers and Host, which istiod drops from header operations."""
    return name.startswith(":") or name.lower() == "host"


def authority_from_header_ops(ops: HeaderOps) -> str | None:
    """The Host that istiod derives from ``set``/``add`` of ``:authority``/``host`` (``set`` wins).

    istiod turns such an entry into the route's ``host_rewrite_literal``
    instead of a header edit; the config compiler or adapter can use this.
    """
    found: str | None = None
    for entries in (ops.add, ops.set):
        for name, value in entries:
            if name.lower() in (":authority", "host"):
                found = value
    return found


def apply_header_ops(ops: HeaderOps, headers: MutableMapping[str, str]) -> None:
    """Apply ``remove``, then ``set`` (overwrite), then ``add`` (append) to ``headers`` in place.

    ``headers`` is a ``CIMultiDict`` (``add`` appends another entry, ``remove``
    drops every entry) or a plain mapping with lower-case keys (``add`` joins
    onto an existing value with ``,``, the equivalent single-field form).
    """
    if ops.empty:
        return
    add_entry = getattr(headers, "add", None)
    pop_all = getattr(headers, "popall", None)
    case_insensitive = add_entry is not None
    for name in ops.remove:
        if is_internal_header(name):
            continue
        if pop_all is not None:
            pop_all(name, None)
        else:
            headers.pop(name if case_insensitive else name.lower(), None)
    for name, value in ops.set:
        if not is_internal_header(name):
            headers[name if case_insensitive else name.lower()] = value
    for name, value in ops.add:
        if is_internal_header(name):
            continue
        if add_entry is not None:
            add_entry(name, value)
        else:
            key = name.lower()
            existing = headers.get(key)
            headers[key] = value if existing is None else f"{existing},{value}"


# --------------------------------------------------------------------------- mirrors


def should_mirror(mirror: Mirror, rng: random.Random) -> bool:
    """Draw whether this request is mirrored: 100 (the default) always, 0 never."""
    percent = mirror.percent
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    return rng.random() * 100.0 < percent


def mirrors_to_send(route: Route, rng: random.Random) -> list[Mirror]:
    """The route's mirrors that fire for this request (one independent draw each)."""
    return [m for m in route.mirrors if should_mirror(m, rng)]


def shadow_authority(authority: str) -> str:
    """Envoy's shadow Host: ``-shadow`` after the host name, before a ``:port``.

    Like Envoy, only a ``host:port`` with a single colon gets the suffix
    before the port; anything else (an IPv6 literal) gets it at the end.
    """
    if authority.count(":") == 1:
        host, _, port = authority.partition(":")
        return f"{host}-shadow:{port}"
    return authority + "-shadow"
