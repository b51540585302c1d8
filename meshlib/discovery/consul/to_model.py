"""A compiled discovery chain → meshlib routes and clusters, as Consul's own Envoy configuration.

Routes (``agent/xds/routes.go``): each router route becomes a route whose
match is ``PathExact`` → exact, ``PathPrefix`` → prefix, ``PathRegex`` →
regex (RE2, whole path), none → ``/``; headers exact/prefix/suffix/regex/
present with ``Invert`` as a negated condition; ``Methods`` one regex
``GET|PUT``; query parameters exact/regex/present. ``PrefixRewrite`` rewrites
the matched part; ``RequestTimeout`` is the route timeout, else Envoy's
default 15 s (a resolver's ``RequestTimeout`` counts only when the chain
starts at that resolver, as in Consul); retries only when the destination
asks for them (``NumRetries``, default 1 as Envoy's, ``RetryOn`` +
``connect-failure`` + ``retriable-status-codes``, no previous-host
avoidance); header modifiers: ``Add`` appends, ``Set`` replaces, ``Remove``.
A splitter becomes weighted clusters (weight × 100 out of 10000) with per-split
header modifiers. A chain whose protocol is ``tcp`` gets one catch-all route,
no timeout, no retries (Envoy would proxy the bytes).

Clusters (``agent/xds/clusters.go``): one per resolver node, named
``outbound|80|<subset>|<service>.service[.<dc>].consul`` (the datacenter part
only for another datacenter). Round robin unless the resolver's
``LoadBalancer`` says otherwise; panic threshold 0; outlier detection on with
Envoy's defaults, tuned by ``PassiveHealthCheck``; circuit-breaker limits from
``Limits`` else Envoy's defaults (1024 connections, pending and active
requests, 3 retries); connect timeout from ``ConnectTimeoutMs`` else the
resolver's (5 s default). Failover targets are priority levels 1, 2, … behind
the primary target's level 0.
"""

from __future__ import annotations

import re
import struct
from dataclasses import replace

from meshlib.config.model import (
    ConnectionPool,
    Endpoint,
    HashPolicy,
    HeaderOps,
    HeaderPolicy,
    LbKind,
    LbPolicy,
    OutlierDetection,
    RetryPolicy,
    Rewrite,
    Route,
    RouteMatch,
    RouteSource,
    StringMatch,
    TrafficPolicy,
    WeightedCluster,
    cluster_name,
)
from meshlib.discovery.consul.chain_types import CompiledChain, Node, Target
from meshlib.discovery.consul.entry_types import (
    HeaderModifiers,
    HttpMatch,
    LoadBalancerSpec,
    RouteDestination,
    UpstreamConfig,
)

SERVICE_PORT = 80  # the port Consul hosts are called on without one (http://web/)
ENVOY_ROUTE_TIMEOUT_S = 15.0
ENVOY_DEFAULT_LIMIT = 1024
ENVOY_DEFAULT_MAX_RETRIES = 3
ENVOY_OUTLIER_DEFAULTS = OutlierDetection(enforcing_success_rate=100.0)  # Envoy's defaults (Istio sets 0 here)

_LB_KINDS = {
    "": LbKind.ROUND_ROBIN,
    "round_robin": LbKind.ROUND_ROBIN,
    "random": LbKind.RANDOM,
    "least_request": LbKind.LEAST_REQUEST,
    "ring_hash": LbKind.RING_HASH,
    "maglev": LbKind.MAGLEV,
}


def host_for(service: str, datacenter: str, local_datacenter: str) -> str:
    """``web.service.consul``, or ``web.service.dc2.consul`` for another datacenter."""
    if datacenter and datacenter != local_datacenter:
        return f"{service}.service.{datacenter}.consul"
    return f"{service}.service.consul"


def target_cluster(target: Target, local_datacenter: str) -> WeightedCluster:
    host = host_for(target.service, target.datacenter, local_datacenter)
    return WeightedCluster(cluster_name(SERVICE_PORT, target.service_subset, host), host, SERVICE_PORT,
                           target.service_subset)


# --------------------------------------------------------------------------- routes


