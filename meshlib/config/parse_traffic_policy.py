"""DestinationRule ``TrafficPolicy`` validation and mapping to model components.

Each component (loadBalancer, connectionPool, outlierDetection, tls) is
returned as its model type, or None when the YAML does not set it; the
subset/port merge in :mod:`meshlib.config.policy_merge` depends on that
difference. Mappings follow istiod's ``cluster_traffic_policy.go``:
connectionPool values of 0 mean "unset" (Istio's 2³²−1 default stays), and
outlierDetection follows semantics.md §2 "Istio mapping".
"""

from __future__ import annotations

from meshlib.balancing.maglev import is_prime
from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.istio_types import OutlierSetting, PolicyParts
from meshlib.config.model import (
    ConnectionPool,
    HashPolicy,
    LbKind,
    LbPolicy,
    LocalityDistribute,
    LocalityFailover,
    LocalityLbSetting,
    OutlierDetection,
    RetryBudgetSpec,
    Warmup,
)
from meshlib.config.parse_client_tls import TLS_FIELDS, parse_client_tls

POLICY_FIELDS = frozenset(
    {
        "loadBalancer",
        "connectionPool",
        "outlierDetection",
        "tls",
        "portLevelSettings",
        "tunnel",
        "proxyProtocol",
        "retryBudget",
    }
)
PORT_POLICY_FIELDS = frozenset({"port", "loadBalancer", "connectionPool", "outlierDetection", "tls"})
LB_FIELDS = frozenset({"simple", "consistentHash", "localityLbSetting", "warmupDurationSecs", "warmup"})
HASH_FIELDS = frozenset(
    {
        "httpHeaderName",
        "httpCookie",
        "useSourceIp",
        "httpQueryParameterName",
        "ringHash",
        "maglev",
        "minimumRingSize",
    }
)
HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
TCP_FIELDS = frozenset(
    {"maxConnections", "connectTimeout", "tcpKeepalive", "maxConnectionDuration", "idleTimeout"}
)
HTTP_FIELDS = frozenset(
    {
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
        "idleTimeout",
        "h2UpgradePolicy",
        "useClientProtocol",
        "maxConcurrentStreams",
    }
)
OUTLIER_FIELDS = frozenset(
    {
        "consecutiveErrors",  # deprecated; accepted with a warning
        "splitExternalLocalOriginErrors",
        "consecutiveLocalOriginFailures",
        "consecutiveGatewayErrors",
        "consecutive5xxErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
    }
)
SIMPLE_LB = {
    "UNSPECIFIED": LbKind.LEAST_REQUEST,  # Istio's default policy
    "LEAST_CONN": LbKind.LEAST_REQUEST,  # deprecated alias
    "LEAST_REQUEST": LbKind.LEAST_REQUEST,
    "ROUND_ROBIN": LbKind.ROUND_ROBIN,
    "RANDOM": LbKind.RANDOM,
    "PASSTHROUGH": LbKind.PASSTHROUGH,
}
MAX_RING_SIZE = LbPolicy().ring_max_size
MAX_MAGLEV_TABLE = 5_000_011  # Envoy's limit
INT32_MAX = 2**31 - 1
MS = 0.001


def parse_traffic_policy(sink: Sink, policy: Fields, *, port_level: bool = False) -> PolicyParts:
    """Validate a TrafficPolicy (or, with ``port_level``, a PortTrafficPolicy)."""
    lb = _load_balancer(sink, policy.mapping("loadBalancer", LB_FIELDS))
    if policy.ok and not policy.node.mapping:
        what = "port traffic policy" if port_level else "traffic policy"
        policy.error(None, f"{what} must have at least one field")
    pool = _connection_pool(policy.mapping("connectionPool", ("tcp", "http")))
    outlier = _outlier(policy.mapping("outlierDetection", OUTLIER_FIELDS))
    locality = lb.locality if lb is not None else None
    if locality is not None and (locality.failover or locality.failover_priority) and outlier is None:
        policy.warn("loadBalancer", "outlier detection policy must be provided for failover")
    tls_fields = policy.mapping("tls", TLS_FIELDS)
    tls = parse_client_tls(tls_fields) if tls_fields is not None else None
    if port_level:
        return PolicyParts(lb, pool, outlier, tls)

    if policy.has("tunnel") and policy.has("proxyProtocol"):
        policy.error(None, "tunnel and proxyProtocol must not be set together")
    tunnel = policy.mapping("tunnel", ("protocol", "targetHost", "targetPort"))
    if tunnel is not None:
        tunnel.enum("protocol", ("CONNECT", "POST"))
        tunnel.string("targetHost", required=True)
        tunnel.integer("targetPort", 1, 65535, required=True)
    proxy_protocol = policy.mapping("proxyProtocol", ("version",))
    if proxy_protocol is not None:
        proxy_protocol.enum("version", ("V1", "V2"))
    budget = policy.mapping("retryBudget", ("percent", "minRetryConcurrency"))
    retry_budget = None
    if budget is not None:
        percent = budget.number("percent", 0, 100)
        minimum = budget.integer("minRetryConcurrency", 0, None)
        retry_budget = RetryBudgetSpec(
            20.0 if percent is None else float(percent), 3 if minimum is None else minimum
        )

    ports: list[tuple[int, PolicyParts]] = []
    for path, node in policy.items("portLevelSettings"):
        entry = item_fields(sink, path, node, PORT_POLICY_FIELDS)
        if entry is None:
            continue
        selector = entry.mapping("port", ("number",))
        number = selector.integer("number", 1, 65535, required=True) if selector else None
        if selector is None:
            entry.require("port")
        parts = parse_traffic_policy(sink, entry, port_level=True)
        if number is not None:
            if any(existing == number for existing, _ in ports):
                entry.error("port", f"duplicate port level settings for port {number}")
            else:
                ports.append((number, parts))
    return PolicyParts(lb, pool, outlier, tls, tuple(ports), retry_budget)


