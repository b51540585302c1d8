"""Decoding resources shaped the way istiod sends them (hand-built, not from our encoder)."""

from __future__ import annotations

from meshlib.config.model import (
    ConnectionPool,
    FaultPolicy,
    LbKind,
    Locality,
    LocalityLbSetting,
    MeshSnapshot,
    RouteMatch,
    StringMatch,
    WorkloadIdentity,
)
from meshlib.xds import dangling_clusters, snapshot_from_resources
from meshlib.xds import type_urls as urls
from tests.unit.xds.istiod_shapes import (
    REVIEWS,
    UINT32_MAX,
    istio_cluster,
    istio_listener,
    istio_load_assignment,
    istio_route_configuration,
    istio_tcp_listener,
)


def istiod_snapshot() -> MeshSnapshot:
    clusters = {c.name: c for c in (istio_cluster("v1"), istio_cluster("v2"), istio_cluster("v3"), istio_cluster(""))}
    assignments = {a.cluster_name: a for a in (istio_load_assignment("v1"),)}
    return snapshot_from_resources(
        {
            urls.CLUSTER: clusters,
            urls.CLUSTER_LOAD_ASSIGNMENT: assignments,
            urls.ROUTE_CONFIGURATION: {"9080": istio_route_configuration()},
            urls.LISTENER: {"0.0.0.0_9080": istio_listener(), "0.0.0.0_3306": istio_tcp_listener()},
        },
        WorkloadIdentity(namespace="default"),
        "2024-01-01T00:00:00Z/7",
    )


def test_istiod_cluster_policy() -> None:
    snap = istiod_snapshot()
    cluster = snap.clusters[f"outbound|9080|v1|{REVIEWS}"]
    assert (cluster.service, cluster.port, cluster.subset, cluster.resolution) == (REVIEWS, 9080, "v1", "STATIC")
    lb = cluster.policy.lb
    assert lb.kind is LbKind.LEAST_REQUEST
    assert lb.panic_threshold_percent == 0.0
    assert lb.locality == LocalityLbSetting()
    pool = cluster.policy.connection_pool
    assert pool == ConnectionPool(connect_timeout_s=10.0)  # Istio's 2^32-1 thresholds, 1 h idle timeout
    assert pool.max_requests == UINT32_MAX
    od = cluster.policy.outlier_detection
    assert od is not None
    assert (od.consecutive_5xx, od.enforcing_consecutive_5xx, od.max_ejection_percent) == (7, 100.0, 100.0)
    assert (od.enforcing_success_rate, od.enforcing_consecutive_gateway_failure) == (0.0, 0.0)


def test_istiod_endpoints_localities_priorities_and_health() -> None:
    snap = istiod_snapshot()
    endpoints = snap.clusters[f"outbound|9080|v1|{REVIEWS}"].endpoints
    assert [(e.key, e.weight, e.locality, e.priority) for e in endpoints] == [
        ("10.0.0.1:9080", 1, Locality("us-east", "a"), 0),
        ("10.0.1.1:9080", 3, Locality("eu-west", "b", "x"), 1),
    ]  # 10.0.0.9 is UNHEALTHY: left out as Envoy would
    assert snap.clusters[f"outbound|9080|v2|{REVIEWS}"].endpoints == ()


def test_istiod_routes() -> None:
    snap = istiod_snapshot()
    config = snap.route_configs["9080"]
    vhost = config.virtual_hosts[0]
    assert vhost.domains == ("reviews.default.svc.cluster.local", "reviews", "reviews:9080")
    jason, regex, default = vhost.routes
    assert jason.matches == (
        RouteMatch(method=StringMatch("exact", "GET"), headers=(("end-user", StringMatch("exact", "jason")),)),
    )
    assert [(d.cluster, d.host, d.subset, d.weight) for d in jason.destinations] == [
        (f"outbound|9080|v2|{REVIEWS}", REVIEWS, "v2", 80),
        (f"outbound|9080|v3|{REVIEWS}", REVIEWS, "v3", 20),
    ]
    assert jason.timeout_s is None  # 0s = disabled
    assert jason.retry is not None
    assert jason.retry.num_retries == 2
    assert jason.retry.previous_hosts
    assert jason.retry.host_selection_attempts == 5
    assert "retriable-status-codes" in jason.retry.retry_on
    assert jason.fault == FaultPolicy(abort_http_status=503, abort_percent=10.0)
    assert jason.source.virtual_service == "default/reviews"
    assert jason.source.rule_name == "jason"
    assert regex.matches == (RouteMatch(uri=StringMatch("regex", "/r/[0-9]+")),)
    assert regex.timeout_s == 2.5
    assert regex.retry is None
    assert default.matches == ()
    assert default.source.virtual_service is None
    assert snap.listeners["0.0.0.0_9080"].route_config == "9080"
    assert "0.0.0.0_3306" not in snap.listeners
    assert dangling_clusters(snap) == ["PassthroughCluster"]


def test_istiod_services_inferred_from_cluster_names() -> None:
    snap = istiod_snapshot()
    service = snap.services[REVIEWS]
    assert service.namespace == "default"
    assert [p.number for p in service.ports] == [9080]
    assert service.location == "MESH_INTERNAL"
    assert snap.version == "2024-01-01T00:00:00Z/7"
