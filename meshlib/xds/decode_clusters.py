"""Envoy ``Cluster`` (CDS) → model :class:`~meshlib.config.model.Cluster` (without endpoints).

Understands istiod's shapes (see :mod:`meshlib.xds.encode_clusters`) and
plain Envoy clusters. Where a field is absent, Envoy's default applies (not
Istio's): circuit breakers 1024/1024/1024/3, connect timeout 5 s, idle timeout
1 h, panic threshold 50 %, outlier-detection defaults of Envoy.

Rejected (XdsDecodeError): custom cluster types (aggregate, ...), EDS from
anything but ADS, ``lb_policy`` CLUSTER_PROVIDED outside ORIGINAL_DST,
``load_balancing_policy`` naming a policy meshlib lacks, ring hash with
MURMUR_HASH_2 or min > max, a least-request ``choice_count`` < 2.

TLS transport sockets are decoded by :mod:`meshlib.xds.cluster_tls` (one it
cannot execute is rejected, never used in plaintext).

Ignored: health checks, DNS settings,
the HIGH-priority circuit-breaker threshold, LRS.

``filter_metadata["meshlib"]`` (written for MESHLIB clients) restores what
Envoy has no field for: PEAK_EWMA, hash policies, localityLbSetting, failover,
TLS mode, rate limit, pool details and the service entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshlib.config.model import (
    UINT32_MAX,
    Cluster,
    ConnectionPool,
    HashPolicy,
    LbKind,
    LbPolicy,
    LocalityDistribute,
    LocalityFailover,
    LocalityLbSetting,
    OutlierDetection,
    RateLimitSpec,
    RetryBudgetSpec,
    TrafficPolicy,
    Warmup,
)
from meshlib.xds import type_urls
from meshlib.xds.cluster_tls import decode_cluster_tls
from meshlib.xds.decode_common import (
    Where,
    as_int,
    istio_metadata,
    metadata,
    optional_seconds,
    parse_cluster_name,
    seconds,
    unpack,
    wrapped,
)

EnvoyCluster = cluster_pb2.Cluster
_LB = EnvoyCluster.LbPolicy
_TYPE = EnvoyCluster.DiscoveryType
Resolution = Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"]

LB_KINDS = {
    _LB.ROUND_ROBIN: LbKind.ROUND_ROBIN,
    _LB.LEAST_REQUEST: LbKind.LEAST_REQUEST,
    _LB.RANDOM: LbKind.RANDOM,
    _LB.RING_HASH: LbKind.RING_HASH,
    _LB.MAGLEV: LbKind.MAGLEV,
}
# load_balancing_policy typed extensions (gRPC-style clusters) → kinds.
POLICY_EXTENSIONS = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": LbKind.ROUND_ROBIN,
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": LbKind.LEAST_REQUEST,
    "envoy.extensions.load_balancing_policies.random.v3.Random": LbKind.RANDOM,
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash": LbKind.RING_HASH,
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev": LbKind.MAGLEV,
    "envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality": LbKind.ROUND_ROBIN,
    "envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin": (
        LbKind.ROUND_ROBIN
    ),
}
RESOLUTIONS: dict[int, Resolution] = {
    _TYPE.EDS: "STATIC",
    _TYPE.STATIC: "STATIC",
    _TYPE.STRICT_DNS: "DNS",
    _TYPE.LOGICAL_DNS: "DNS_ROUND_ROBIN",
    _TYPE.ORIGINAL_DST: "NONE",
}
ENVOY_DEFAULT_MAX = 1024
ENVOY_DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True, slots=True)
class DecodedCluster:
    """A decoded cluster, its EDS resource name (None: endpoints inline), and service hints."""

    cluster: Cluster
    eds_name: str | None
    inline_assignment: Any | None  # ClusterLoadAssignment, for STATIC/DNS clusters
    service_hint: dict[str, Any]  # meshlib "service" metadata, or what istio metadata says
    has_hash_policies: bool  # hash policies came from metadata (else taken from routes)


def _enum_name(enum: Any, value: int) -> str:
    """An enum value's name, or its number when this proto version does not know it (never raises)."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def decode_cluster(message: Any) -> DecodedCluster:
    where = Where(type_urls.CLUSTER, message.name)
    if not message.name:
        raise where.error("name", "must not be empty")
    extras = metadata(message)
    if message.WhichOneof("cluster_discovery_type") == "cluster_type":
        raise where.error("cluster_type", f"unsupported custom cluster type {message.cluster_type.name!r}")
    kind = message.type
    resolution = RESOLUTIONS.get(kind)
    if resolution is None:
        raise where.error("type", f"unsupported value {_enum_name(_TYPE, kind)}")
    eds_name: str | None = None
    inline = None
    if kind == _TYPE.EDS:
        eds = message.eds_cluster_config
        source = eds.eds_config.WhichOneof("config_source_specifier")
        if source not in ("ads", "self", None):
            raise where.error("eds_cluster_config.eds_config", f"only ADS is supported, got {source}")
        eds_name = eds.service_name or message.name
    elif message.HasField("load_assignment"):
        inline = message.load_assignment

    lb = _lb_policy(message, where, extras, passthrough=kind == _TYPE.ORIGINAL_DST)
    policy = TrafficPolicy(
        lb=lb,
        connection_pool=_connection_pool(message, where, extras),
        outlier_detection=_outlier(message.outlier_detection) if message.HasField("outlier_detection") else None,
        tls=decode_cluster_tls(message, where, extras),
        rate_limit=_rate_limit(extras.get("rate_limit")),
        retry_budget=_retry_budget(message),
    )
    parsed = parse_cluster_name(message.name)
    fqdn, port, subset = parsed if parsed is not None else (message.name, 0, "")
    service_hint = dict(extras.get("service") or {})
    if not service_hint:
        services = istio_metadata(message).get("services") or []
        if services and isinstance(services[0], dict):
            service_hint = {"namespace": services[0].get("namespace", "")}
    resolution = (
        extras.get("resolution", resolution) if extras.get("resolution") in RESOLUTIONS.values() else resolution
    )
    cluster = Cluster(
        name=message.name,
        service=fqdn,
        port=port,
        subset=subset,
        endpoints=(),
        policy=policy,
        resolution=resolution,
    )
    return DecodedCluster(cluster, eds_name, inline, service_hint, bool(extras.get("hash_policies")))


