"""xDS v3 type URLs and their short names (LDS/RDS/CDS/EDS), as istioctl prints them.

The protocol core is generic over resource types; these constants only name the
four types whose relations it knows about (consistency checks, wildcard
defaults, push order).
"""

from __future__ import annotations

from meshlib.xds.type_urls import CLUSTER, LISTENER, PREFIX
from meshlib.xds.type_urls import CLUSTER_LOAD_ASSIGNMENT as ENDPOINT
from meshlib.xds.type_urls import ROUTE_CONFIGURATION as ROUTE

__all__ = [
    "CLUSTER", "ENDPOINT", "LISTENER", "PUSH_ORDER", "ROUTE", "SECRET", "SHORT_NAMES", "WILDCARD_TYPES",
    "push_rank", "short_name",
]

SECRET = PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

SHORT_NAMES: dict[str, str] = {CLUSTER: "CDS", LISTENER: "LDS", ENDPOINT: "EDS", ROUTE: "RDS", SECRET: "SDS"}

#: Types for which an empty SotW subscription means "everything" (xDS spec: only
#: LDS and CDS support the legacy wildcard; RDS/EDS are always named).
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER})

#: Push order for ADS, "make before break" as in the xDS spec and go-control-plane:
#: clusters and their endpoints before the listeners and routes that point at them.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def short_name(type_url: str) -> str:
    """``CDS`` for the Cluster type URL; the message name for types without a short name."""
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


def push_rank(type_url: str) -> int:
    """Sort key putting known types in :data:`PUSH_ORDER` and any other type after them."""
    try:
        return PUSH_ORDER.index(type_url)
    except ValueError:
        return len(PUSH_ORDER)
