"""Model :class:`~meshlib.config.model.Cluster` → Envoy ``Cluster`` (CDS), shaped like istiod's.

istiod's shapes followed (``pilot/pkg/networking/core/cluster*.go``):

- name ``outbound|<port>|<subset>|<fqdn>``; STATIC services become ``type: EDS``
  with ``eds_config: {ads: {}, resource_api_version: V3}`` and ``service_name``
  equal to the cluster name; DNS → ``STRICT_DNS``, DNS_ROUND_ROBIN →
  ``LOGICAL_DNS`` (endpoints inline in ``load_assignment``); NONE resolution or a
  ``PASSTHROUGH`` load balancer → ``ORIGINAL_DST`` with ``CLUSTER_PROVIDED``.
- connectionPool → ``connect_timeout``, one DEFAULT-priority circuit-breaker
  threshold (with ``retry_budget`` when the policy has one), and
  ``HttpProtocolOptions`` in ``typed_extension_protocol_options`` (idle
  timeout, max requests per connection, h1/h2/downstream protocol);
  TCP keepalive → ``upstream_connection_options``.
- outlierDetection → ``outlier_detection`` (every field of the model's
  :class:`OutlierDetection`; ``success_rate_stdev_factor`` is ×1000 as Envoy
  wants); the panic threshold → ``common_lb_config.healthy_panic_threshold``.
- DestinationRule ``tls`` → ``transport_socket`` (:mod:`meshlib.xds.cluster_tls`).
- ``filter_metadata["istio"]`` = ``{services: [{host, name, namespace}], subset,
  default_original_port}`` as istiod writes it.

Per client kind:

- **GRPC_PROXYLESS**: only what gRPC's xDS client accepts (gRFC A27/A42/A50/A32):
  EDS or LOGICAL_DNS (a DNS cluster keeps its first endpoint; NONE/passthrough
  clusters are not sent); ``lb_policy`` ROUND_ROBIN or RING_HASH —
  LEAST_REQUEST, RANDOM and PEAK_EWMA become ROUND_ROBIN, and MAGLEV becomes
  RING_HASH (deliberate: both are consistent hashing, so affinity survives);
  only ``max_requests`` in circuit breakers; no ``common_lb_config``, slow start,
  protocol options or metadata.
- **ENVOY**: the istiod shapes above.
- **MESHLIB**: the ENVOY shape plus ``filter_metadata["meshlib"]``, which carries
  what Envoy has no field for, so a meshlib client recovers the exact model:
  ``lb`` (the model's LbKind — ``PEAK_EWMA`` is sent with ``lb_policy:
  LEAST_REQUEST``, its nearest Envoy relative, so Envoy still understands the
  cluster), ``peak_ewma_decay_s``, ``hash_policies`` (Envoy keeps them on
  routes), ``locality`` (Istio's localityLbSetting; istiod bakes it into EDS
  priorities instead), ``failover_enabled``, ``tls_mode`` and ``tls``, ``rate_limit``
  (meshlib's per-cluster token bucket), ``pool`` (h2 upgrade policy, client
  protocol, keepalive, max concurrent streams) and ``service`` (the registry
  entry: namespace, location, resolution, port name/protocol/target port).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from meshlib.config.model import (
    Cluster,
    ConnectionPool,
    LbKind,
    LbPolicy,
    OutlierDetection,
    Service,
    TrafficPolicy,
)
from meshlib.xds import type_urls
from meshlib.xds.clients import ClientKind
from meshlib.xds.cluster_tls import encode_cluster_tls, grpc_can_use, tls_metadata
from meshlib.xds.encode_common import ISTIO_KEY, duration, pack, set_meshlib_metadata, struct
from meshlib.xds.encode_endpoints import encode_load_assignment

EnvoyCluster = cluster_pb2.Cluster
_LB = EnvoyCluster.LbPolicy
_TYPE = EnvoyCluster.DiscoveryType

ENVOY_LB = {
    LbKind.ROUND_ROBIN: _LB.ROUND_ROBIN,
    LbKind.RANDOM: _LB.RANDOM,
    LbKind.LEAST_REQUEST: _LB.LEAST_REQUEST,
    LbKind.PEAK_EWMA: _LB.LEAST_REQUEST,  # nearest Envoy relative; the real kind is in metadata
    LbKind.RING_HASH: _LB.RING_HASH,
    LbKind.MAGLEV: _LB.MAGLEV,
    LbKind.PASSTHROUGH: _LB.CLUSTER_PROVIDED,
}
# What proxyless gRPC gets instead of policies it NACKs.
GRPC_LB = {
    LbKind.RING_HASH: _LB.RING_HASH,
    LbKind.MAGLEV: _LB.RING_HASH,
}
GRPC_RING_MAX = 8_388_608  # gRFC A42 rejects larger rings
ACTIVE_REQUEST_BIAS_KEY = "upstream.least_request.active_request_bias"
SLOW_START_AGGRESSION_KEY = "upstream.slow_start.aggression"
HTTP2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})


def encode_cluster(cluster: Cluster, client: ClientKind, service: Service | None = None) -> Any | None:
    """The CDS resource for ``cluster``, or None when ``client`` cannot use such a cluster."""
    policy = cluster.policy
    grpc = client is ClientKind.GRPC_PROXYLESS
    passthrough = cluster.resolution == "NONE" or policy.lb.kind is LbKind.PASSTHROUGH
    if grpc and (passthrough or not grpc_can_use(policy.tls)):
        return None  # a cluster gRPC cannot be told how to reach securely is not sent (never plaintext)
    out = EnvoyCluster(name=cluster.name)
    pool = policy.connection_pool
    out.connect_timeout.CopyFrom(duration(pool.connect_timeout_s))

    if passthrough:
        out.type = _TYPE.ORIGINAL_DST
        out.lb_policy = _LB.CLUSTER_PROVIDED
    elif cluster.resolution == "STATIC":
        out.type = _TYPE.EDS
        eds = out.eds_cluster_config
        eds.service_name = cluster.name
        eds.eds_config.ads.SetInParent()
        eds.eds_config.resource_api_version = config_source_pb2.ApiVersion.V3
    else:
        logical = grpc or cluster.resolution == "DNS_ROUND_ROBIN"
        out.type = _TYPE.LOGICAL_DNS if logical else _TYPE.STRICT_DNS
        endpoints = cluster.endpoints[:1] if logical else cluster.endpoints
        out.load_assignment.CopyFrom(encode_load_assignment(cluster.name, endpoints, client))

    if not passthrough:
        _lb(out, policy.lb, grpc)
    _circuit_breakers(out, policy, grpc)
    if policy.outlier_detection is not None:
        _outlier(out.outlier_detection, policy.outlier_detection)
    encode_cluster_tls(out, policy.tls, client)
    if grpc:
        return out

    port = _service_port(service, cluster.port)
    protocol = port.protocol.upper() if port is not None else "HTTP"
    _protocol_options(out, pool, protocol)
    if pool.tcp_keepalive:
        out.upstream_connection_options.tcp_keepalive.SetInParent()
    _istio_metadata(out, cluster, service)
    if client is ClientKind.MESHLIB:
        set_meshlib_metadata(out.metadata, _meshlib_extras(cluster, policy, service))
    return out


def _lb(out: Any, lb: LbPolicy, grpc: bool) -> None:
    kind = lb.kind
    if grpc:
        out.lb_policy = GRPC_LB.get(kind, _LB.ROUND_ROBIN)
        if out.lb_policy == _LB.RING_HASH:
            ring = out.ring_hash_lb_config
            ring.minimum_ring_size.value = min(lb.ring_min_size, GRPC_RING_MAX)
            ring.maximum_ring_size.value = min(lb.ring_max_size, GRPC_RING_MAX)
        return
    out.lb_policy = ENVOY_LB[kind]
    if kind is LbKind.RING_HASH:
        out.ring_hash_lb_config.minimum_ring_size.value = lb.ring_min_size
        out.ring_hash_lb_config.maximum_ring_size.value = lb.ring_max_size
    elif kind is LbKind.MAGLEV:
        out.maglev_lb_config.table_size.value = lb.maglev_table_size
    elif kind in (LbKind.LEAST_REQUEST, LbKind.PEAK_EWMA):
        config = out.least_request_lb_config
        config.choice_count.value = lb.choice_count
        if lb.active_request_bias != 1.0:
            config.active_request_bias.CopyFrom(
                base_pb2.RuntimeDouble(default_value=lb.active_request_bias, runtime_key=ACTIVE_REQUEST_BIAS_KEY)
            )
        if lb.warmup is not None:
            _slow_start(config.slow_start_config, lb)
    elif kind is LbKind.ROUND_ROBIN and lb.warmup is not None:
        _slow_start(out.round_robin_lb_config.slow_start_config, lb)

    common = out.common_lb_config
    if lb.panic_threshold_percent != 50.0:
        common.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=lb.panic_threshold_percent))
    if lb.locality is not None and lb.locality.enabled and (lb.locality.distribute or lb.failover_enabled):
        common.locality_weighted_lb_config.SetInParent()


def _slow_start(config: Any, lb: LbPolicy) -> None:
    warmup = lb.warmup
    assert warmup is not None
    config.slow_start_window.CopyFrom(duration(warmup.duration_s))
    config.aggression.CopyFrom(
        base_pb2.RuntimeDouble(default_value=warmup.aggression, runtime_key=SLOW_START_AGGRESSION_KEY)
    )
    config.min_weight_percent.value = warmup.min_weight_percent


def _circuit_breakers(out: Any, policy: TrafficPolicy, grpc: bool) -> None:
    pool = policy.connection_pool
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.RoutingPriority.DEFAULT,
        max_requests=wrappers_pb2.UInt32Value(value=pool.max_requests),
    )
    if not grpc:
        threshold.max_connections.value = pool.max_connections
        threshold.max_pending_requests.value = pool.max_pending_requests
        threshold.max_retries.value = pool.max_retries
        if policy.retry_budget is not None:
            budget = threshold.retry_budget
            budget.budget_percent.value = policy.retry_budget.percent
            budget.min_retry_concurrency.value = policy.retry_budget.min_retry_concurrency
    out.circuit_breakers.thresholds.append(threshold)


def _outlier(out: Any, od: OutlierDetection) -> None:
    out.consecutive_5xx.value = od.consecutive_5xx
    out.enforcing_consecutive_5xx.value = round(od.enforcing_consecutive_5xx)
    out.consecutive_gateway_failure.value = od.consecutive_gateway_failure
    out.enforcing_consecutive_gateway_failure.value = round(od.enforcing_consecutive_gateway_failure)
    out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failure
    out.split_external_local_origin_errors = od.split_external_local_origin_errors
    out.interval.CopyFrom(duration(od.interval_s))
    out.base_ejection_time.CopyFrom(duration(od.base_ejection_time_s))
    out.max_ejection_time.CopyFrom(duration(od.max_ejection_time_s))
    out.max_ejection_percent.value = round(od.max_ejection_percent)
    out.always_eject_one_host.value = od.always_eject_one_host
    out.success_rate_minimum_hosts.value = od.success_rate_minimum_hosts
    out.success_rate_request_volume.value = od.success_rate_request_volume
    out.success_rate_stdev_factor.value = round(od.success_rate_stdev_factor * 1000)
    out.enforcing_success_rate.value = round(od.enforcing_success_rate)
    out.failure_percentage_threshold.value = round(od.failure_percentage_threshold)
    out.failure_percentage_minimum_hosts.value = od.failure_percentage_minimum_hosts
    out.failure_percentage_request_volume.value = od.failure_percentage_request_volume
    out.enforcing_failure_percentage.value = round(od.enforcing_failure_percentage)


def _protocol_options(out: Any, pool: ConnectionPool, protocol: str) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    common = options.common_http_protocol_options
    common.idle_timeout.CopyFrom(duration(pool.idle_timeout_s))
    if pool.max_requests_per_connection:
        common.max_requests_per_connection.value = pool.max_requests_per_connection
    if pool.use_client_protocol:
        options.use_downstream_protocol_config.SetInParent()
    elif protocol in HTTP2_PROTOCOLS or pool.h2_upgrade_policy == "UPGRADE":
        h2 = protocol_pb2.Http2ProtocolOptions()
        if pool.max_concurrent_streams is not None:
            h2.max_concurrent_streams.value = pool.max_concurrent_streams
        options.explicit_http_config.http2_protocol_options.CopyFrom(h2)
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    out.typed_extension_protocol_options[type_urls.HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(pack(options))


def _service_port(service: Service | None, number: int) -> Any:
    if service is None:
        return None
    return next((p for p in service.ports if p.number == number), None)


def _istio_metadata(out: Any, cluster: Cluster, service: Service | None) -> None:
    short = cluster.service.split(".")[0]
    namespace = service.namespace if service is not None else ""
    istio: dict[str, Any] = {
        "services": [{"host": cluster.service, "name": short, "namespace": namespace}],
        "default_original_port": cluster.port,
    }
    if cluster.subset:
        istio["subset"] = cluster.subset
    out.metadata.filter_metadata[ISTIO_KEY].CopyFrom(struct(istio))


def _meshlib_extras(cluster: Cluster, policy: TrafficPolicy, service: Service | None) -> dict[str, Any]:
    lb = policy.lb
    pool = policy.connection_pool
    extras: dict[str, Any] = {
        "lb": str(lb.kind),
        "failover_enabled": lb.failover_enabled,
        "tls_mode": policy.tls_mode,
        "tls": tls_metadata(policy.tls),
        "resolution": cluster.resolution,
        "pool": {
            "tcp_keepalive": pool.tcp_keepalive,
            "h2_upgrade_policy": pool.h2_upgrade_policy,
            "use_client_protocol": pool.use_client_protocol,
        },
    }
    if pool.max_concurrent_streams is not None:
        extras["pool"]["max_concurrent_streams"] = pool.max_concurrent_streams
    if lb.kind is LbKind.PEAK_EWMA:
        extras["peak_ewma_decay_s"] = lb.peak_ewma_decay_s
    if lb.hash_policies:
        extras["hash_policies"] = [asdict(h) for h in lb.hash_policies]
    if lb.locality is not None:
        setting = lb.locality
        extras["locality"] = {
            "enabled": setting.enabled,
            "distribute": [{"from": d.from_, "to": dict(d.to)} for d in setting.distribute],
            "failover": [{"from": f.from_, "to": f.to} for f in setting.failover],
            "failover_priority": list(setting.failover_priority),
        }
    if policy.rate_limit is not None:
        extras["rate_limit"] = asdict(policy.rate_limit)
    if service is not None:
        port = _service_port(service, cluster.port)
        extras["service"] = {
            "namespace": service.namespace,
            "location": service.location,
            "resolution": service.resolution,
            "port_name": port.name if port is not None else "",
            "protocol": port.protocol if port is not None else "HTTP",
            "target_port": port.target_port if port is not None else None,
        }
    return extras