def chain_routes(chain: CompiledChain, local_datacenter: str) -> tuple[Route, ...]:
    """The routes of ``chain``'s virtual host, in order."""
    start = chain.nodes[chain.start_node]
    if not chain.is_l7:
        resolver = _first_resolver(chain, start)
        destinations = _destinations(chain, resolver, local_datacenter)
        return (Route((), _source(chain, start, "tcp", 0), destinations=destinations, timeout_s=None, retry=None),)
    if start.type == "router":
        routes = []
        for i, r in enumerate(start.routes):
            rule = f"Routes[{r.index}]" if r.index >= 0 else "default"
            dest = r.definition.destination or RouteDestination()
            routes.append(Route(
                matches=(_route_match(r.definition.match),),
                source=_source(chain, start, rule, i),
                destinations=_destinations(chain, chain.nodes[r.next_node], local_datacenter),
                rewrite=Rewrite(uri=dest.prefix_rewrite) if dest.prefix_rewrite else None,
                timeout_s=dest.request_timeout_s or ENVOY_ROUTE_TIMEOUT_S,
                retry=_retry(dest),
                headers=HeaderPolicy(_ops(dest.request_headers), _ops(dest.response_headers)),
            ))
        return tuple(routes)
    timeout = ENVOY_ROUTE_TIMEOUT_S
    if start.resolver is not None and start.resolver.request_timeout_s:
        timeout = start.resolver.request_timeout_s
    return (Route((), _source(chain, start, start.key, 0), destinations=_destinations(chain, start, local_datacenter),
                  timeout_s=timeout, retry=None),)


def _first_resolver(chain: CompiledChain, node: Node) -> Node:
    while node.type != "resolver":
        node = chain.nodes[node.routes[-1].next_node if node.routes else node.splits[0].next_node]
    return node


def _source(chain: CompiledChain, node: Node, rule: str, index: int) -> RouteSource:
    entry = node.entry or f"discovery-chain/{chain.service_name}"
    return RouteSource(f"consul {entry}", rule, index)


def _destinations(chain: CompiledChain, node: Node, local_datacenter: str) -> tuple[WeightedCluster, ...]:
    if node.type == "resolver" and node.resolver is not None:
        return (target_cluster(chain.targets[node.resolver.target], local_datacenter),)
    out = []
    for split in node.splits:
        inner = chain.nodes[split.next_node]
        if inner.resolver is None:
            continue
        base = target_cluster(chain.targets[inner.resolver.target], local_datacenter)
        headers = HeaderPolicy(_ops(split.request_headers), _ops(split.response_headers))
        out.append(replace(base, weight=envoy_weight(split.weight), headers=headers))
    return tuple(out)


def _float32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def envoy_weight(weight: float) -> int:
    """Consul's ``int(split.Weight * 100)``: float32 arithmetic, truncated (33.33 → 3333, 14.29 → 1429)."""
    return int(_float32(_float32(weight) * 100.0))


def _ops(mods: HeaderModifiers | None) -> HeaderOps:
    if mods is None:
        return HeaderOps()
    return HeaderOps(set=mods.set, add=mods.add, remove=tuple(h.lower() for h in mods.remove))


def _retry(dest: RouteDestination) -> RetryPolicy | None:
    if not dest.has_retry_features:
        return None
    retry_on = list(dest.retry_on)
    if dest.retry_on_connect_failure and "connect-failure" not in retry_on:
        retry_on.append("connect-failure")
    if dest.retry_on_status_codes:
        retry_on.append("retriable-status-codes")
    return RetryPolicy(
        num_retries=dest.num_retries or 1,  # Envoy's default when num_retries is unset
        retry_on=tuple(retry_on),
        retriable_status_codes=dest.retry_on_status_codes,
        previous_hosts=False,  # Consul sets no retry_host_predicate
        host_selection_attempts=1,
    )


def _route_match(match: HttpMatch | None) -> RouteMatch:
    if match is None:
        return RouteMatch(uri=StringMatch("prefix", "/"))
    uri = StringMatch("prefix", "/")
    if match.path_exact:
        uri = StringMatch("exact", match.path_exact)
    elif match.path_prefix:
        uri = StringMatch("prefix", match.path_prefix)
    elif match.path_regex:
        uri = StringMatch("regex", match.path_regex)
    headers: list[tuple[str, StringMatch]] = []
    inverted: list[tuple[str, StringMatch]] = []
    for h in match.headers:
        if h.present:
            condition = StringMatch("present")
        elif h.exact:
            condition = StringMatch("exact", h.exact)
        elif h.prefix:
            condition = StringMatch("prefix", h.prefix)
        elif h.suffix:
            condition = StringMatch("regex", ".*" + _re2_escape(h.suffix))
        else:
            condition = StringMatch("regex", h.regex)
        (inverted if h.invert else headers).append((h.name.lower(), condition))
    query: list[tuple[str, StringMatch]] = []
    for q in match.query_params:
        if q.present:
            query.append((q.name, StringMatch("present")))
        elif q.exact:
            query.append((q.name, StringMatch("exact", q.exact)))
        else:
            query.append((q.name, StringMatch("regex", q.regex)))
    method = StringMatch("regex", "|".join(match.methods)) if match.methods else None
    return RouteMatch(uri=uri, method=method, headers=tuple(headers), without_headers=tuple(inverted),
                      query_params=tuple(query))


