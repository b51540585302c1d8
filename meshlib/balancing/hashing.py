"""Request and endpoint hashes for consistent hashing (Envoy ``hash_policy``).

Request hash (:func:`request_hash`), as Envoy's ``HashPolicyImpl``: each
policy in order yields xxHash64 (seed 0) of its input or nothing —

* ``header``: the header value; several values are sorted and hashed as one
  concatenated string, so their order on the wire does not matter;
* ``cookie``: the named cookie from the ``Cookie`` header;
* ``source_ip``: the caller's IP address text;
* ``query_parameter``: the first value of the named query parameter.

Hashes combine as ``h = rotl64(h, 1) XOR next``: the rotation keeps two
identical policies from cancelling out. A ``terminal`` policy stops the walk
once *some* hash exists (its own or an earlier one). No hash at all → ``None``,
and the hash pickers then choose a random point.

Endpoint hash key (:func:`endpoint_hash_key`): Envoy keys ring and maglev
entries by the host's address string, ``ip:port`` (``[v6]:port`` for IPv6),
so we do the same; ring entries become ``"<ip:port>_<i>"``. Matching Envoy's
key makes a meshlib ring place hosts exactly where an Envoy ring would.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from meshlib.config.model import Endpoint, HashPolicy
from meshlib.request import RequestView

__all__ = ["cookie_value", "endpoint_hash_key", "request_hash", "rotl64", "xxh64"]

_MASK64 = (1 << 64) - 1
_xxh64_intdigest = xxhash.xxh64_intdigest


def xxh64(text: str, seed: int = 0) -> int:
    """xxHash64 of the UTF-8 bytes of ``text`` as an unsigned int."""
    return int(_xxh64_intdigest(text.encode(), seed))


def rotl64(value: int, bits: int = 1) -> int:
    """Rotate a 64-bit unsigned integer left."""
    return ((value << bits) | (value >> (64 - bits))) & _MASK64


def endpoint_hash_key(endpoint: Endpoint) -> str:
    """Envoy's address string for a host: ``ip:port``, or ``[ipv6]:port``."""
    address = endpoint.address
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{endpoint.port}"
    return f"{address}:{endpoint.port}"


def cookie_value(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header, first occurrence."""
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip()
            # RFC 6265 allows a DQUOTE-wrapped value; the quotes are not part of it.
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def _header_hash(request: RequestView, name: str) -> int | None:
    headers = request.headers
    getall = getattr(headers, "getall", None)
    if getall is not None:  # multidict: every value of a repeated header
        values: list[str] = list(getall(name, ()))
    else:
        single = headers.get(name)
        values = [] if single is None else [single]
    if not values:
        return None
    if len(values) == 1:
        return xxh64(values[0])
    return xxh64("".join(sorted(values)))


def _policy_hash(policy: HashPolicy, request: RequestView) -> int | None:
    kind = policy.kind
    if kind == "header":
        return _header_hash(request, policy.name.lower())
    if kind == "cookie":
        header = request.headers.get("cookie")
        if header is None:
            return None
        value = cookie_value(header, policy.name)
        return None if value is None else xxh64(value)
    if kind == "source_ip":
        return xxh64(request.source_ip) if request.source_ip else None
    if kind == "query_parameter":
        param = request.query.get(policy.name)
        return None if param is None else xxh64(param)
    return None


def request_hash(policies: Sequence[HashPolicy], request: RequestView) -> int | None:
    """Combine the hash policies over ``request``; ``None`` when none produced a value."""
    result: int | None = None
    for policy in policies:
        value = _policy_hash(policy, request)
        if value is not None:
            result = value if result is None else rotl64(result) ^ value
        if policy.terminal and result is not None:
            break
    return result
