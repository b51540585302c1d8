"""meshlib: an in-process service mesh for Python.

Istio configuration (VirtualService, DestinationRule, ServiceEntry — from YAML
files, an xDS control plane or Consul) applied inside the process to aiohttp
and gRPC calls: routing, weighted canaries, load balancing, retries, timeouts,
circuit breaking, outlier detection, fault injection, rate limits, trace
propagation, OpenTelemetry spans and Istio's metrics. See ``meshlib.Mesh``::

    mesh = meshlib.Mesh.from_files()   # no argument: the embedded bookinfo mesh (``meshlib demo``)
"""

from meshlib.errors import ConfigInvalid, ConfigProblem, MeshError
from meshlib.mesh import Mesh

__all__ = ["ConfigInvalid", "ConfigProblem", "Mesh", "MeshError"]
__version__ = "0.1.0"
