"""The transport-neutral view of one outbound request that routing and balancing read.

Adapters (aiohttp, gRPC) build a :class:`RequestView`; routing and balancing
never see aiohttp or grpc objects. Header and query mappings are expected to
be case-insensitive for headers (aiohttp's ``CIMultiDict``) — plain dicts
must use lower-case header names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(slots=True)
class RequestView:
    method: str
    authority: str  # host[:port] as the caller wrote it
    path: str  # without the query string
    scheme: str = "http"
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    query: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    source_ip: str = ""
