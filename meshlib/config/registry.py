"""The service registry and DestinationRule index built from parsed resources.

Conflicts, resolved the way istiod tolerates them rather than rejected:

- Several ServiceEntries with the same host: the first (file order) defines
  the service; later ones are ignored for that host.
- Several DestinationRules for the same host: they are merged as istiod merges
  DestinationRules of one namespace: subsets are concatenated (a later subset
  with an already-used name is ignored), and the first rule's top-level
  ``trafficPolicy`` (and meshlib load-balancer annotation) wins; a later rule
  contributes its policy only when no earlier one set any.
- A DestinationRule with ``workloadSelector`` applies only when it selects
  the calling workload's labels.
- ``exportTo`` and namespace visibility are not modelled: every resource is
  visible to the workload (the common single-team setup).
- A ServiceEntry with ``workloadSelector`` takes as endpoints the
  WorkloadEntries of its own namespace whose labels (``spec.labels`` over
  ``metadata.labels``) the selector selects, in file order, as istiod does.

DestinationRule lookup for a service: the rule whose (resolved) host equals
the service name, else the most specific wildcard rule that covers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meshlib.config.hosts import host_matches, resolve_host
from meshlib.config.istio_types import (
    DestinationRuleSpec,
    PolicyParts,
    ServiceEntrySpec,
    SubsetSpec,
    WorkloadEndpoint,
    WorkloadEntrySpec,
)
from meshlib.config.model import LbKind, RateLimitSpec, Service, WorkloadIdentity


@dataclass(slots=True)
class MergedRule:
    """All DestinationRules for one host, merged."""

    host: str
    policy: PolicyParts | None
    subsets: dict[str, SubsetSpec]
    lb_override: LbKind | None
    sources: list[DestinationRuleSpec] = field(default_factory=list)
    rate_limit: RateLimitSpec | None = None


@dataclass(slots=True)
class Registry:
    """Services by fqdn (file order), their ServiceEntry endpoints, and DestinationRules by host."""

    services: dict[str, Service] = field(default_factory=dict)
    endpoints: dict[str, tuple[WorkloadEndpoint, ...]] = field(default_factory=dict)
    rules: dict[str, MergedRule] = field(default_factory=dict)
    _wildcard_services: list[str] = field(default_factory=list)
    _wildcard_rules: list[str] = field(default_factory=list)

    def resolve(self, host: str, namespace: str) -> str:
        """Resolve a host written in ``namespace`` (see :mod:`meshlib.config.hosts`)."""
        return resolve_host(host, namespace, self.services)

    def service_for(self, fqdn: str) -> Service | None:
        """The service named ``fqdn``, else the most specific wildcard service covering it."""
        service = self.services.get(fqdn)
        if service is not None:
            return service
        for pattern in self._wildcard_services:
            if host_matches(pattern, fqdn):
                return self.services[pattern]
        return None

    def rule_for(self, fqdn: str) -> MergedRule | None:
        """The merged DestinationRule that applies to ``fqdn``."""
        rule = self.rules.get(fqdn)
        if rule is not None:
            return rule
        for pattern in self._wildcard_rules:
            if host_matches(pattern, fqdn):
                return self.rules[pattern]
        return None


def build_registry(
    entries: Sequence[ServiceEntrySpec],
    rules: Sequence[DestinationRuleSpec],
    workload: WorkloadIdentity,
    workload_entries: Sequence[WorkloadEntrySpec] = (),
) -> Registry:
    """Index ServiceEntries and DestinationRules (see the module docstring for conflicts)."""
    registry = Registry()
    for entry in entries:
        endpoints = entry.endpoints
        if entry.workload_selector is not None:
            endpoints = tuple(
                we.endpoint
                for we in workload_entries
                if we.meta.namespace == entry.meta.namespace and we.endpoint.labels.selects(entry.workload_selector)
            )
        for fqdn, _line in entry.hosts:
            if fqdn in registry.services:
                continue
            registry.services[fqdn] = Service(
                fqdn=fqdn,
                namespace=entry.meta.namespace,
                ports=entry.ports,
                # DYNAMIC_DNS resolves each request's own host, which is what NONE (passthrough) does here.
                resolution="NONE" if entry.resolution == "DYNAMIC_DNS" else entry.resolution,  # type: ignore[arg-type]
                location=entry.location,  # type: ignore[arg-type]
                subject_alt_names=entry.subject_alt_names,
            )
            registry.endpoints[fqdn] = endpoints
    registry._wildcard_services = _by_specificity(h for h in registry.services if h.startswith("*"))

    for rule in rules:
        if rule.workload_selector is not None and not workload.labels.selects(rule.workload_selector):
            continue
        host = registry.resolve(rule.host, rule.meta.namespace)
        merged = registry.rules.get(host)
        if merged is None:
            merged = registry.rules[host] = MergedRule(host, rule.policy, {}, rule.lb_override)
        elif merged.policy is None:
            merged.policy = rule.policy
        if merged.lb_override is None:
            merged.lb_override = rule.lb_override
        if merged.rate_limit is None:
            merged.rate_limit = rule.rate_limit
        merged.sources.append(rule)
        for subset in rule.subsets:
            merged.subsets.setdefault(subset.name, subset)
    registry._wildcard_rules = _by_specificity(h for h in registry.rules if h.startswith("*"))
    return registry


def _by_specificity(patterns: Iterable[str]) -> list[str]:
    # "*" last; otherwise longer suffixes (more specific) first, file order among equals.
    return sorted(patterns, key=lambda p: (p == "*", -len(p)))
