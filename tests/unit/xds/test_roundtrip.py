"""Model → xDS → model: exact for MESHLIB clients, routing-equivalent for the others."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshlib.config.model import LbKind, MeshSnapshot
from meshlib.xds import ClientKind, dangling_clusters, encode_resources, snapshot_from_resources
from meshlib.xds import type_urls as urls
from tests.unit.xds.helpers import rich_snapshot, without_inert_retries


@pytest.fixture(scope="module")
def snapshot() -> MeshSnapshot:
    return rich_snapshot()


def test_meshlib_round_trip_is_exact(snapshot: MeshSnapshot) -> None:
    decoded = snapshot_from_resources(encode_resources(snapshot, ClientKind.MESHLIB), snapshot.workload, "v7")
    assert decoded.version == "v7"
    assert decoded.workload == snapshot.workload
    assert dict(decoded.clusters) == dict(snapshot.clusters)
    assert dict(decoded.services) == dict(snapshot.services)
    assert dict(decoded.listeners) == dict(snapshot.listeners)
    assert dict(decoded.route_configs) == without_inert_retries(snapshot.route_configs)
    assert dangling_clusters(decoded) == []


def test_round_trip_covers_the_interesting_parts(snapshot: MeshSnapshot) -> None:
    # Guard against the fixture silently losing features the exact round trip should exercise.
    kinds = {c.policy.lb.kind for c in snapshot.clusters.values()}
    assert {LbKind.LEAST_REQUEST, LbKind.RING_HASH, LbKind.MAGLEV, LbKind.PEAK_EWMA, LbKind.ROUND_ROBIN} <= kinds
    routes = [r for c in snapshot.route_configs.values() for v in c.virtual_hosts for r in v.routes]
    assert any(r.fault and r.fault.abort_grpc_status for r in routes)
    assert any(r.redirect for r in routes) and any(r.direct_response for r in routes)
    assert any(r.cors for r in routes) and any(r.mirrors for r in routes) and any(r.rate_limit for r in routes)
    assert any(len(r.matches) > 1 for r in routes)
    assert any(r.rewrite and r.rewrite.uri_regex for r in routes)
    assert any(c.policy.rate_limit for c in snapshot.clusters.values())
    assert any(c.policy.retry_budget for c in snapshot.clusters.values())
    assert any(c.resolution == "DNS" for c in snapshot.clusters.values())


def test_envoy_round_trip_routes_the_same(snapshot: MeshSnapshot) -> None:
    decoded = snapshot_from_resources(encode_resources(snapshot, ClientKind.ENVOY))
    assert set(decoded.clusters) == set(snapshot.clusters)
    for name, original in snapshot.clusters.items():
        got = decoded.clusters[name]
        assert sorted(e.key for e in got.endpoints) == sorted(e.key for e in original.endpoints)
        assert [e.weight for e in got.endpoints] == [e.weight for e in original.endpoints]
        assert got.policy.connection_pool.max_requests == original.policy.connection_pool.max_requests
        assert got.policy.outlier_detection == original.policy.outlier_detection
        expected_kind = LbKind.LEAST_REQUEST if original.policy.lb.kind is LbKind.PEAK_EWMA else original.policy.lb.kind
        assert got.policy.lb.kind is expected_kind
        # Hash inputs travel on routes in Envoy's shape and come back to the cluster.
        if original.policy.lb.kind in (LbKind.RING_HASH, LbKind.MAGLEV):
            assert got.policy.lb.hash_policies == original.policy.lb.hash_policies
    for name, config in snapshot.route_configs.items():
        for vhost, got_vhost in zip(config.virtual_hosts, decoded.route_configs[name].virtual_hosts, strict=True):
            assert got_vhost.domains == vhost.domains
            # Without meshlib metadata each match block is its own route, in order.
            expanded = [(m, r) for r in vhost.routes for m in (r.matches or (None,))]
            assert len(got_vhost.routes) == len(expanded)
            for got_route, (match, route) in zip(got_vhost.routes, expanded, strict=True):
                assert [(d.cluster, d.weight) for d in got_route.destinations] == [
                    (d.cluster, d.weight) for d in route.destinations if d.weight > 0
                ]
                if match is not None:
                    (got_match,) = got_route.matches
                    assert replace(got_match, name="") == replace(match, name="")
                assert got_route.timeout_s == route.timeout_s
                assert got_route.fault == route.fault
                assert got_route.rewrite == route.rewrite
                assert got_route.redirect == route.redirect
                assert got_route.headers == route.headers
                assert got_route.source.virtual_service == route.source.virtual_service
                if route.destinations:
                    assert got_route.retry == route.retry


def test_grpc_resources_meet_grpcio_constraints(snapshot: MeshSnapshot) -> None:
    resources = encode_resources(snapshot, ClientKind.GRPC_PROXYLESS)
    clusters = resources[urls.CLUSTER]
    for cluster in clusters.values():
        assert cluster.lb_policy in (cluster.ROUND_ROBIN, cluster.RING_HASH)
        assert cluster.type in (cluster.EDS, cluster.LOGICAL_DNS)
        assert not cluster.HasField("common_lb_config")
        assert not cluster.typed_extension_protocol_options
        assert not cluster.HasField("metadata")
    assert (
        clusters["outbound|9080|v3|reviews.default.svc.cluster.local"].lb_policy
        == clusters["outbound|9080|v3|reviews.default.svc.cluster.local"].RING_HASH
    )  # MAGLEV keeps its affinity as ring hash
    assert clusters["outbound|9080||ratings.default.svc.cluster.local"].lb_policy == 0  # ROUND_ROBIN
    assert clusters["outbound|80||api.example.com"].type == clusters["outbound|80||api.example.com"].LOGICAL_DNS

    for cla in resources[urls.CLUSTER_LOAD_ASSIGNMENT].values():
        for group in cla.endpoints:
            assert group.HasField("locality")
            assert group.load_balancing_weight.value > 0
    assert set(resources[urls.CLUSTER_LOAD_ASSIGNMENT]) <= set(clusters)

    routes = resources[urls.ROUTE_CONFIGURATION]
    for name, listener in resources[urls.LISTENER].items():
        from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

        manager = http_connection_manager_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(manager)
        assert manager.http_filters[-1].name == urls.ROUTER_FILTER_NAME
        assert manager.http_filters[-1].typed_config.type_url == urls.ROUTER
        assert manager.rds.config_source.HasField("ads")
        config = routes[manager.rds.route_config_name]
        assert any(name in vhost.domains for vhost in config.virtual_hosts)
    assert "reviews.default.svc.cluster.local:9080" in resources[urls.LISTENER]

    for config in routes.values():
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                assert set(route.typed_per_filter_config) <= {urls.FAULT_FILTER_NAME}
                if route.route.HasField("retry_policy"):
                    assert route.route.retry_policy.num_retries.value > 0
                    assert route.route.retry_policy.retry_back_off.HasField("base_interval")
                if route.name.startswith("jason"):
                    assert route.route.max_stream_duration.max_stream_duration.seconds == 3
                    assert route.route.max_stream_duration.grpc_timeout_header_max.seconds == 3


def test_grpc_resources_decode_too(snapshot: MeshSnapshot) -> None:
    decoded = snapshot_from_resources(encode_resources(snapshot, ClientKind.GRPC_PROXYLESS))
    listener = decoded.listeners["reviews.default.svc.cluster.local:9080"]
    assert (listener.port, listener.route_config) == (9080, "9080")
    assert decoded.clusters["outbound|9080||ratings.default.svc.cluster.local"].policy.lb.kind is LbKind.ROUND_ROBIN


def test_client_locality_bakes_failover_priorities_for_envoy(snapshot: MeshSnapshot) -> None:
    from meshlib.config.model import Locality

    name = "outbound|9080||reviews.default.svc.cluster.local"
    plain = encode_resources(snapshot, ClientKind.ENVOY)[urls.CLUSTER_LOAD_ASSIGNMENT][name]
    assert {g.priority for g in plain.endpoints} == {0}
    baked = encode_resources(snapshot, ClientKind.ENVOY, client_locality=Locality("us-east", "a"))
    by_priority = {
        (g.locality.region, g.locality.zone): g.priority for g in baked[urls.CLUSTER_LOAD_ASSIGNMENT][name].endpoints
    }
    assert by_priority[("us-east", "a")] == 0
    assert by_priority[("us-east", "b")] > 0
    assert by_priority[("eu-west", "a")] > by_priority[("us-east", "b")]
