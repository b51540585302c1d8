"""A whole :class:`MeshSnapshot` → xDS resources for one client kind.

``encode_resources`` returns ``{type_url: {resource_name: message}}`` with the
four resource types (CDS, EDS, LDS, RDS). EDS holds one ClusterLoadAssignment
per EDS-typed cluster (DNS clusters carry their endpoints inline; passthrough
clusters have none). See the ``encode_*`` modules for the shapes and the
per-client differences.
"""

from __future__ import annotations

from google.protobuf.message import Message

from meshlib.config.model import Locality, MeshSnapshot, Service
from meshlib.xds import type_urls
from meshlib.xds.clients import ClientKind
from meshlib.xds.encode_clusters import _TYPE, encode_cluster
from meshlib.xds.encode_endpoints import encode_load_assignment
from meshlib.xds.encode_listeners import (
    DEFAULT_BIND_ADDRESS,
    encode_api_listener,
    encode_listener,
    grpc_listener_names,
)
from meshlib.xds.encode_routes import encode_route_configuration

Resources = dict[str, dict[str, Message]]


def encode_resources(
    snapshot: MeshSnapshot,
    client: ClientKind,
    *,
    bind_address: str = DEFAULT_BIND_ADDRESS,
    client_locality: Locality | None = None,
) -> Resources:
    """Every xDS resource of ``snapshot`` as ``client`` should receive it.

    ``bind_address`` is where ENVOY/MESHLIB outbound listeners listen.
    ``client_locality`` (the node's locality) lets ENVOY and gRPC clients get
    Istio locality failover / distribute baked into EDS priorities and weights.
    """
    services = _services_by_fqdn(snapshot)
    clusters: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    for name, cluster in snapshot.clusters.items():
        encoded = encode_cluster(cluster, client, services.get(cluster.service))
        if encoded is None:
            continue
        clusters[name] = encoded
        if encoded.type == _TYPE.EDS:
            assignments[name] = encode_load_assignment(
                name, cluster.endpoints, client, lb=cluster.policy.lb, client_locality=client_locality
            )

    routes: dict[str, Message] = {
        name: encode_route_configuration(config, client, snapshot.clusters)
        for name, config in snapshot.route_configs.items()
    }
    listeners: dict[str, Message] = {}
    if client is ClientKind.GRPC_PROXYLESS:
        for listener_name, route_name in grpc_listener_names(dict(snapshot.route_configs)):
            listeners[listener_name] = encode_api_listener(listener_name, route_name)
    else:
        for name, listener in snapshot.listeners.items():
            listeners[name] = encode_listener(listener, bind_address=bind_address)
    return {
        type_urls.CLUSTER: clusters,
        type_urls.CLUSTER_LOAD_ASSIGNMENT: assignments,
        type_urls.LISTENER: listeners,
        type_urls.ROUTE_CONFIGURATION: routes,
    }


def _services_by_fqdn(snapshot: MeshSnapshot) -> dict[str, Service]:
    return {service.fqdn: service for service in snapshot.services.values()}


def resource_count(resources: Resources) -> dict[str, int]:
    """Resources per type (for logs and status)."""
    return {type_urls.short_name(url): len(named) for url, named in resources.items()}
