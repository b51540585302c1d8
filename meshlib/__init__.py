"""meshlib: an in-process service mesh for Python.

Istio-style configuration (VirtualService, DestinationRule, ServiceEntry),
applied inside the process to aiohttp (and gRPC) calls: routing, weighted
canaries, load balancing, and — in later releases — retries, timeouts,
circuit breaking and trace propagation. See ``meshlib.Mesh``.
"""

from meshlib.errors import ConfigInvalid, ConfigProblem, MeshError
from meshlib.mesh import Mesh

__all__ = ["ConfigInvalid", "ConfigProblem", "Mesh", "MeshError"]
__version__ = "0.1.0"
