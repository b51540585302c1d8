"""meshlib.controlplane: the protocol core of meshlib's xDS control plane.

A snapshot cache (per node group, each resource serialised once per version,
consistency check) and an ADS server (SotW and delta over grpc.aio) that only
handles nonces, versions and ACK/NACK — go-control-plane's split — plus
istiod-style debouncing and an ``istioctl proxy-status``-like status.
"""

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
