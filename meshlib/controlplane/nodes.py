"""Node → node group (default: the client kind) and a printable user agent.

istiod tailors what it sends by proxy type; meshlib does the same by client
kind. The classification itself lives with the translator
(:func:`meshlib.xds.clients.client_kind_from_node`: ``GRPC_PROXYLESS``,
``ENVOY``, ``MESHLIB``) so the cache's group keys are exactly the kinds
``encode_resources`` accepts; this module only adapts it to the cache's
``Node -> str`` signature.
"""

from __future__ import annotations

from typing import Any

from meshlib.xds.clients import client_kind_from_node


def client_kind(node: Any) -> str:
    """The default node group: the client kind's string value (e.g. ``GRPC_PROXYLESS``)."""
    return str(client_kind_from_node(node))


def user_agent(node: Any) -> str:
    """``name/version`` of the client, as istioctl's VERSION column would show it."""
    version = node.user_agent_version
    return f"{node.user_agent_name}/{version}" if version else str(node.user_agent_name)
