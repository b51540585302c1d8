"""Resources built by hand the way istiod (1.2x) sends them to a sidecar — not by our encoder."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

REVIEWS = "reviews.default.svc.cluster.local"
UINT32_MAX = 2**32 - 1


def packed(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def secs(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value), nanos=round((value - int(value)) * 1e9))


def u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=secs(0),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def istio_cluster(subset: str = "v1") -> Any:
    name = f"outbound|9080|{subset}|{REVIEWS}"
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.common_http_protocol_options.idle_timeout.CopyFrom(secs(3600))
    options.explicit_http_config.http_protocol_options.SetInParent()
    istio_meta = struct_pb2.Struct()
    istio_meta.update(
        {
            "services": [{"host": REVIEWS, "name": "reviews", "namespace": "default"}],
            "subset": subset,
            "default_original_port": 9080,
        }
    )
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads(), service_name=name),
        connect_timeout=secs(10),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=u32(UINT32_MAX),
                    max_pending_requests=u32(UINT32_MAX),
                    max_requests=u32(UINT32_MAX),
                    max_retries=u32(UINT32_MAX),
                    track_remaining=True,
                )
            ]
        ),
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=u32(7),
            interval=secs(10),
            base_ejection_time=secs(30),
            max_ejection_percent=u32(100),
            enforcing_consecutive_5xx=u32(100),
            enforcing_success_rate=u32(0),
            consecutive_gateway_failure=u32(0),
            enforcing_consecutive_gateway_failure=u32(0),
        ),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=0),
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig(),
        ),
        typed_extension_protocol_options={"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": packed(options)},
        metadata=base_pb2.Metadata(filter_metadata={"istio": istio_meta}),
    )


def istio_load_assignment(subset: str = "v1") -> Any:
    def lb_endpoint(ip: str, weight: int, health: int = health_check_pb2.HEALTHY) -> Any:
        return endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=9080))
            ),
            health_status=health,
            load_balancing_weight=u32(weight),
        )

    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=f"outbound|9080|{subset}|{REVIEWS}",
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="us-east", zone="a"),
                lb_endpoints=[lb_endpoint("10.0.0.1", 1), lb_endpoint("10.0.0.9", 1, health_check_pb2.UNHEALTHY)],
                load_balancing_weight=u32(1),
            ),
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="eu-west", zone="b", sub_zone="x"),
                lb_endpoints=[lb_endpoint("10.0.1.1", 3)],
                load_balancing_weight=u32(3),
                priority=1,
            ),
        ],
    )


def istio_route_configuration() -> Any:
    retry = rc.RetryPolicy(
        retry_on="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        num_retries=u32(2),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
    )
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 503
    fault.abort.percentage.numerator = 100_000
    fault.abort.percentage.denominator = percent_pb2.FractionalPercent.MILLION
    config_meta = struct_pb2.Struct()
    config_meta.update({"config": "/apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/reviews"})
    jason = rc.Route(
        name="jason",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(name="end-user", string_match=string_pb2.StringMatcher(exact="jason")),
                rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET")),
            ],
        ),
        route=rc.RouteAction(
            weighted_clusters=rc.WeightedCluster(
                clusters=[
                    rc.WeightedCluster.ClusterWeight(name=f"outbound|9080|v2|{REVIEWS}", weight=u32(80)),
                    rc.WeightedCluster.ClusterWeight(name=f"outbound|9080|v3|{REVIEWS}", weight=u32(20)),
                ]
            ),
            timeout=secs(0),
            retry_policy=retry,
            max_stream_duration=rc.RouteAction.MaxStreamDuration(
                max_stream_duration=secs(0), grpc_timeout_header_max=secs(0)
            ),
        ),
        metadata=base_pb2.Metadata(filter_metadata={"istio": config_meta}),
        typed_per_filter_config={"envoy.filters.http.fault": packed(fault)},
        decorator=rc.Decorator(operation="reviews:9080/*"),
    )
    regex = rc.Route(
        name="regex",
        match=rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/r/[0-9]+")),
        route=rc.RouteAction(cluster=f"outbound|9080|v1|{REVIEWS}", timeout=secs(2.5)),
        metadata=base_pb2.Metadata(filter_metadata={"istio": config_meta}),
    )
    default = rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(cluster=f"outbound|9080||{REVIEWS}", timeout=secs(0), retry_policy=retry),
    )
    return route_pb2.RouteConfiguration(
        name="9080",
        virtual_hosts=[
            rc.VirtualHost(
                name=f"{REVIEWS}:9080",
                domains=["reviews.default.svc.cluster.local", "reviews", "reviews:9080"],
                routes=[jason, regex, default],
                include_request_attempt_count=True,
            ),
            rc.VirtualHost(
                name="allow_any",
                domains=["*"],
                routes=[
                    rc.Route(
                        name="allow_any",
                        match=rc.RouteMatch(prefix="/"),
                        route=rc.RouteAction(cluster="PassthroughCluster", timeout=secs(0)),
                    )
                ],
            ),
        ],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def istio_listener() -> Any:
    manager = hcm.HttpConnectionManager(
        stat_prefix="outbound_0.0.0.0_9080",
        rds=hcm.Rds(config_source=ads(), route_config_name="9080"),
        http_filters=[
            hcm.HttpFilter(
                name="istio.metadata_exchange",
                typed_config=any_pb2.Any(type_url="type.googleapis.com/udpa.type.v1.TypedStruct"),
            ),
            hcm.HttpFilter(name="envoy.filters.http.fault", typed_config=packed(fault_pb2.HTTPFault())),
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())),
        ],
    )
    return listener_pb2.Listener(
        name="0.0.0.0_9080",
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=9080)),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=packed(manager)
                    )
                ]
            )
        ],
        bind_to_port=wrappers_pb2.BoolValue(value=False),
    )


def istio_tcp_listener() -> Any:
    return listener_pb2.Listener(
        name="0.0.0.0_3306",
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=3306)),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.tcp_proxy",
                        typed_config=any_pb2.Any(
                            type_url="type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                        ),
                    )
                ]
            )
        ],
    )
