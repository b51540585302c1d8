"""Model listeners → Envoy ``Listener`` (LDS), per client kind.

- **GRPC_PROXYLESS**: one ``api_listener`` per virtual host, named like it,
  ``<fqdn>:<port>`` — exactly the name a ``xds:///<fqdn>:<port>`` target asks
  for — wrapping an HttpConnectionManager whose routes come by RDS over ADS
  (``route_config_name`` = the port, the same route configuration sidecars
  use; the client picks the virtual host by its target authority). HTTP
  filters: the fault filter (gRFC A33), then the router, last as gRPC requires.
- **ENVOY / MESHLIB**: istiod's outbound listener ``0.0.0.0_<port>``, bound to
  ``bind_address:<port>`` (default 127.0.0.1: a local Envoy is the app's
  egress proxy, not a transparent sidecar), one filter chain with the HCM:
  RDS over ADS, ``stat_prefix`` ``outbound_0.0.0.0_<port>``, filters CORS,
  fault, local rate limit (disabled unless a route enables it), router.

``inline_routes`` (for static Envoy bootstraps) puts the route configuration
into the HCM instead of RDS.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshlib.config.model import Listener, RouteConfiguration
from meshlib.xds import type_urls
from meshlib.xds.encode_common import pack
from meshlib.xds.encode_routes import RATE_LIMIT_STAT_PREFIX

HCM = hcm_pb2.HttpConnectionManager
DEFAULT_BIND_ADDRESS = "127.0.0.1"


def encode_api_listener(name: str, route_config: str) -> Any:
    """A proxyless-gRPC listener ``name`` (``<fqdn>:<port>``) reading ``route_config`` by RDS."""
    out = listener_pb2.Listener(name=name)
    manager = _hcm(f"outbound_{name}", route_config, grpc=True)
    out.api_listener.api_listener.CopyFrom(pack(manager))
    return out


def encode_listener(
    listener: Listener,
    *,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    inline_routes: Any | None = None,
) -> Any:
    """An Envoy outbound listener for one model listener (one HTTP port)."""
    out = listener_pb2.Listener(name=listener.name)
    address = out.address.socket_address
    address.address = bind_address
    address.port_value = listener.port
    manager = _hcm(f"outbound_0.0.0.0_{listener.port}", listener.route_config, grpc=False)
    if inline_routes is not None:
        manager.route_config.CopyFrom(inline_routes)
    chain = out.filter_chains.add()
    chain.filters.append(listener_components_pb2.Filter(name=type_urls.HCM_FILTER_NAME, typed_config=pack(manager)))
    return out


def grpc_listener_names(route_configs: dict[str, RouteConfiguration]) -> list[tuple[str, str]]:
    """(listener name, route configuration name) for every virtual host a gRPC target can name."""
    return [(vhost.name, config.name) for config in route_configs.values() for vhost in config.virtual_hosts]


def _hcm(stat_prefix: str, route_config: str, *, grpc: bool) -> Any:
    manager = HCM(stat_prefix=stat_prefix)
    rds = manager.rds
    rds.route_config_name = route_config
    rds.config_source.ads.SetInParent()
    rds.config_source.resource_api_version = config_source_pb2.ApiVersion.V3
    filters = manager.http_filters
    if not grpc:
        filters.add(name=type_urls.CORS_FILTER_NAME).typed_config.CopyFrom(pack(cors_pb2.Cors()))
    filters.add(name=type_urls.FAULT_FILTER_NAME).typed_config.CopyFrom(pack(fault_pb2.HTTPFault()))
    if not grpc:
        limiter = local_rate_limit_pb2.LocalRateLimit(stat_prefix=RATE_LIMIT_STAT_PREFIX)
        filters.add(name=type_urls.LOCAL_RATE_LIMIT_FILTER_NAME).typed_config.CopyFrom(pack(limiter))
    filters.add(name=type_urls.ROUTER_FILTER_NAME).typed_config.CopyFrom(pack(router_pb2.Router()))
    return manager
