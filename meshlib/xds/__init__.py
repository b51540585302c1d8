"""xDS: translation between the model and xDS protos, and the gRPC bootstrap.

- :func:`encode_resources` — a :class:`MeshSnapshot` → ``{type_url: {name: proto}}``
  as istiod would send it, tailored to the client kind (:class:`ClientKind`,
  recognised by :func:`client_kind_from_node`).
- :func:`snapshot_from_resources` — xDS protos (istiod's or ours) → a validated
  snapshot; :class:`XdsDecodeError` names the resource and field it rejects.
- :func:`grpc_bootstrap` / :func:`load_bootstrap` — gRPC xDS bootstrap JSON.

Requires the ``xds`` extra (``xds-protos``).
"""

from meshlib.xds.bootstrap import BootstrapError, grpc_bootstrap, load_bootstrap
from meshlib.xds.clients import ClientKind, client_kind_from_node
from meshlib.xds.decode_common import XdsDecodeError
from meshlib.xds.decode_snapshot import dangling_clusters, decode_resource, snapshot_from_resources
from meshlib.xds.encode_snapshot import Resources, encode_resources

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
