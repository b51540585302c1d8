"""meshlib for gRPC: mesh-managed channels, proxyless xDS channels, server and sync interceptors.

- ``mesh.grpc_channel("reviews.default.svc.cluster.local:50051")`` — a ``grpc.aio``-compatible
  channel whose calls run the whole meshlib pipeline (:mod:`meshlib.grpc.channel`).
- :func:`xds_channel` — gRPC's own xDS client fed by an xDS control plane (proxyless).
- ``mesh.grpc_server_interceptor()`` — inbound deadline, trace context, policy and telemetry
  (:mod:`meshlib.grpc.server`); :class:`~meshlib.grpc.sync.MeshSyncClientInterceptor` for sync channels.

Names are imported lazily: the proxyless helpers need the ``xds`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MeshChannel",
    "MeshServerInterceptor",
    "MeshSyncClientInterceptor",
    "consul_grpc_registration",
    "install_bootstrap",
    "xds_channel",
]

_HOMES = {
    "MeshChannel": "meshlib.grpc.channel",
    "xds_channel": "meshlib.grpc.proxyless",
    "install_bootstrap": "meshlib.grpc.proxyless",
    "MeshServerInterceptor": "meshlib.grpc.server",
    "MeshSyncClientInterceptor": "meshlib.grpc.sync",
    "consul_grpc_registration": "meshlib.grpc.consul",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'meshlib.grpc' has no attribute {name!r}")
    import importlib

    from meshlib.extras import require_extra

    extra = "xds" if home == "meshlib.grpc.proxyless" else "grpc"
    with require_extra(extra, f"meshlib.grpc.{name}"):
        return getattr(importlib.import_module(home), name)
