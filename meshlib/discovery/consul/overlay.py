"""An Istio overlay on a Consul-sourced mesh: VirtualService/DestinationRule YAML for Consul hosts.

Precedence, per host (``web.service.consul``): **an overlay VirtualService
replaces the Consul routing (service-router / splitter / resolver start)
for that host**, on every port; hosts no VirtualService covers keep Consul's
routing. This is what a team moving from Consul to Istio needs: the Istio
resource is the newer, more specific statement of intent, it can be
introduced host by host, and deleting it falls back to Consul's entries —
the same rule istiod applies when a VirtualService appears for a host that
had only default routing. ``explain`` shows which one decided: its
``route.virtual_service`` is ``namespace/name`` for the overlay and
``consul service-router/web`` (or splitter / resolver / discovery-chain)
for Consul.

Destinations: a VirtualService route to a Consul host uses Consul's clusters
(``outbound|80|<subset>|host``: Consul's health rules, resolver subsets,
failover, Consul defaults), and may name a Consul resolver subset. A
DestinationRule for a Consul host replaces that host's clusters with Istio's
(its subsets select on endpoint labels — ``Service.Meta`` and
``consul.tag/<tag>``; its traffic policy and Istio's defaults apply). Overlay
resources for other hosts (ServiceEntries…) are compiled as usual and added.

Write Consul hosts in full (``web.service.consul``): a short name in Istio
YAML means ``<name>.<namespace>.svc.cluster.local``. An overlay that fails
Istio's cross-resource checks is reported and ignored as a whole; Consul's
configuration keeps working. Findings Istio only warns about (a route to an
undefined subset: 503 ``NC`` at request time) are reported and the overlay is
used, as with Istio YAML alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from meshlib.config.compile import compile_snapshot, reference_problems
from meshlib.config.istio_types import (
    DestinationRuleSpec,
    IstioResource,
    Meta,
    ServiceEntrySpec,
    SubsetSpec,
    VirtualServiceSpec,
    WorkloadEndpoint,
)
from meshlib.config.model import (
    Cluster,
    Endpoint,
    Labels,
    Route,
    Service,
    VirtualHost,
    WeightedCluster,
    WorkloadIdentity,
    cluster_name,
)
from meshlib.discovery.consul.to_model import SERVICE_PORT
from meshlib.errors import ConfigInvalid, ConfigProblem

OVERLAY_FILE = "consul"  # the synthesized resources' file, for messages


@dataclass(frozen=True)
class OverlayInput:
    overlay: Sequence[IstioResource]
    workload: WorkloadIdentity
    services: Mapping[str, Service]  # Consul services by fqdn
    clusters: Mapping[str, Cluster]  # Consul clusters by name
    endpoints: Mapping[str, list[Endpoint]]  # healthy local endpoints by fqdn
    resolver_subsets: Mapping[str, tuple[str, ...]]  # Consul resolver subset names by fqdn


@dataclass
class OverlayResult:
    routes: dict[tuple[str, int], tuple[Route, ...]] = field(default_factory=dict)  # Consul host routes replaced
    clusters: dict[str, Cluster] = field(default_factory=dict)  # added or replacing Consul's
    vhosts: dict[int, list[VirtualHost]] = field(default_factory=dict)  # hosts outside Consul
    services: dict[str, Service] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)


def apply_overlay(data: OverlayInput) -> OverlayResult:
    """Compile the overlay together with Consul's hosts and say what it changes."""
    result = OverlayResult()
    ruled = {r.host for r in data.overlay if isinstance(r, DestinationRuleSpec)}
    synthetic: list[IstioResource] = []
    for fqdn, service in data.services.items():
        synthetic.append(_service_entry(fqdn, service, data.endpoints.get(fqdn, [])))
        if fqdn not in ruled and data.resolver_subsets.get(fqdn):
            synthetic.append(_subset_rule(fqdn, data.resolver_subsets[fqdn]))
    resources = [*data.overlay, *synthetic]
    # Cross-resource findings (an undefined subset…), errors and warnings alike, are reported.
    result.problems.extend(reference_problems(resources, data.workload, check_hosts=False))
    try:
        snapshot = compile_snapshot(resources, data.workload, check_hosts=False)
    except ConfigInvalid as exc:
        result.problems.extend(p for p in exc.problems if p not in result.problems)
        return result
    covered = _covered_hosts(data.overlay, data.services)
    for config in snapshot.route_configs.values():
        port = int(config.name)
        for vhost in config.virtual_hosts:
            host = vhost.name.rsplit(":", 1)[0]
            if host not in data.services:
                result.vhosts.setdefault(port, []).append(vhost)
            elif host in covered and any(r.source.virtual_service for r in vhost.routes):
                result.routes[(host, port)] = tuple(_to_consul_clusters(r, data, ruled) for r in vhost.routes)
    for name, cluster in snapshot.clusters.items():
        if cluster.service not in data.services or cluster.service in ruled:
            result.clusters[name] = cluster
    result.services = {k: v for k, v in snapshot.services.items() if k not in data.services}
    return result


def _covered_hosts(overlay: Sequence[IstioResource], services: Mapping[str, Service]) -> set[str]:
    hosts = {h for r in overlay if isinstance(r, VirtualServiceSpec) and r.applies_to_sidecars for h, _ in r.hosts}
    covered = {h for h in hosts if h in services}
    wildcards = [h[1:] for h in hosts if h.startswith("*")]
    covered.update(s for s in services if any(s.endswith(w) for w in wildcards))
    return covered


def _meta(kind: str, name: str) -> Meta:
    return Meta(file=OVERLAY_FILE, line=0, kind=kind, namespace="default", name=name)


def _service_entry(fqdn: str, service: Service, endpoints: list[Endpoint]) -> ServiceEntrySpec:
    workloads = tuple(
        WorkloadEndpoint(e.address, tuple((p.name, e.port) for p in service.ports), e.labels, e.locality, e.weight)
        for e in endpoints
    )
    return ServiceEntrySpec(_meta("ServiceEntry", f"consul-{fqdn}"), ((fqdn, 0),), service.ports, "STATIC",
                            "MESH_INTERNAL", workloads)


def _subset_rule(fqdn: str, subsets: tuple[str, ...]) -> DestinationRuleSpec:
    # Names only, so VirtualServices may route to Consul resolver subsets; the clusters are Consul's.
    specs = tuple(SubsetSpec(name, Labels({"consul.subset": name}), None, 0) for name in subsets)
    return DestinationRuleSpec(_meta("DestinationRule", f"consul-{fqdn}"), fqdn, 0, None, specs)


def _to_consul_clusters(route: Route, data: OverlayInput, ruled: set[str]) -> Route:
    """Point destinations at Consul's clusters for Consul hosts without an overlay DestinationRule."""
    def fix(dest: WeightedCluster) -> WeightedCluster:
        if dest.host not in data.services or dest.host in ruled:
            return dest
        name = cluster_name(SERVICE_PORT, dest.subset, dest.host)
        return replace(dest, cluster=name, port=SERVICE_PORT) if name in data.clusters else dest

    destinations = tuple(fix(d) for d in route.destinations)
    mirrors = []
    for mirror in route.mirrors:
        fixed = fix(WeightedCluster(mirror.cluster, mirror.host, mirror.port, mirror.subset))
        mirrors.append(replace(mirror, cluster=fixed.cluster, port=fixed.port))
    return replace(route, destinations=destinations, mirrors=tuple(mirrors))
