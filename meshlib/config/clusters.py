"""Clusters: one per service port, plus one per DestinationRule subset and port.

Traffic policy resolution follows istiod (``MergeSubsetTrafficPolicy`` in
pilot/pkg/networking/util): for port P,

1. the DestinationRule's top-level policy, replaced **wholesale** by its
   ``portLevelSettings`` entry for P when there is one (components that entry
   leaves unset fall back to defaults, not to the top level — Istio documents
   "port level policies do not inherit");
2. for a subset cluster, the subset's policy (itself replaced by *its*
   port-level entry for P when present) overrides component by component
   (loadBalancer, connectionPool, outlierDetection, tls); when the subset has a
   port-level entry for P, all four components come from it.

Endpoints: for service port P an endpoint listens on ``endpoint.ports[<P's
name>]`` if set, else P's ``targetPort``, else P. A DNS ServiceEntry without
endpoints gets one endpoint, the host itself; NONE gets none (passthrough).
"""

from __future__ import annotations

from dataclasses import replace

from meshlib.config.istio_types import PolicyParts, WorkloadEndpoint
from meshlib.config.model import (
    NO_TLS,
    Cluster,
    ConnectionPool,
    Endpoint,
    LbKind,
    LbPolicy,
    RateLimitSpec,
    Service,
    ServicePort,
    TrafficPolicy,
    cluster_name,
)
from meshlib.config.registry import MergedRule, Registry

_HASH_KINDS = (LbKind.RING_HASH, LbKind.MAGLEV)


def merge_policy(top: PolicyParts | None, subset: PolicyParts | None, port: int) -> PolicyParts:
    """Istio's destination/subset/port merge for one port (see module docstring)."""
    # retryBudget lives on the TrafficPolicy only (no port-level form): subset over top.
    budget = (subset.retry_budget if subset is not None else None) or (top.retry_budget if top is not None else None)
    base = top.for_port(port)[0] if top is not None else None
    if subset is None:
        merged = base or PolicyParts()
    else:
        sub, port_level = subset.for_port(port)
        if base is None:
            merged = sub
        else:
            merged = PolicyParts(
                lb=sub.lb if sub.lb is not None or port_level else base.lb,
                pool=sub.pool if sub.pool is not None or port_level else base.pool,
                outlier=sub.outlier if sub.outlier is not None or port_level else base.outlier,
                tls=sub.tls if sub.tls is not None or port_level else base.tls,
            )
    return merged if merged.retry_budget == budget else replace(merged, retry_budget=budget)


def to_traffic_policy(
    parts: PolicyParts, lb_override: LbKind | None = None, rate_limit: RateLimitSpec | None = None
) -> TrafficPolicy:
    """Merged Istio components → the model's resolved policy."""
    lb = parts.lb or LbPolicy()
    if lb_override is not None and lb.kind not in _HASH_KINDS:
        # The meshlib annotation picks the algorithm; consistentHash still wins
        # because it carries the hash inputs the user asked for.
        lb = replace(lb, kind=lb_override)
    outlier = parts.outlier
    if outlier is not None:
        # Istio: with outlierDetection the panic threshold is minHealthPercent
        # (default 0 = panic off), and locality failover is enabled.
        lb = replace(lb, panic_threshold_percent=outlier.min_health_percent, failover_enabled=True)
    return TrafficPolicy(
        lb=lb,
        connection_pool=parts.pool or ConnectionPool(),
        outlier_detection=outlier.detection if outlier is not None else None,
        tls=parts.tls or NO_TLS,
        rate_limit=rate_limit,
        retry_budget=parts.retry_budget,
    )


def with_service_identities(policy: TrafficPolicy, service: Service) -> TrafficPolicy:
    """ISTIO_MUTUAL without ``subjectAltNames`` verifies the service's own identities (istiod: its accounts)."""
    tls = policy.tls
    if tls.mode != "ISTIO_MUTUAL" or tls.subject_alt_names or not service.subject_alt_names:
        return policy
    return replace(policy, tls=replace(tls, subject_alt_names=service.subject_alt_names))


def service_endpoints(
    service: Service, port: ServicePort, entries: tuple[WorkloadEndpoint, ...]
) -> list[Endpoint]:
    """The endpoints of ``service`` for one of its ports."""
    default_port = port.target_port or port.number
    if not entries:
        if service.resolution in ("DNS", "DNS_ROUND_ROBIN") and not service.fqdn.startswith("*"):
            return [Endpoint(service.fqdn, default_port)]
        return []
    out: list[Endpoint] = []
    for entry in entries:
        number = default_port
        if port.name:
            for name, value in entry.ports:
                if name == port.name:
                    number = value
                    break
        out.append(Endpoint(entry.address, number, entry.weight, entry.labels, entry.locality))
    return out


def build_clusters(registry: Registry) -> dict[str, Cluster]:
    """Every outbound cluster of every service in ``registry``."""
    clusters: dict[str, Cluster] = {}
    for fqdn, service in registry.services.items():
        rule: MergedRule | None = registry.rule_for(fqdn)
        entries = registry.endpoints.get(fqdn, ())
        for port in service.ports:
            endpoints = service_endpoints(service, port, entries)
            top = rule.policy if rule is not None else None
            override = rule.lb_override if rule is not None else None
            limit = rule.rate_limit if rule is not None else None
            name = cluster_name(port.number, "", fqdn)
            clusters[name] = Cluster(
                name=name,
                service=fqdn,
                port=port.number,
                subset="",
                endpoints=tuple(endpoints),
                policy=with_service_identities(
                    to_traffic_policy(merge_policy(top, None, port.number), override, limit), service
                ),
                resolution=service.resolution,
            )
            if rule is None:
                continue
            for subset in rule.subsets.values():
                name = cluster_name(port.number, subset.name, fqdn)
                selected = tuple(e for e in endpoints if e.labels.selects(subset.labels))
                clusters[name] = Cluster(
                    name=name,
                    service=fqdn,
                    port=port.number,
                    subset=subset.name,
                    endpoints=selected,
                    policy=with_service_identities(
                        to_traffic_policy(merge_policy(top, subset.policy, port.number), override, limit), service
                    ),
                    resolution=service.resolution,
                )
    return clusters
