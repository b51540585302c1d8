"""Invalid resources are rejected at the edge with the resource and field named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from meshlib.xds import XdsDecodeError, decode_resource, snapshot_from_resources
from meshlib.xds import type_urls as urls
from tests.unit.xds.istiod_shapes import (
    REVIEWS,
    istio_cluster,
    istio_listener,
    istio_load_assignment,
    istio_route_configuration,
    packed,
)


def cluster_provided() -> tuple[str, Any]:
    cluster = istio_cluster("")
    cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    return urls.CLUSTER, cluster


def ring_min_above_max() -> tuple[str, Any]:
    cluster = istio_cluster("")
    cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
    cluster.ring_hash_lb_config.minimum_ring_size.value = 10
    cluster.ring_hash_lb_config.maximum_ring_size.value = 5
    return urls.CLUSTER, cluster


def eds_from_a_file() -> tuple[str, Any]:
    cluster = istio_cluster("")
    cluster.eds_cluster_config.eds_config.path_config_source.path = "/etc/eds.yaml"
    return urls.CLUSTER, cluster


def pipe_endpoint() -> tuple[str, Any]:
    assignment = istio_load_assignment("v1")
    assignment.endpoints[1].lb_endpoints[0].endpoint.address.CopyFrom(
        address_pb2.Address(pipe=address_pb2.Pipe(path="/tmp/sock"))
    )
    return urls.CLUSTER_LOAD_ASSIGNMENT, assignment


def cluster_header() -> tuple[str, Any]:
    config = istio_route_configuration()
    config.virtual_hosts[0].routes[1].route.cluster_header = "x-cluster"
    return urls.ROUTE_CONFIGURATION, config


def zero_total_weight() -> tuple[str, Any]:
    config = istio_route_configuration()
    for entry in config.virtual_hosts[0].routes[0].route.weighted_clusters.clusters:
        entry.weight.value = 0
    return urls.ROUTE_CONFIGURATION, config


def wrong_fault_type() -> tuple[str, Any]:
    config = istio_route_configuration()
    config.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(
        packed(cors_pb2.CorsPolicy())
    )
    return urls.ROUTE_CONFIGURATION, config


def runtime_fraction_match() -> tuple[str, Any]:
    config = istio_route_configuration()
    config.virtual_hosts[0].routes[2].match.runtime_fraction.default_value.numerator = 50
    return urls.ROUTE_CONFIGURATION, config


def router_not_last() -> tuple[str, Any]:
    listener = istio_listener()
    manager = hcm.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    router = manager.http_filters[-1]
    del manager.http_filters[-1]
    manager.http_filters.insert(0, router)
    listener.filter_chains[0].filters[0].typed_config.CopyFrom(packed(manager))
    return urls.LISTENER, listener


def redirect_prefix_rewrite() -> tuple[str, Any]:
    config = istio_route_configuration()
    route = config.virtual_hosts[0].routes[1]
    route.redirect.CopyFrom(rc.RedirectAction(prefix_rewrite="/x"))
    return urls.ROUTE_CONFIGURATION, config


def negative_connect_timeout() -> tuple[str, Any]:
    cluster = istio_cluster("")
    cluster.connect_timeout.seconds = -1
    return urls.CLUSTER, cluster


def route_timeout_out_of_range() -> tuple[str, Any]:
    config = istio_route_configuration()
    config.virtual_hosts[0].routes[1].route.timeout.seconds = 315_576_000_001
    return urls.ROUTE_CONFIGURATION, config


def negative_slow_start_window() -> tuple[str, Any]:
    cluster = istio_cluster("")
    cluster.least_request_lb_config.slow_start_config.slow_start_window.seconds = -5
    return urls.CLUSTER, cluster


def negative_cookie_ttl() -> tuple[str, Any]:
    config = istio_route_configuration()
    policy = config.virtual_hosts[0].routes[1].route.hash_policy.add()
    policy.cookie.name = "session"
    policy.cookie.ttl.seconds = -1
    return urls.ROUTE_CONFIGURATION, config


CASES: list[tuple[Callable[[], tuple[str, Any]], str]] = [
    (
        negative_slow_start_window,
        f"Cluster outbound|9080||{REVIEWS}: least_request_lb_config.slow_start_config.slow_start_window: "
        "invalid duration: expected a positive duration, got -5s 0ns",
    ),
    (
        negative_cookie_ttl,
        "RouteConfiguration 9080: virtual_hosts[0].routes[1].route.hash_policy[0].cookie.ttl: invalid duration: "
        "expected a positive duration, got -1s 0ns",
    ),
    (
        negative_connect_timeout,
        f"Cluster outbound|9080||{REVIEWS}: connect_timeout: invalid duration: expected a positive duration, "
        "got -1s 0ns",
    ),
    (
        route_timeout_out_of_range,
        "RouteConfiguration 9080: virtual_hosts[0].routes[1].route.timeout: duration out of range for "
        "google.protobuf.Duration: 315576000001s 500000000ns",
    ),
    (
        cluster_provided,
        f"Cluster outbound|9080||{REVIEWS}: lb_policy: "
        "unsupported value CLUSTER_PROVIDED (only with type ORIGINAL_DST)",
    ),
    (
        ring_min_above_max,
        f"Cluster outbound|9080||{REVIEWS}: ring_hash_lb_config: minimum_ring_size 10 > maximum_ring_size 5",
    ),
    (
        eds_from_a_file,
        f"Cluster outbound|9080||{REVIEWS}: eds_cluster_config.eds_config: "
        "only ADS is supported, got path_config_source",
    ),
    (
        pipe_endpoint,
        f"ClusterLoadAssignment outbound|9080|v1|{REVIEWS}: endpoints[1].lb_endpoints[0].endpoint.address: "
        "only socket addresses are supported",
    ),
    (
        cluster_header,
        "RouteConfiguration 9080: virtual_hosts[0].routes[1].route.cluster_header: "
        "unsupported (use cluster or weighted_clusters)",
    ),
    (
        zero_total_weight,
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].route.weighted_clusters: "
        "the total weight must be greater than 0",
    ),
    (
        wrong_fault_type,
        'RouteConfiguration 9080: virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"]: '
        "expected envoy.extensions.filters.http.fault.v3.HTTPFault, "
        "got envoy.extensions.filters.http.cors.v3.CorsPolicy",
    ),
    (
        runtime_fraction_match,
        "RouteConfiguration 9080: virtual_hosts[0].routes[2].match.runtime_fraction: not supported",
    ),
    (
        router_not_last,
        "Listener 0.0.0.0_9080: filter_chains[0].filters[0].typed_config.http_filters[2]: "
        "the last filter must be the router, got 'envoy.filters.http.fault'",
    ),
    (
        redirect_prefix_rewrite,
        "RouteConfiguration 9080: virtual_hosts[0].routes[1].redirect.prefix_rewrite: "
        "not supported (use path_redirect)",
    ),
]


@pytest.mark.parametrize(("build", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_rejected_with_resource_and_field(build: Callable[[], tuple[str, Any]], message: str) -> None:
    type_url, resource = build()
    name = getattr(resource, "name", "") or getattr(resource, "cluster_name", "")
    with pytest.raises(XdsDecodeError) as caught:
        decode_resource(type_url, name, resource)
    assert str(caught.value) == message
    assert caught.value.type_url == type_url
    assert caught.value.resource_name == name
    # The snapshot assembler raises the same error, never a deep traceback.
    with pytest.raises(XdsDecodeError, match="^" + message.split(":", maxsplit=1)[0]):
        snapshot_from_resources({type_url: {name: resource}})


def test_unknown_type_url() -> None:
    with pytest.raises(XdsDecodeError, match="unsupported resource type"):
        decode_resource("type.googleapis.com/envoy.config.Foo", "x", istio_cluster())
