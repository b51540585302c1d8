"""meshlib.controlplane: the protocol core of meshlib's xDS control plane.

A snapshot cache (per node group, each resource serialised once per version,
consistency check) and an ADS server (SotW and delta over grpc.aio) that only
handles nonces, versions and ACK/NACK — go-control-plane's split — plus
istiod-style debouncing and an ``istioctl proxy-status``-like status.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlib.controlplane.cache import (
        InconsistentSnapshot,
        PackedResource,
        ResourceSnapshot,
        SnapshotCache,
        TypeResources,
    )
    from meshlib.controlplane.debounce import DebouncedTrigger, Debouncer
    from meshlib.controlplane.nodes import client_kind
    from meshlib.controlplane.plane import ControlPlane, SnapshotSource
    from meshlib.controlplane.references import ReferenceExtractor, default_references
    from meshlib.controlplane.runner import run_control_plane
    from meshlib.controlplane.server import AggregatedDiscoveryService
    from meshlib.controlplane.sources import FileSnapshotSource
    from meshlib.controlplane.status import StatusBoard, StreamStatus, TypeStatus, render_status_table
    from meshlib.controlplane.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

# Names are imported lazily: the status table (``meshlib status``) needs no gRPC/protobuf modules.
_HOMES = {
    "InconsistentSnapshot": "cache", "PackedResource": "cache", "ResourceSnapshot": "cache",
    "SnapshotCache": "cache", "TypeResources": "cache",
    "DebouncedTrigger": "debounce", "Debouncer": "debounce",
    "client_kind": "nodes",
    "ControlPlane": "plane", "SnapshotSource": "plane",
    "ReferenceExtractor": "references", "default_references": "references",
    "run_control_plane": "runner",
    "AggregatedDiscoveryService": "server",
    "FileSnapshotSource": "sources",
    "StatusBoard": "status", "StreamStatus": "status", "TypeStatus": "status", "render_status_table": "status",
    "CLUSTER": "typeurls", "ENDPOINT": "typeurls", "LISTENER": "typeurls", "ROUTE": "typeurls",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'meshlib.controlplane' has no attribute {name!r}")
    from meshlib.extras import require_extra

    with require_extra("xds", f"meshlib.controlplane.{name}"):
        return getattr(importlib.import_module(f"meshlib.controlplane.{home}"), name)


__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "AggregatedDiscoveryService",
    "ControlPlane",
    "DebouncedTrigger",
    "Debouncer",
    "FileSnapshotSource",
    "InconsistentSnapshot",
    "PackedResource",
    "ReferenceExtractor",
    "ResourceSnapshot",
    "SnapshotCache",
    "SnapshotSource",
    "StatusBoard",
    "StreamStatus",
    "TypeResources",
    "TypeStatus",
    "client_kind",
    "default_references",
    "render_status_table",
    "run_control_plane",
]
