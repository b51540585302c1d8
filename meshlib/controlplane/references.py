"""Which resource names a resource points at, for the snapshot consistency check.

go-control-plane's ``Snapshot.Consistent()`` checks that every route
configuration named by a listener and every endpoint assignment named by a
cluster is in the same snapshot, so a client is never sent a listener whose
routes will never arrive. The cache takes the extraction as a callable
(:data:`ReferenceExtractor`) so it stays generic; :func:`default_references`
understands the two relations that matter for HTTP/gRPC:

- Listener → ``HttpConnectionManager.rds.route_config_name`` (in an
  ``api_listener`` as proxyless gRPC uses, or in any filter chain as Envoy uses);
- Cluster of type EDS → ``eds_cluster_config.service_name``, or the cluster
  name when that is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshlib.controlplane.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

#: ``(type_url, resource) -> [(referenced type_url, referenced name), ...]``
ReferenceExtractor = Callable[[str, Message], Iterable[tuple[str, str]]]

_HCM_TYPE = "type.googleapis.com/" + http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def _hcm_route_names(packed: any_pb2.Any) -> Iterator[str]:
    if packed.type_url != _HCM_TYPE:
        return
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    packed.Unpack(hcm)
    if hcm.WhichOneof("route_specifier") == "rds" and hcm.rds.route_config_name:
        yield hcm.rds.route_config_name


def listener_route_names(listener: listener_pb2.Listener) -> Iterator[str]:
    """RDS names used by a listener's HTTP connection managers."""
    if listener.HasField("api_listener"):
        yield from _hcm_route_names(listener.api_listener.api_listener)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.HasField("typed_config"):
                yield from _hcm_route_names(network_filter.typed_config)


def cluster_eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The EDS resource name a cluster needs, or None when it is not an EDS cluster."""
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return str(cluster.eds_cluster_config.service_name or cluster.name)


def default_references(type_url: str, resource: Message) -> Iterable[tuple[str, str]]:
    """Listener → RouteConfiguration and Cluster → ClusterLoadAssignment references."""
    if type_url == LISTENER and isinstance(resource, listener_pb2.Listener):
        return [(ROUTE, name) for name in listener_route_names(resource)]
    if type_url == CLUSTER and isinstance(resource, cluster_pb2.Cluster):
        name = cluster_eds_name(resource)
        return [] if name is None else [(ENDPOINT, name)]
    return []
