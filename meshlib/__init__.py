"""meshlib: an in-process service mesh for Python.

Istio configuration (VirtualService, DestinationRule, ServiceEntry — from YAML
files, an xDS control plane or Consul) applied inside the process to aiohttp
and gRPC calls: routing, weighted canaries, load balancing, retries, timeouts,
circuit breaking, outlier detection, fault injection, rate limits, trace
propagation, OpenTelemetry spans and Istio's metrics. See ``meshlib.Mesh``::

    mesh = meshlib.Mesh.from_files()   # no argument: the embedded bookinfo mesh (``meshlib demo``)
"""

from typing import TYPE_CHECKING, Any

from meshlib.errors import ConfigInvalid, ConfigProblem, MeshError

if TYPE_CHECKING:
    from meshlib.mesh import Mesh
    from meshlib.security.peer import peer_identity


def __getattr__(name: str) -> Any:
    # Mesh (and aiohttp behind it) is imported on first use: ``import meshlib.testing`` —
    # the pytest plugin, loaded into every test run of a project with meshlib installed — stays cheap.
    if name == "Mesh":
        from meshlib.mesh import Mesh

        return Mesh
    if name == "peer_identity":  # the verified SPIFFE ID of an aiohttp request's client (mTLS), or None
        from meshlib.security.peer import peer_identity

        return peer_identity
    raise AttributeError(f"module 'meshlib' has no attribute {name!r}")


__all__ = ["ConfigInvalid", "ConfigProblem", "Mesh", "MeshError", "peer_identity"]
__version__ = "0.1.0"
