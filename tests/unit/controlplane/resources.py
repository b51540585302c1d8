"""Hand-written xDS resources shaped as grpcio's proxyless client requires (see ecosystem-notes.md)."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, wrappers_pb2

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE


def _any(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> Any:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=2)


def listener(name: str, route_name: str) -> Any:
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_name),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))],
    )
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_any(hcm)))


def route(name: str, cluster: str) -> Any:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(cluster=cluster),
                    )
                ],
            )
        ],
    )


def cluster(name: str, service_name: str = "") -> Any:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=service_name),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )


def assignment(name: str, *endpoints: tuple[str, int]) -> Any:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="r1", zone="z1"),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
                            )
                        ),
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                    )
                    for ip, port in endpoints
                ],
            )
        ],
    )


def service(target: str, endpoint: tuple[str, int], *, cluster_name: str = "C") -> dict[str, dict[str, Any]]:
    """One complete, consistent service: LDS ``target`` → RDS → CDS ``cluster_name`` (EDS) → one endpoint."""
    route_name = f"route-{target}"
    return {
        LISTENER: {target: listener(target, route_name)},
        ROUTE: {route_name: route(route_name, cluster_name)},
        CLUSTER: {cluster_name: cluster(cluster_name)},
        ENDPOINT: {cluster_name: assignment(cluster_name, endpoint)},
    }
