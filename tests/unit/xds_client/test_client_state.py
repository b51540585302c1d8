"""ClientState (no I/O) and the client's ACK/NACK requests, fed responses by hand."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from meshlib.config.model import WorkloadIdentity
from meshlib.discovery.xds import build_node
from meshlib.xds import ClientKind, client_kind_from_node, encode_resources
from meshlib.xds import type_urls as urls
from meshlib.xds.client import XdsClient
from meshlib.xds.client_state import ClientState, Rejected
from tests.unit.xds.helpers import rich_snapshot

REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"


def rich() -> dict[str, dict[str, Any]]:
    return {t: dict(v) for t, v in encode_resources(rich_snapshot(), ClientKind.MESHLIB).items()}


def packed(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def bad_cluster(name: str = REVIEWS_V1) -> Any:
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(rich()[urls.CLUSTER][name])
    cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    return cluster


def loaded() -> ClientState:
    state = ClientState(WorkloadIdentity())
    for type_url in (urls.CLUSTER, urls.LISTENER):
        state.apply(type_url, rich()[type_url], (), complete=True)
    for type_url in (urls.CLUSTER_LOAD_ASSIGNMENT, urls.ROUTE_CONFIGURATION):
        state.resubscribe(type_url)
        state.apply(type_url, rich()[type_url], (), complete=False)
    return state


def test_a_response_with_bad_resources_is_rejected_listing_each() -> None:
    state = ClientState(WorkloadIdentity())
    resources = rich()[urls.CLUSTER]
    other = "outbound|9080|v2|reviews.default.svc.cluster.local"
    items = [packed(m) for n, m in resources.items() if n not in (REVIEWS_V1, other)]
    items += [packed(bad_cluster()), packed(bad_cluster(other))]
    with pytest.raises(Rejected) as info:
        state.decode_all(urls.CLUSTER, items)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"Cluster {REVIEWS_V1}: lb_policy: ")
    assert lines[1].startswith(f"Cluster {other}: lb_policy: ")


def test_wrong_type_and_duplicates_are_rejected() -> None:
    state = ClientState(WorkloadIdentity())
    with pytest.raises(Rejected, match=r"expected envoy\.config\.cluster\.v3\.Cluster"):
        state.decode_all(urls.CLUSTER, [packed(route_pb2.RouteConfiguration(name="x"))])
    cluster = rich()[urls.CLUSTER][REVIEWS_V1]
    with pytest.raises(Rejected, match="duplicate"):
        state.decode_all(urls.CLUSTER, [packed(cluster), packed(cluster)])


def test_subscriptions_follow_listeners_and_clusters() -> None:
    state = loaded()
    assert state.names[urls.ROUTE_CONFIGURATION] == {"80", "8080", "9080", "9090"}
    assert REVIEWS_V1 in state.names[urls.CLUSTER_LOAD_ASSIGNMENT]
    assert "outbound|80||api.example.com" not in state.names[urls.CLUSTER_LOAD_ASSIGNMENT]  # DNS: inline endpoints
    assert state.pending() == []
    snapshot, missing = state.build(allow_dangling=False)
    assert snapshot is not None and missing == []
    assert snapshot.clusters.keys() == rich_snapshot().clusters.keys()
    assert state.build(allow_dangling=False) == (None, [])  # nothing changed: nothing to publish


def test_sotw_removal_only_for_wildcard_types_and_delta_removal() -> None:
    state = loaded()
    listeners = rich()[urls.LISTENER]
    del listeners["0.0.0.0_80"]
    state.apply(urls.LISTENER, listeners, (), complete=True)  # SotW LDS: absent = removed
    assert "0.0.0.0_80" not in state.resources[urls.LISTENER]
    assert state.resubscribe(urls.ROUTE_CONFIGURATION) == (frozenset(), frozenset({"80"}))
    assert "80" not in state.resources[urls.ROUTE_CONFIGURATION]  # unsubscribed: forgotten
    state.apply(urls.ROUTE_CONFIGURATION, {}, (), complete=False)  # SotW RDS: absence is not removal
    assert set(state.resources[urls.ROUTE_CONFIGURATION]) == {"8080", "9080", "9090"}
    state.apply(urls.ROUTE_CONFIGURATION, {}, ["9090"], complete=False)  # delta removed_resources
    assert set(state.resources[urls.ROUTE_CONFIGURATION]) == {"8080", "9080"}


def test_pending_and_fetch_timeout() -> None:
    state = ClientState(WorkloadIdentity())
    state.apply(urls.CLUSTER, rich()[urls.CLUSTER], (), complete=True)
    state.resubscribe(urls.CLUSTER_LOAD_ASSIGNMENT)
    assert "Listener (all)" in state.pending()
    assert f"ClusterLoadAssignment {REVIEWS_V1}" in state.pending()
    assert state.build(allow_dangling=True) == (None, [])
    expired = state.expire()
    assert "Listener (all)" in expired and f"ClusterLoadAssignment {REVIEWS_V1}" in expired
    snapshot, _ = state.build(allow_dangling=False)
    assert snapshot is not None
    assert snapshot.clusters[REVIEWS_V1].endpoints == ()  # absent assignment: no endpoints


def test_routes_to_missing_clusters_hold_the_snapshot_back() -> None:
    state = loaded()
    first, _ = state.build(allow_dangling=False)
    assert first is not None
    clusters = rich()[urls.CLUSTER]
    del clusters[REVIEWS_V1]
    state.apply(urls.CLUSTER, clusters, (), complete=True)
    state.resubscribe(urls.CLUSTER_LOAD_ASSIGNMENT)
    held, missing = state.build(allow_dangling=False)
    assert held is None and missing == [REVIEWS_V1]
    assert state.published is first
    forced, missing = state.build(allow_dangling=True)
    assert forced is not None and missing == [REVIEWS_V1]


def test_node_is_recognised_as_meshlib_and_carries_the_workload() -> None:
    node = build_node("n-1", cluster="c", namespace="shop", labels={"app": "web"})
    assert client_kind_from_node(node) is ClientKind.MESHLIB
    assert node.user_agent_name == "meshlib"
    fields = node.metadata.fields
    assert fields["NAMESPACE"].string_value == "shop"
    assert fields["LABELS"].struct_value.fields["app"].string_value == "web"
    assert fields["MESHLIB_CLIENT"].bool_value is True


def response(type_url: str, resources: list[Any], version: str, nonce: str) -> Any:
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info=version, nonce=nonce, resources=[packed(r) for r in resources]
    )


@pytest.mark.asyncio
async def test_sotw_ack_then_eds_subscription_and_nack_keeps_the_acked_version() -> None:
    published: list[Any] = []
    client = XdsClient("127.0.0.1:1", build_node("n"), WorkloadIdentity(), published.append)
    clusters = list(rich()[urls.CLUSTER].values())
    ack, eds = client._on_sotw(response(urls.CLUSTER, clusters, "v1", "1"))
    assert (ack.type_url, ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == (
        urls.CLUSTER,
        "v1",
        "1",
        False,
    )
    assert eds.type_url == urls.CLUSTER_LOAD_ASSIGNMENT and REVIEWS_V1 in eds.resource_names

    bad = [bad_cluster() if c.name == REVIEWS_V1 else c for c in clusters]
    (nack,) = client._on_sotw(response(urls.CLUSTER, bad, "v2", "2"))
    assert (nack.version_info, nack.response_nonce) == ("v1", "2")
    assert nack.error_detail.code == 3  # INVALID_ARGUMENT
    assert nack.error_detail.message.startswith(f"Cluster {REVIEWS_V1}: lb_policy: ")
    assert client.state.resources[urls.CLUSTER][REVIEWS_V1] == rich()[urls.CLUSTER][REVIEWS_V1]
    assert client.status()["types"]["Cluster"]["version_acked"] == "v1"
    assert published == []  # LDS never arrived: nothing consistent to publish yet
    client._expire(None, None)
    assert len(published) == 1
