"""Which kind of xDS client is asking, recognised from its ``Node``.

What each client sends (checked against their sources):

- grpcio (C-core, also grpc-python, grpc-ruby, ...): ``user_agent_name`` is
  ``"gRPC C-core <platform>"`` (``absl::StrCat("gRPC C-core ", GPR_PLATFORM_STRING, suffix)``
  in ``xds_client_grpc.cc``), ``user_agent_version`` ``"C-core <version>"``.
- grpc-js-xds: ``"gRPC Node Pure JS"``; grpc-go ``"gRPC Go"``; grpc-java ``"gRPC Java"``.
  Every gRPC implementation starts with ``"gRPC "``, so that prefix is the test.
- Istio's own proxyless bootstrap also sets node metadata ``GENERATOR: grpc``.
- Envoy: ``user_agent_name`` ``"envoy"``.
- meshlib: node metadata ``MESHLIB_CLIENT`` (any value) or ``user_agent_name`` ``"meshlib"``.

Unknown clients are treated as Envoy: the full, standard resource shapes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

MESHLIB_METADATA_KEY = "MESHLIB_CLIENT"
MESHLIB_USER_AGENT = "meshlib"


class ClientKind(StrEnum):
    GRPC_PROXYLESS = "GRPC_PROXYLESS"  # grpcio, grpc-js-xds, grpc-go, grpc-java
    ENVOY = "ENVOY"
    MESHLIB = "MESHLIB"


def client_kind_from_node(node: Any) -> ClientKind:
    """Classify an ``envoy.config.core.v3.Node``."""
    fields = node.metadata.fields
    agent = node.user_agent_name
    if MESHLIB_METADATA_KEY in fields or agent.lower() == MESHLIB_USER_AGENT:
        return ClientKind.MESHLIB
    if agent.startswith("gRPC ") or agent.lower().startswith("grpc"):
        return ClientKind.GRPC_PROXYLESS
    generator = fields.get("GENERATOR")
    if generator is not None and generator.string_value == "grpc":
        return ClientKind.GRPC_PROXYLESS
    return ClientKind.ENVOY