# ----------------------------------------------------------------------------- load balancing


def _lb_policy(message: Any, where: Where, extras: dict[str, Any], *, passthrough: bool) -> LbPolicy:
    value = message.lb_policy
    if value == _LB.CLUSTER_PROVIDED:
        if not passthrough:
            raise where.error("lb_policy", "unsupported value CLUSTER_PROVIDED (only with type ORIGINAL_DST)")
        kind = LbKind.PASSTHROUGH
    elif value == _LB.LOAD_BALANCING_POLICY_CONFIG:
        kind = _policy_extension(message, where)
    elif value in LB_KINDS:
        kind = LB_KINDS[value]
    else:
        raise where.error("lb_policy", f"unsupported value {_enum_name(_LB, value)}")
    if passthrough:
        kind = LbKind.PASSTHROUGH
    if extras.get("lb") == LbKind.PEAK_EWMA and kind is LbKind.LEAST_REQUEST:
        kind = LbKind.PEAK_EWMA
    elif extras.get("lb") in LbKind.__members__ and passthrough:
        kind = LbKind(extras["lb"])

    defaults = LbPolicy()
    ring_min, ring_max = defaults.ring_min_size, defaults.ring_max_size
    if message.HasField("ring_hash_lb_config"):
        ring = message.ring_hash_lb_config
        if ring.hash_function != EnvoyCluster.RingHashLbConfig.XX_HASH:
            raise where.error("ring_hash_lb_config.hash_function", "only XX_HASH is supported")
        ring_min = wrapped(ring, "minimum_ring_size", ring_min)
        ring_max = wrapped(ring, "maximum_ring_size", ring_max)
        if ring_min > ring_max:
            raise where.error("ring_hash_lb_config", f"minimum_ring_size {ring_min} > maximum_ring_size {ring_max}")
    table = defaults.maglev_table_size
    if message.HasField("maglev_lb_config"):
        table = wrapped(message.maglev_lb_config, "table_size", table)

    choice_count, bias, warmup = defaults.choice_count, defaults.active_request_bias, None
    if message.HasField("least_request_lb_config"):
        config = message.least_request_lb_config
        choice_count = wrapped(config, "choice_count", choice_count)
        if choice_count < 2:
            raise where.error("least_request_lb_config.choice_count", f"must be at least 2, got {choice_count}")
        if config.HasField("active_request_bias"):
            bias = config.active_request_bias.default_value
        if config.HasField("slow_start_config"):
            warmup = _warmup(config.slow_start_config, "least_request_lb_config.slow_start_config")
    if message.HasField("round_robin_lb_config") and message.round_robin_lb_config.HasField("slow_start_config"):
        warmup = _warmup(message.round_robin_lb_config.slow_start_config, "round_robin_lb_config.slow_start_config")

    common = message.common_lb_config
    panic = common.healthy_panic_threshold.value if common.HasField("healthy_panic_threshold") else 50.0
    locality = _locality(extras.get("locality"))
    if locality is None and common.HasField("locality_weighted_lb_config"):
        locality = LocalityLbSetting()
    return LbPolicy(
        kind=kind,
        hash_policies=_hash_policies(extras.get("hash_policies")),
        ring_min_size=int(ring_min),
        ring_max_size=int(ring_max),
        maglev_table_size=int(table),
        choice_count=int(choice_count),
        active_request_bias=float(bias),
        locality=locality,
        warmup=warmup,
        panic_threshold_percent=float(panic),
        failover_enabled=bool(extras.get("failover_enabled", False)),
        peak_ewma_decay_s=float(extras.get("peak_ewma_decay_s", defaults.peak_ewma_decay_s)),
    )


