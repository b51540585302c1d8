"""Envoy ``Listener`` (LDS) → model :class:`Listener` (+ an inline route configuration).

Accepted shapes: a proxyless-gRPC ``api_listener`` named ``<host>:<port>``
and a socket listener (istiod's ``0.0.0.0_<port>``) whose filter chains hold
an HttpConnectionManager. The HCM takes its routes by RDS over ADS or inline
(``route_config``); the inline configuration is returned so the snapshot can
hold it. ``http_filters`` must end with the router, as Envoy and gRPC require.

Listeners without an HCM (TCP proxies, inbound/virtual listeners istiod also
sends to sidecars), and servers' own listeners (``traffic_direction:
INBOUND`` or a ``grpc/server?…`` name), are not meshlib's concern:
``decode_listener`` returns None for them. Rejected: scoped routes, RDS from anything but ADS.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshlib.config.model import Listener
from meshlib.xds import type_urls
from meshlib.xds.decode_common import Where, unpack
from meshlib.xds.decode_routes import DecodedRoutes, decode_route_configuration

HCM = hcm_pb2.HttpConnectionManager
SERVER_LISTENER_PREFIX = "grpc/server?"  # xDS-enabled gRPC servers' listeners (gRFC A36 names)
_HCM_NAME = HCM.DESCRIPTOR.full_name


def decode_listener(message: Any) -> tuple[Listener, DecodedRoutes | None] | None:
    """(listener, inline routes or None), or None for a listener without an HTTP connection manager."""
    where = Where(type_urls.LISTENER, message.name)
    if not message.name:
        raise where.error("name", "must not be empty")
    inbound = message.traffic_direction == base_pb2.TrafficDirection.INBOUND
    if inbound or message.name.startswith(SERVER_LISTENER_PREFIX):
        return None  # a server's own (inbound) listener: how it serves, not where this client sends
    if message.HasField("api_listener"):
        manager = unpack(message.api_listener.api_listener, HCM, where, "api_listener.api_listener")
        port = _port_from_name(message.name)
        path = "api_listener.api_listener"
    else:
        found = _find_hcm(message, where)
        if found is None:
            return None
        manager, path = found
        socket = message.address.socket_address
        port = socket.port_value if message.address.HasField("socket_address") else _port_from_name(message.name)
    return _listener(message.name, port, manager, where, path)


def _find_hcm(message: Any, where: Where) -> tuple[Any, str] | None:
    chains = list(enumerate(message.filter_chains))
    if message.HasField("default_filter_chain"):
        chains.append((-1, message.default_filter_chain))
    for i, chain in chains:
        chain_path = f"filter_chains[{i}]" if i >= 0 else "default_filter_chain"
        for j, network_filter in enumerate(chain.filters):
            typed = network_filter.typed_config
            if network_filter.name == type_urls.HCM_FILTER_NAME or typed.type_url.endswith("/" + _HCM_NAME):
                path = f"{chain_path}.filters[{j}].typed_config"
                return unpack(typed, HCM, where, path), path
    return None


def _listener(name: str, port: int, manager: Any, where: Where, path: str) -> tuple[Listener, DecodedRoutes | None]:
    filters = manager.http_filters
    if not filters:
        raise where.error(f"{path}.http_filters", "must not be empty (the router filter is required)")
    last = filters[-1]
    if last.name != type_urls.ROUTER_FILTER_NAME and last.typed_config.type_url != type_urls.ROUTER:
        raise where.error(
            f"{path}.http_filters[{len(filters) - 1}]", f"the last filter must be the router, got {last.name!r}"
        )
    kind = manager.WhichOneof("route_specifier")
    if kind == "rds":
        source = manager.rds.config_source.WhichOneof("config_source_specifier")
        if source not in ("ads", "self", None):
            raise where.error(f"{path}.rds.config_source", f"only ADS is supported, got {source}")
        if not manager.rds.route_config_name:
            raise where.error(f"{path}.rds.route_config_name", "must not be empty")
        return Listener(name, port, manager.rds.route_config_name), None
    if kind == "route_config":
        route_name = manager.route_config.name or name
        return Listener(name, port, route_name), decode_route_configuration(manager.route_config, route_name)
    raise where.error(f"{path}.{kind or 'route_specifier'}", "unsupported (use rds or route_config)")


def _port_from_name(name: str) -> int:
    """``reviews.default.svc.cluster.local:9080`` / ``0.0.0.0_9080`` → 9080 (0 when absent)."""
    for separator in (":", "_"):
        tail = name.rsplit(separator, 1)
        if len(tail) == 2 and tail[1].isdigit():
            return int(tail[1])
    return 0
