"""Parsed Istio resources → one :class:`MeshSnapshot` for one workload.

Order matters and mirrors istiod: the registry (ServiceEntries) first, since
host resolution of everything else depends on which services exist; then
DestinationRules (clusters and their subsets); then the cross-resource
checks; then VirtualServices (routes), which need the clusters to know when a
destination is consistently hashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from meshlib.config.clusters import build_clusters
from meshlib.config.istio_types import (
    DestinationRuleSpec,
    IstioResource,
    ServiceEntrySpec,
    SidecarSpec,
    VirtualServiceSpec,
    WorkloadEntrySpec,
)
from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.config.peer_authentication import PeerAuthenticationSpec
from meshlib.config.references import check_delegates, check_destination_hosts, check_subsets
from meshlib.config.registry import build_registry
from meshlib.config.routes import RouteBuilder
from meshlib.config.security_model import AuthorizationPolicySpec, SecurityPolicies
from meshlib.config.sidecar_scope import scope_resources, sidecar_for
from meshlib.errors import ConfigInvalid, ConfigProblem

DEFAULT_WORKLOAD = WorkloadIdentity()


def reference_problems(
    resources: Sequence[IstioResource],
    workload: WorkloadIdentity = DEFAULT_WORKLOAD,
    *,
    check_hosts: bool = True,
) -> list[ConfigProblem]:
    """Cross-resource problems (undefined subsets, hosts, delegates), in file order."""
    entries, rules, services, workload_entries = _split(resources)
    registry = build_registry(entries, rules, workload, workload_entries)
    problems = check_subsets(services, registry) + check_delegates(services)
    if check_hosts:
        problems += check_destination_hosts(services, registry)
    problems.sort(key=lambda p: (p.file, p.line))
    return problems


def compile_snapshot(
    resources: Sequence[IstioResource],
    workload: WorkloadIdentity = DEFAULT_WORKLOAD,
    version: str = "",
    *,
    check_hosts: bool = True,
) -> MeshSnapshot:
    """Compile validated resources into a snapshot as istiod would for this workload's sidecar.

    Raises :class:`ConfigInvalid` listing every cross-resource error (warnings,
    such as IST0101 for a missing host or subset, do not stop compilation).
    ``check_hosts=False`` skips the "destination host must be a ServiceEntry"
    check, for registries that know services the YAML does not.
    """
    entries, rules, services, workload_entries = _split(resources)
    sidecar = sidecar_for([r for r in resources if isinstance(r, SidecarSpec)], workload)
    entries, services = scope_resources(sidecar, entries, services)
    registry = build_registry(entries, rules, workload, workload_entries)
    problems = [p for p in check_delegates(services) if not p.is_warning]
    if problems:
        problems.sort(key=lambda p: (p.file, p.line))
        raise ConfigInvalid(problems)
    clusters = build_clusters(registry)
    route_configs, listeners = RouteBuilder(services, registry, clusters, workload).build()
    return MeshSnapshot(
        version=version,
        services=MappingProxyType(dict(registry.services)),
        clusters=MappingProxyType(clusters),
        route_configs=MappingProxyType(route_configs),
        listeners=MappingProxyType(listeners),
        workload=workload,
        security=SecurityPolicies(
            authorization=tuple(r for r in resources if isinstance(r, AuthorizationPolicySpec)),
            peer_authentication=tuple(r for r in resources if isinstance(r, PeerAuthenticationSpec)),
        ),
        outbound_traffic_policy=sidecar.outbound_traffic_policy if sidecar is not None else "",
    )


def _split(
    resources: Sequence[IstioResource],
) -> tuple[list[ServiceEntrySpec], list[DestinationRuleSpec], list[VirtualServiceSpec], list[WorkloadEntrySpec]]:
    entries = [r for r in resources if isinstance(r, ServiceEntrySpec)]
    rules = [r for r in resources if isinstance(r, DestinationRuleSpec)]
    services = [r for r in resources if isinstance(r, VirtualServiceSpec)]
    workload_entries = [r for r in resources if isinstance(r, WorkloadEntrySpec)]
    return entries, rules, services, workload_entries