def _policy_extension(message: Any, where: Where) -> LbKind:
    for i, policy in enumerate(message.load_balancing_policy.policies):
        name = policy.typed_extension_config.typed_config.type_url.rsplit("/", 1)[-1]
        if name in POLICY_EXTENSIONS:
            return POLICY_EXTENSIONS[name]
        if i == len(message.load_balancing_policy.policies) - 1:
            raise where.error(f"load_balancing_policy.policies[{i}]", f"unsupported policy {name}")
    raise where.error("load_balancing_policy", "no policies")


def _warmup(config: Any, path: str) -> Warmup:
    """A ``slow_start_config`` at ``path`` (for an error's field path)."""
    aggression = config.aggression.default_value if config.HasField("aggression") else 1.0
    minimum = config.min_weight_percent.value if config.HasField("min_weight_percent") else 10.0
    return Warmup(seconds(config.slow_start_window, f"{path}.slow_start_window"), float(minimum), float(aggression))


def _hash_policies(raw: Any) -> tuple[HashPolicy, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if isinstance(item, dict) and item.get("kind") in ("header", "cookie", "source_ip", "query_parameter"):
            ttl = item.get("cookie_ttl_s")
            out.append(
                HashPolicy(
                    kind=item["kind"],
                    name=str(item.get("name", "")),
                    terminal=bool(item.get("terminal", False)),
                    cookie_ttl_s=float(ttl) if ttl is not None else None,
                    cookie_path=str(item.get("cookie_path", "")),
                )
            )
    return tuple(out)


def _locality(raw: Any) -> LocalityLbSetting | None:
    if not isinstance(raw, dict):
        return None
    return LocalityLbSetting(
        enabled=bool(raw.get("enabled", True)),
        distribute=tuple(
            LocalityDistribute(str(d.get("from", "")), {str(k): as_int(v) for k, v in (d.get("to") or {}).items()})
            for d in raw.get("distribute") or []
        ),
        failover=tuple(
            LocalityFailover(str(f.get("from", "")), str(f.get("to", ""))) for f in raw.get("failover") or []
        ),
        failover_priority=tuple(str(p) for p in raw.get("failover_priority") or []),
    )


def _rate_limit(raw: Any) -> RateLimitSpec | None:
    if not isinstance(raw, dict) or "max_tokens" not in raw:
        return None
    return RateLimitSpec(
        max_tokens=as_int(raw["max_tokens"]),
        tokens_per_fill=as_int(raw.get("tokens_per_fill"), 1),
        fill_interval_s=float(raw.get("fill_interval_s", 1.0)),
    )


# ----------------------------------------------------------------------------- pool and outlier


def _retry_budget(message: Any) -> RetryBudgetSpec | None:
    for threshold in message.circuit_breakers.thresholds:
        if threshold.priority == 0 and threshold.HasField("retry_budget"):
            budget = threshold.retry_budget
            defaults = RetryBudgetSpec()
            return RetryBudgetSpec(
                percent=float(wrapped(budget, "budget_percent", defaults.percent)),
                min_retry_concurrency=int(wrapped(budget, "min_retry_concurrency", defaults.min_retry_concurrency)),
            )
    return None


def _connection_pool(message: Any, where: Where, extras: dict[str, Any]) -> ConnectionPool:
    threshold = None
    for t in message.circuit_breakers.thresholds:
        if t.priority == 0:  # DEFAULT
            threshold = t
            break

    def limit(field: str, default: int) -> int:
        return int(wrapped(threshold, field, default)) if threshold is not None else default

    connect_timeout = optional_seconds(message, "connect_timeout")
    idle_timeout = 3600.0
    per_connection = 0
    use_client = False
    h2 = False
    streams: int | None = None
    # Deprecated cluster-level fields (older istiod) first; the typed extension wins.
    if message.HasField("common_http_protocol_options"):
        common_options = message.common_http_protocol_options
        idle_timeout = optional_seconds(common_options, "idle_timeout", "common_http_protocol_options") or idle_timeout
    per_connection = int(wrapped(message, "max_requests_per_connection", per_connection))
    packed = message.typed_extension_protocol_options.get(type_urls.HTTP_PROTOCOL_OPTIONS_KEY)
    if packed is not None:
        path = f'typed_extension_protocol_options["{type_urls.HTTP_PROTOCOL_OPTIONS_KEY}"]'
        options = unpack(packed, http_protocol_options_pb2.HttpProtocolOptions, where, path)
        common = options.common_http_protocol_options
        idle = optional_seconds(common, "idle_timeout", f"{path}.common_http_protocol_options")
        idle_timeout = idle if idle is not None else idle_timeout
        per_connection = int(wrapped(common, "max_requests_per_connection", per_connection))
        use_client = options.HasField("use_downstream_protocol_config")
        explicit = options.explicit_http_config
        if options.HasField("explicit_http_config") and explicit.HasField("http2_protocol_options"):
            h2 = True
            streams = wrapped(explicit.http2_protocol_options, "max_concurrent_streams", None)
    pool_extras = extras.get("pool") if isinstance(extras.get("pool"), dict) else {}
    assert isinstance(pool_extras, dict)
    upgrade = str(pool_extras.get("h2_upgrade_policy", "DEFAULT"))
    max_streams = pool_extras.get("max_concurrent_streams", streams if h2 else None)
    return ConnectionPool(
        max_connections=limit("max_connections", ENVOY_DEFAULT_MAX),
        connect_timeout_s=connect_timeout if connect_timeout is not None else 5.0,
        tcp_keepalive=message.upstream_connection_options.HasField("tcp_keepalive"),
        max_pending_requests=limit("max_pending_requests", ENVOY_DEFAULT_MAX),
        max_requests=limit("max_requests", ENVOY_DEFAULT_MAX),
        max_retries=limit("max_retries", ENVOY_DEFAULT_MAX_RETRIES),
        max_requests_per_connection=min(per_connection, UINT32_MAX),
        idle_timeout_s=idle_timeout,
        h2_upgrade_policy=upgrade,
        use_client_protocol=use_client,
        max_concurrent_streams=as_int(max_streams) if max_streams is not None else None,
    )


def _outlier(od: Any) -> OutlierDetection:
    d = OutlierDetection()
    base = optional_seconds(od, "base_ejection_time", "outlier_detection")
    base = d.base_ejection_time_s if base is None else base
    max_time = optional_seconds(od, "max_ejection_time", "outlier_detection")
    return OutlierDetection(
        consecutive_5xx=wrapped(od, "consecutive_5xx", d.consecutive_5xx),
        enforcing_consecutive_5xx=float(wrapped(od, "enforcing_consecutive_5xx", d.enforcing_consecutive_5xx)),
        consecutive_gateway_failure=wrapped(od, "consecutive_gateway_failure", d.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure=float(
            wrapped(od, "enforcing_consecutive_gateway_failure", d.enforcing_consecutive_gateway_failure)
        ),
        consecutive_local_origin_failure=wrapped(
            od, "consecutive_local_origin_failure", d.consecutive_local_origin_failure
        ),
        split_external_local_origin_errors=od.split_external_local_origin_errors,
        interval_s=optional_seconds(od, "interval", "outlier_detection") or d.interval_s,
        base_ejection_time_s=base,
        max_ejection_time_s=max_time if max_time is not None else max(d.max_ejection_time_s, base),
        max_ejection_percent=float(wrapped(od, "max_ejection_percent", d.max_ejection_percent)),
        always_eject_one_host=bool(wrapped(od, "always_eject_one_host", False)),
        success_rate_minimum_hosts=wrapped(od, "success_rate_minimum_hosts", d.success_rate_minimum_hosts),
        success_rate_request_volume=wrapped(od, "success_rate_request_volume", d.success_rate_request_volume),
        success_rate_stdev_factor=wrapped(od, "success_rate_stdev_factor", 1900) / 1000.0,
        enforcing_success_rate=float(wrapped(od, "enforcing_success_rate", 100)),
        failure_percentage_threshold=float(wrapped(od, "failure_percentage_threshold", d.failure_percentage_threshold)),
        failure_percentage_minimum_hosts=wrapped(
            od, "failure_percentage_minimum_hosts", d.failure_percentage_minimum_hosts
        ),
        failure_percentage_request_volume=wrapped(
            od, "failure_percentage_request_volume", d.failure_percentage_request_volume
        ),
        enforcing_failure_percentage=float(wrapped(od, "enforcing_failure_percentage", d.enforcing_failure_percentage)),
    )
