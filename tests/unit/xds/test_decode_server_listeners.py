"""A server's own listener (xDS-enabled gRPC servers, istiod's inbound listeners) is not client routing."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from meshlib.grpc.proxyless import xds_server_listener
from meshlib.security.rbac_xds import rbac_http_filters
from meshlib.xds.decode_listeners import decode_listener


def test_grpc_server_listeners_are_skipped_not_nacked() -> None:
    # Their routes use non_forwarding_action, which a client cannot run: decoding must not NACK the LDS update.
    assert decode_listener(xds_server_listener("127.0.0.1", 50051)) is None


def test_inbound_listeners_are_skipped_whatever_their_name() -> None:
    listener = xds_server_listener("127.0.0.1", 50051)
    listener.name = "virtualInbound"
    listener.traffic_direction = base_pb2.TrafficDirection.INBOUND
    assert decode_listener(listener) is None


def test_server_listener_with_rbac_filters_keeps_the_router_last() -> None:
    from meshlib.config.model import WorkloadIdentity
    from meshlib.config.security_model import AuthorizationPolicySpec, AuthzRule, PolicyOrigin, SecurityPolicies

    deny_all = AuthorizationPolicySpec(PolicyOrigin("x.yaml", 1, "default", "deny"), "DENY", None, (AuthzRule(),))
    filters = rbac_http_filters(SecurityPolicies((deny_all,)), WorkloadIdentity())
    listener = xds_server_listener("127.0.0.1", 50051, http_filters=filters)
    manager_filters = [f.name for f in _manager(listener).http_filters]
    assert manager_filters == ["envoy.filters.http.rbac.deny", "envoy.filters.http.router"]


def _manager(listener: object) -> object:
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)  # type: ignore[attr-defined]
    return manager
