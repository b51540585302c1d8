"""xDS resources → one consistent :class:`MeshSnapshot` (the meshlib xDS client's side).

``snapshot_from_resources`` decodes every resource (raising
:class:`XdsDecodeError` on the first one meshlib cannot accept) and assembles:

- clusters, each with the endpoints of its ClusterLoadAssignment (EDS name =
  ``eds_cluster_config.service_name`` or the cluster name; none received yet →
  no endpoints) or of its inline ``load_assignment``;
- route configurations from RDS plus those inlined in listeners;
- consistent-hash inputs: Envoy keeps them on routes, the model on clusters,
  so a hashed cluster without meshlib metadata takes the ``hash_policy`` of
  the first route that sends to it;
- services, inferred from cluster names ``outbound|<port>|<subset>|<fqdn>``
  (namespace from meshlib or istio metadata, else the second label of a
  ``*.svc.cluster.local`` name; protocol HTTP unless meshlib metadata says
  otherwise).

Routes may name clusters not (yet) received — as in Envoy, such a route
answers "cluster not found"; :func:`dangling_clusters` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Literal

from google.protobuf.message import Message

from meshlib.config.model import (
    Cluster,
    Endpoint,
    LbKind,
    Listener,
    MeshSnapshot,
    RouteConfiguration,
    Service,
    ServicePort,
    WorkloadIdentity,
)
from meshlib.xds import type_urls
from meshlib.xds.decode_clusters import DecodedCluster, decode_cluster
from meshlib.xds.decode_common import InvalidDuration, XdsDecodeError, as_int
from meshlib.xds.decode_endpoints import decode_load_assignment
from meshlib.xds.decode_listeners import decode_listener
from meshlib.xds.decode_routes import decode_route_configuration

_HASHED = (LbKind.RING_HASH, LbKind.MAGLEV)
_DEFAULT_WORKLOAD = WorkloadIdentity()


def decode_resource(type_url: str, name: str, message: Message) -> Any:
    """Decode (validate) one resource by type; XdsDecodeError when meshlib cannot accept it."""
    try:
        if type_url == type_urls.CLUSTER:
            return decode_cluster(message)
        if type_url == type_urls.CLUSTER_LOAD_ASSIGNMENT:
            return decode_load_assignment(message, name)
        if type_url == type_urls.ROUTE_CONFIGURATION:
            return decode_route_configuration(message, name)
        if type_url == type_urls.LISTENER:
            return decode_listener(message)
    except InvalidDuration as exc:  # raised where the value is read; the resource is named here
        raise XdsDecodeError(type_url, name, exc.field, exc.message) from None
    raise XdsDecodeError(type_url, name, "", "unsupported resource type")


def snapshot_from_resources(
    resources: Mapping[str, Mapping[str, Message]],
    workload: WorkloadIdentity = _DEFAULT_WORKLOAD,
    version: str = "",
) -> MeshSnapshot:
    """Assemble a snapshot from ``{type_url: {name: message}}`` (types may be missing)."""
    # decode_resource: every error names its resource (a duration's too).
    decoded = [decode_resource(type_urls.CLUSTER, n, m) for n, m in resources.get(type_urls.CLUSTER, {}).items()]
    assignments = {
        name: decode_resource(type_urls.CLUSTER_LOAD_ASSIGNMENT, name, message)
        for name, message in resources.get(type_urls.CLUSTER_LOAD_ASSIGNMENT, {}).items()
    }
    route_configs: dict[str, RouteConfiguration] = {}
    hash_policies: dict[str, Any] = {}
    for name, message in resources.get(type_urls.ROUTE_CONFIGURATION, {}).items():
        routes = decode_resource(type_urls.ROUTE_CONFIGURATION, name, message)
        route_configs[name] = routes.config
        for cluster_name, policies in routes.hash_policies.items():
            hash_policies.setdefault(cluster_name, policies)
    listeners: dict[str, Listener] = {}
    for name, message in resources.get(type_urls.LISTENER, {}).items():
        result = decode_resource(type_urls.LISTENER, name, message)
        if result is None:
            continue
        listener, inline = result
        listeners[listener.name] = listener
        if inline is not None:
            route_configs.setdefault(inline.config.name, inline.config)
            for cluster_name, policies in inline.hash_policies.items():
                hash_policies.setdefault(cluster_name, policies)

    clusters: dict[str, Cluster] = {}
    for item in decoded:
        cluster = replace(item.cluster, endpoints=_endpoints(item, assignments))
        lb = cluster.policy.lb
        if not item.has_hash_policies and lb.kind in _HASHED and cluster.name in hash_policies:
            lb = replace(lb, hash_policies=hash_policies[cluster.name])
            cluster = replace(cluster, policy=replace(cluster.policy, lb=lb))
        clusters[cluster.name] = cluster

    return MeshSnapshot(
        version=version,
        services=MappingProxyType(_services(decoded)),
        clusters=MappingProxyType(clusters),
        route_configs=MappingProxyType(route_configs),
        listeners=MappingProxyType(listeners),
        workload=workload,
    )


def dangling_clusters(snapshot: MeshSnapshot) -> list[str]:
    """Cluster names that routes or mirrors reference but the snapshot lacks (sorted)."""
    missing: set[str] = set()
    for config in snapshot.route_configs.values():
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                names = [d.cluster for d in route.destinations] + [m.cluster for m in route.mirrors]
                missing.update(n for n in names if n not in snapshot.clusters)
    return sorted(missing)


def _endpoints(item: DecodedCluster, assignments: Mapping[str, tuple[Endpoint, ...]]) -> tuple[Endpoint, ...]:
    if item.eds_name is not None:
        return assignments.get(item.eds_name, ())
    if item.inline_assignment is not None:
        return decode_load_assignment(item.inline_assignment, item.cluster.name)
    return ()


def _services(decoded: list[DecodedCluster]) -> dict[str, Service]:
    ports: dict[str, dict[int, ServicePort]] = {}
    first: dict[str, DecodedCluster] = {}
    for item in decoded:
        cluster = item.cluster
        if not cluster.port:
            continue  # not an outbound|port|subset|fqdn cluster: no service behind it
        first.setdefault(cluster.service, item)
        hint = item.service_hint
        target = hint.get("target_port")
        port = ServicePort(
            number=cluster.port,
            protocol=str(hint.get("protocol", "HTTP")),
            name=str(hint.get("port_name", "")),
            target_port=as_int(target) if target is not None else None,
        )
        known = ports.setdefault(cluster.service, {})
        if cluster.port not in known or not cluster.subset:
            known[cluster.port] = port
    services: dict[str, Service] = {}
    for fqdn, item in first.items():
        hint = item.service_hint
        namespace = str(hint.get("namespace") or _namespace(fqdn))
        resolution = hint.get("resolution", item.cluster.resolution)
        location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = (
            "MESH_INTERNAL" if fqdn.endswith(".svc.cluster.local") else "MESH_EXTERNAL"
        )
        if hint.get("location") == "MESH_INTERNAL":
            location = "MESH_INTERNAL"
        elif hint.get("location") == "MESH_EXTERNAL":
            location = "MESH_EXTERNAL"
        services[fqdn] = Service(
            fqdn=fqdn,
            namespace=namespace,
            ports=tuple(ports[fqdn].values()),
            resolution=_resolution(resolution),
            location=location,
        )
    return services


def _namespace(fqdn: str) -> str:
    parts = fqdn.split(".")
    return parts[1] if fqdn.endswith(".svc.cluster.local") and len(parts) > 2 else ""


def _resolution(value: Any) -> Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"]:
    if value == "DNS":
        return "DNS"
    if value == "DNS_ROUND_ROBIN":
        return "DNS_ROUND_ROBIN"
    if value == "NONE":
        return "NONE"
    return "STATIC"