def _load_balancer(sink: Sink, lb: Fields | None) -> LbPolicy | None:
    if lb is None:
        return None
    if lb.has("simple") and lb.has("consistentHash"):
        lb.error(None, "simple and consistentHash cannot both be set")
    policy = LbPolicy()
    simple = lb.enum("simple", tuple(SIMPLE_LB))
    if simple is not None:
        policy = LbPolicy(kind=SIMPLE_LB[simple])
    hashing = lb.mapping("consistentHash", HASH_FIELDS)
    if hashing is not None:
        policy = _consistent_hash(hashing) or policy
    locality = lb.mapping("localityLbSetting", ("distribute", "failover", "failoverPriority", "enabled"))
    warmup = _warmup(lb)
    return LbPolicy(
        kind=policy.kind,
        hash_policies=policy.hash_policies,
        ring_min_size=policy.ring_min_size,
        maglev_table_size=policy.maglev_table_size,
        locality=_locality(sink, locality) if locality is not None else None,
        warmup=warmup,
    )


def _consistent_hash(hashing: Fields) -> LbPolicy | None:
    keys = [key for key in HASH_KEYS if hashing.has(key)]
    if len(keys) > 1:
        hashing.error(None, f"only one of {', '.join(HASH_KEYS)} may be set")
    hashes: list[HashPolicy] = []
    header = hashing.string("httpHeaderName")
    if header is not None:
        hashes.append(HashPolicy("header", header.lower()))
    cookie = hashing.mapping("httpCookie", ("name", "path", "ttl", "attributes"))
    if cookie is not None:
        name = cookie.string("name", required=True)
        ttl = cookie.duration("ttl", minimum_s=0, precision_s=1e-9, allow_zero=True)  # 0 = session cookie
        path = cookie.string("path") or ""
        for item_path, node in cookie.items("attributes"):
            attr = item_fields(cookie.sink, item_path, node, ("name", "value"))
            if attr is not None:
                attr.string("name", required=True)
                attr.string("value")
        if name == "":
            cookie.error("name", "name required for HttpCookie")
        elif name is not None:
            hashes.append(HashPolicy("cookie", name, cookie_ttl_s=ttl, cookie_path=path))
    if hashing.boolean("useSourceIp"):
        hashes.append(HashPolicy("source_ip"))
    query = hashing.string("httpQueryParameterName")
    if query is not None:
        hashes.append(HashPolicy("query_parameter", query))

    if hashing.has("ringHash") and hashing.has("maglev"):
        hashing.error(None, "ringHash and maglev cannot both be set")
    if hashing.has("minimumRingSize") and (hashing.has("ringHash") or hashing.has("maglev")):
        hashing.error("minimumRingSize", "cannot be combined with ringHash or maglev")
    elif hashing.has("minimumRingSize"):
        hashing.warn(
            "minimumRingSize",
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        )
    maglev = hashing.mapping("maglev", ("tableSize",))
    if maglev is not None:
        size = maglev.integer("tableSize", 0, MAX_MAGLEV_TABLE)
        if size == 0 or not maglev.has("tableSize"):
            maglev.error("tableSize" if maglev.has("tableSize") else None, "tableSize must be set for maglev")
            size = None
        if size and not is_prime(size):
            maglev.error("tableSize", f"{size} is not a prime number")
            size = None
        return LbPolicy(kind=LbKind.MAGLEV, hash_policies=tuple(hashes), maglev_table_size=size or 65537)
    ring = hashing.mapping("ringHash", ("minimumRingSize",))
    source = ring if ring is not None else hashing
    minimum = source.integer("minimumRingSize", 0, None)
    if minimum is not None and minimum > MAX_RING_SIZE:
        source.error("minimumRingSize", f"must not exceed the maximum ring size {MAX_RING_SIZE}")
        minimum = None
    return LbPolicy(kind=LbKind.RING_HASH, hash_policies=tuple(hashes), ring_min_size=minimum or 1024)