def _re2_escape(text: str) -> str:
    return re.sub(r"([^A-Za-z0-9_])", r"\\\1", text)


# --------------------------------------------------------------------------- clusters


def cluster_policy(node: Node, upstream: UpstreamConfig | None, locality_failover: bool) -> TrafficPolicy:
    """The Consul/Envoy policy of a resolver node's cluster."""
    resolver = node.resolver
    connect = resolver.connect_timeout_s if resolver is not None else 5.0
    limits = upstream.limits if upstream is not None else None
    if upstream is not None and upstream.connect_timeout_ms:
        connect = upstream.connect_timeout_ms / 1000.0
    pool = ConnectionPool(
        max_connections=_limit(limits.max_connections if limits else None),
        connect_timeout_s=connect,
        max_pending_requests=_limit(limits.max_pending_requests if limits else None),
        max_requests=_limit(limits.max_concurrent_requests if limits else None),
        max_retries=ENVOY_DEFAULT_MAX_RETRIES,
    )
    return TrafficPolicy(
        lb=lb_policy(node.load_balancer, locality_failover),
        connection_pool=pool,
        outlier_detection=_outlier(upstream),
    )


def _limit(value: int | None) -> int:
    return ENVOY_DEFAULT_LIMIT if value is None else value


def lb_policy(spec: LoadBalancerSpec | None, locality_failover: bool) -> LbPolicy:
    base = LbPolicy(kind=LbKind.ROUND_ROBIN, panic_threshold_percent=0.0, failover_enabled=locality_failover)
    if spec is None:
        return base
    policy = replace(base, kind=_LB_KINDS.get(spec.policy, LbKind.ROUND_ROBIN))
    if spec.choice_count:
        policy = replace(policy, choice_count=spec.choice_count)
    if spec.ring_min:
        policy = replace(policy, ring_min_size=spec.ring_min)
    if spec.ring_max:
        policy = replace(policy, ring_max_size=spec.ring_max)
    if spec.hash_based and spec.hash_policies:
        hashes = []
        for hp in spec.hash_policies:
            if hp.source_ip:
                hashes.append(HashPolicy("source_ip", terminal=hp.terminal))
            elif hp.field == "cookie":
                ttl = 0.0 if hp.cookie_session else hp.cookie_ttl_s
                hashes.append(HashPolicy("cookie", hp.field_value, hp.terminal, ttl, hp.cookie_path))
            elif hp.field == "header":
                hashes.append(HashPolicy("header", hp.field_value.lower(), hp.terminal))
            elif hp.field == "query_parameter":
                hashes.append(HashPolicy("query_parameter", hp.field_value, hp.terminal))
        policy = replace(policy, hash_policies=tuple(hashes))
    return policy


def _outlier(upstream: UpstreamConfig | None) -> OutlierDetection:
    check = upstream.passive_health_check if upstream is not None else None
    detection = ENVOY_OUTLIER_DEFAULTS
    if check is None:
        return detection
    if check.interval_s:
        detection = replace(detection, interval_s=check.interval_s)
    if check.max_failures:
        detection = replace(detection, consecutive_5xx=check.max_failures)
    if check.enforcing_consecutive_5xx is not None:
        detection = replace(detection, enforcing_consecutive_5xx=float(check.enforcing_consecutive_5xx))
    if check.max_ejection_percent is not None:
        detection = replace(detection, max_ejection_percent=float(check.max_ejection_percent))
    if check.base_ejection_time_s is not None:
        detection = replace(detection, base_ejection_time_s=check.base_ejection_time_s)
    return detection


def with_priority(endpoints: list[Endpoint], priority: int) -> list[Endpoint]:
    return [replace(e, priority=priority) if e.priority != priority else e for e in endpoints]
