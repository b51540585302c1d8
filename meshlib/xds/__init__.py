"""xDS: translation between the model and xDS protos, and the gRPC bootstrap.

- :func:`encode_resources` — a :class:`MeshSnapshot` → ``{type_url: {name: proto}}``
  as istiod would send it, tailored to the client kind (:class:`ClientKind`,
  recognised by :func:`client_kind_from_node`).
- :func:`snapshot_from_resources` — xDS protos (istiod's or ours) → a validated
  snapshot; :class:`XdsDecodeError` names the resource and field it rejects.
- :func:`grpc_bootstrap` / :func:`load_bootstrap` — gRPC xDS bootstrap JSON.

Requires the ``xds`` extra (``xds-protos``), except the bootstrap helpers:
names are imported lazily, so ``meshlib bootstrap`` works from the base install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlib.xds.bootstrap import BootstrapError, grpc_bootstrap, load_bootstrap
    from meshlib.xds.clients import ClientKind, client_kind_from_node
    from meshlib.xds.decode_common import XdsDecodeError
    from meshlib.xds.decode_snapshot import dangling_clusters, decode_resource, snapshot_from_resources
    from meshlib.xds.encode_snapshot import Resources, encode_resources

_HOMES = {
    "BootstrapError": "bootstrap", "grpc_bootstrap": "bootstrap", "load_bootstrap": "bootstrap",
    "ClientKind": "clients", "client_kind_from_node": "clients",
    "XdsDecodeError": "decode_common",
    "dangling_clusters": "decode_snapshot", "decode_resource": "decode_snapshot",
    "snapshot_from_resources": "decode_snapshot",
    "Resources": "encode_snapshot", "encode_resources": "encode_snapshot",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'meshlib.xds' has no attribute {name!r}")
    from meshlib.extras import require_extra

    with require_extra("xds", f"meshlib.xds.{name}"):
        return getattr(importlib.import_module(f"meshlib.xds.{home}"), name)

__all__ = [
    "BootstrapError",
    "ClientKind",
    "Resources",
    "XdsDecodeError",
    "client_kind_from_node",
    "dangling_clusters",
    "decode_resource",
    "encode_resources",
    "grpc_bootstrap",
    "load_bootstrap",
    "snapshot_from_resources",
]