def _locality(sink: Sink, locality: Fields) -> LocalityLbSetting:
    distribute: list[LocalityDistribute] = []
    for path, node in locality.items("distribute"):
        entry = item_fields(sink, path, node, ("from", "to"))
        if entry is None:
            continue
        source = entry.string("from", required=True) or ""
        weights: dict[str, int] = {}
        for name, weight_path, value in entry.entries("to"):
            weight = value.scalar
            if (
                value.kind != "scalar"
                or isinstance(weight, bool)
                or not isinstance(weight, int)
                or weight < 0
            ):
                sink.error(value.line, weight_path, "expected a non-negative integer weight")
                continue
            if not 1 <= weight <= 100:
                sink.error(value.line, weight_path, "locality weight must be in range [1, 100]")
                continue
            weights[name] = weight
        if weights and sum(weights.values()) != 100:
            entry.error("to", "weights must sum to 100")
        for problem in _locality_problems([*weights, source]):
            entry.error(None, problem)
        distribute.append(LocalityDistribute(source, weights))
    failover: list[LocalityFailover] = []
    for path, node in locality.items("failover"):
        entry = item_fields(sink, path, node, ("from", "to"))
        if entry is None:
            continue
        origin = entry.string("from", required=True)
        target = entry.string("to", required=True)
        if origin is not None and target is not None:
            if origin == target:
                entry.error("to", "failover 'from' and 'to' must differ")
            if "/" in origin or "/" in target:
                entry.error(None, "locality lb failover only specify region")
            if "*" in origin or "*" in target:
                entry.error(None, "locality lb failover region should not contain '*' wildcard")
            failover.append(LocalityFailover(origin, target))
    priority = locality.string_list("failoverPriority") or []
    if distribute and failover:
        locality.error(None, "distribute and failover cannot both be set")
    topology = {"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}
    if failover and topology.intersection(priority):
        label = next(p for p in priority if p in topology)
        locality.error("failoverPriority", f"can not simultaneously set 'failover' and topology label '{label}' in "
                       "'failover_priority'")
    enabled = locality.boolean("enabled")
    return LocalityLbSetting(
        enabled=True if enabled is None else enabled,
        distribute=tuple(distribute),
        failover=tuple(failover),
        failover_priority=tuple(priority),
    )


def _locality_problems(localities: list[str]) -> list[str]:
    """Istio's ``validateLocalities``: ``*`` only once and last; no empty region/zone/subzone."""
    problems = []
    for locality in localities:
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            problems.append(f"locality {locality} wildcard '*' number can not exceed 1 and must be in the end")
        if any(not part for part in locality.split("/", 2)):
            problems.append(f"locality {locality} must not contain empty region/zone/subzone info")
    return problems


def _warmup(lb: Fields) -> Warmup | None:
    warmup = lb.mapping("warmup", ("duration", "minimumPercent", "aggression"))
    if warmup is not None and lb.has("warmupDurationSecs"):
        lb.error("warmupDurationSecs", "cannot be combined with warmup")
    if warmup is not None:
        duration = warmup.duration("duration", minimum_s=MS)
        if not warmup.has("duration"):
            warmup.require("duration")
        minimum = warmup.number("minimumPercent", 0, 100)
        aggression = warmup.number("aggression", 0, None)
        if aggression is not None and aggression < 1:
            warmup.error("aggression", "aggression should be greater than or equal to 1")
            aggression = None
        if duration is None:
            return None
        return Warmup(duration, 10.0 if minimum is None else minimum, aggression or 1.0)
    legacy = lb.duration("warmupDurationSecs", minimum_s=MS)
    return Warmup(legacy) if legacy is not None else None


def _connection_pool(pool: Fields | None) -> ConnectionPool | None:
    if pool is None:
        return None
    if pool.ok and not pool.node.mapping:
        pool.error(None, "connection pool must have at least one field")
    defaults = ConnectionPool()
    values: dict[str, object] = {}
    tcp = pool.mapping("tcp", TCP_FIELDS)
    if tcp is not None:
        connections = tcp.integer("maxConnections", 0, INT32_MAX)
        if connections:
            values["max_connections"] = connections
        timeout = tcp.duration("connectTimeout", minimum_s=MS)
        if timeout is not None:
            values["connect_timeout_s"] = timeout
        keepalive = tcp.mapping("tcpKeepalive", ("probes", "time", "interval"))
        if keepalive is not None:
            keepalive.integer("probes", 0, None)
            keepalive.duration("time", minimum_s=MS)
            keepalive.duration("interval", minimum_s=MS)
            values["tcp_keepalive"] = True
        tcp.duration("maxConnectionDuration", minimum_s=MS)
        tcp.duration("idleTimeout", allow_zero=True)  # Istio: 0s disables the idle timeout
    http = pool.mapping("http", HTTP_FIELDS)
    if http is not None:
        for key, attr in (
            ("http1MaxPendingRequests", "max_pending_requests"),
            ("http2MaxRequests", "max_requests"),
            ("maxRetries", "max_retries"),
            ("maxRequestsPerConnection", "max_requests_per_connection"),
        ):
            value = http.integer(key, 0, INT32_MAX)
            if value:  # 0 = unset in Istio: the default stays
                values[attr] = value
        idle = http.duration("idleTimeout")
        if idle is not None:
            values["idle_timeout_s"] = idle
        upgrade = http.enum("h2UpgradePolicy", ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"))
        if upgrade is not None:
            values["h2_upgrade_policy"] = upgrade
        if http.boolean("useClientProtocol"):
            values["use_client_protocol"] = True
            if upgrade == "UPGRADE":
                http.error("useClientProtocol", "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
        streams = http.integer("maxConcurrentStreams", 0, INT32_MAX)
        if streams:
            values["max_concurrent_streams"] = streams
    return ConnectionPool(
        max_connections=_int(values, "max_connections", defaults.max_connections),
        connect_timeout_s=_float(values, "connect_timeout_s", defaults.connect_timeout_s),
        tcp_keepalive=bool(values.get("tcp_keepalive", False)),
        max_pending_requests=_int(values, "max_pending_requests", defaults.max_pending_requests),
        max_requests=_int(values, "max_requests", defaults.max_requests),
        max_retries=_int(values, "max_retries", defaults.max_retries),
        max_requests_per_connection=_int(values, "max_requests_per_connection", 0),
        idle_timeout_s=_float(values, "idle_timeout_s", defaults.idle_timeout_s),
        h2_upgrade_policy=str(values.get("h2_upgrade_policy", "DEFAULT")),
        use_client_protocol=bool(values.get("use_client_protocol", False)),
        max_concurrent_streams=_int(values, "max_concurrent_streams", 0) or None,
    )


def _int(values: dict[str, object], key: str, default: int) -> int:
    value = values.get(key, default)
    return value if isinstance(value, int) else default


def _float(values: dict[str, object], key: str, default: float) -> float:
    value = values.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def _outlier(outlier: Fields | None) -> OutlierSetting | None:
    if outlier is None:
        return None
    base = OutlierDetection()
    consecutive_5xx = outlier.integer("consecutive5xxErrors", 0, None)
    gateway = outlier.integer("consecutiveGatewayErrors", 0, None)
    legacy = outlier.integer("consecutiveErrors", 0, None)
    if legacy is not None:
        outlier.warn(
            "consecutiveErrors",
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
            "consecutive5xxErrors instead",
        )
        if legacy and gateway is None:
            gateway = legacy  # istiod reads the deprecated field as consecutive gateway errors
    local = outlier.integer("consecutiveLocalOriginFailures", 0, None)
    split = bool(outlier.boolean("splitExternalLocalOriginErrors"))
    if local and not split:
        outlier.error(
            "consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local "
            "origin errors is set to false",
        )
    interval = outlier.duration("interval", minimum_s=MS)
    base_ejection = outlier.duration("baseEjectionTime", minimum_s=MS)
    max_percent = outlier.integer("maxEjectionPercent", 0, 100)
    min_health = outlier.integer("minHealthPercent", 0, 100)
    ejection = base_ejection if base_ejection is not None else base.base_ejection_time_s
    detection = OutlierDetection(
        consecutive_5xx=base.consecutive_5xx if consecutive_5xx is None else consecutive_5xx,
        # Explicit 0 disables enforcement; unset keeps Envoy's 5 / 100%.
        enforcing_consecutive_5xx=0.0 if consecutive_5xx == 0 else 100.0,
        consecutive_gateway_failure=base.consecutive_gateway_failure if gateway is None else gateway,
        enforcing_consecutive_gateway_failure=100.0 if gateway else 0.0,
        consecutive_local_origin_failure=local if split and local else base.consecutive_local_origin_failure,
        split_external_local_origin_errors=split,
        interval_s=interval if interval is not None else base.interval_s,
        base_ejection_time_s=ejection,
        max_ejection_time_s=max(base.max_ejection_time_s, ejection),
        max_ejection_percent=float(max_percent) if max_percent else base.max_ejection_percent,
        enforcing_success_rate=0.0,  # Istio disables success-rate ejection
    )
    return OutlierSetting(detection, float(min_health or 0))
