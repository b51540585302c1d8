"""Consul state → one :class:`~meshlib.config.model.MeshSnapshot`, with Consul's defaults.

:func:`compile_consul` runs the whole pipeline:

1. config entries parsed and validated (:mod:`.entries`); invalid ones dropped;
2. one discovery chain per service (every name with instances or with a
   router/splitter/resolver) compiled as Consul does (:mod:`.chain`); an entry
   that breaks a chain (unknown subset, redirect loop, protocol) is dropped
   with its problem and every chain compiled again without it;
3. each chain's resolver nodes become clusters (endpoints by Consul's health
   rules, subset filters evaluated here, failover targets as priority levels)
   and its router/splitter/resolver the routes of the service's virtual
   hosts (:mod:`.to_model`);
4. an Istio overlay, if any, replaces Consul's routing for the hosts it
   covers (:mod:`.overlay`).

Hosts and ports: a Consul service ``web`` answers to ``web``,
``web.service.consul`` and ``web.service.<dc>.consul`` on port 80 (so
``http://web/…`` works) and on every port its instances listen on (so
``http://web.service.consul:8080/…`` — Consul DNS users' habit — works too).
All of them route to the same clusters, ``outbound|80|<subset>|web.service
.consul``: like a Kubernetes service port 80 in front of per-instance target
ports, each endpoint keeps its own instance port.

The snapshot version is :meth:`ConsulState.version` (plus a digest of the
overlay when there is one), so replicas reading the same Consul agree.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from meshlib.config.istio_types import IstioResource
from meshlib.config.model import (
    Cluster,
    Endpoint,
    Listener,
    MeshSnapshot,
    Route,
    RouteConfiguration,
    Service,
    ServicePort,
    VirtualHost,
    WorkloadIdentity,
    cluster_name,
)
from meshlib.config.routes import dedupe_domains
from meshlib.discovery.consul.bexpr import BexprError
from meshlib.discovery.consul.catalog import Instance, parse_instances
from meshlib.discovery.consul.chain import ChainError, compile_chain, compile_resolver
from meshlib.discovery.consul.chain_types import CompiledChain, Target
from meshlib.discovery.consul.entries import parse_entries
from meshlib.discovery.consul.entry_types import CONFIG_KINDS, ConfigEntries
from meshlib.discovery.consul.fields import problem
from meshlib.discovery.consul.memo import IdentityCache
from meshlib.discovery.consul.overlay import OverlayInput, apply_overlay
from meshlib.discovery.consul.state import ConsulState
from meshlib.discovery.consul.to_model import (
    SERVICE_PORT,
    chain_routes,
    cluster_policy,
    host_for,
    target_cluster,
)
from meshlib.errors import ConfigProblem

MAX_PORTS_PER_SERVICE = 8


class _ChainMemo:
    """The last compile's parsed entries and chains, per datacenter, while the entry lists are the same objects."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[tuple[object, ...], tuple[ConfigEntries, list[ConfigProblem],
                                                               dict[str, CompiledChain]]]] = {}

    def get(self, datacenter: str, sources: tuple[object, ...]) -> tuple[
            ConfigEntries, list[ConfigProblem], dict[str, CompiledChain]] | None:
        item = self._items.get(datacenter)
        if item is None or len(item[0]) != len(sources):
            return None
        if any(a is not b for a, b in zip(item[0], sources, strict=True)):
            return None
        return item[1]

    def put(self, datacenter: str, sources: tuple[object, ...],
            value: tuple[ConfigEntries, list[ConfigProblem], dict[str, CompiledChain]]) -> None:
        if len(self._items) > 64:
            self._items.clear()
        self._items[datacenter] = (sources, value)


_LAST_CHAINS = _ChainMemo()
_INSTANCES: IdentityCache[tuple[list[Instance], list[ConfigProblem]]] = IdentityCache()


def _entry_names(entries: ConfigEntries) -> set[str]:
    return set(entries.routers) | set(entries.splitters) | set(entries.resolvers)
_PORT_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC"}


def compile_consul(
    state: ConsulState,
    workload: WorkloadIdentity,
    *,
    overlay: Sequence[IstioResource] = (),
) -> tuple[MeshSnapshot, list[ConfigProblem]]:
    """Compile Consul state (plus an optional Istio overlay) into a snapshot for ``workload``.

    ``workload.name`` is the calling service: its ``service-defaults``
    ``UpstreamConfig`` (Defaults / Overrides) sets connect timeouts, limits and
    passive health checks of the clusters it calls. Invalid config entries are
    dropped and reported in the returned problem list, never raised.

    >>> state = ConsulState("dc1", {"web": [{"Node": {"Node": "n1", "Address": "10.0.0.1"},
    ...     "Service": {"ID": "web-1", "Service": "web", "Port": 8080}, "Checks": []}]}, {})
    >>> snapshot, problems = compile_consul(state, WorkloadIdentity())
    >>> sorted(snapshot.clusters), problems
    (['outbound|80||web.service.consul'], [])
    """
    return _Build(state, workload, overlay).run()


@dataclass
class _Build:
    state: ConsulState
    workload: WorkloadIdentity
    overlay: Sequence[IstioResource]
    problems: list[ConfigProblem] = field(default_factory=list)
    instances: dict[tuple[str, str], list[Instance]] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    reported_filters: set[str] = field(default_factory=set)
    hosts: dict[str, str] = field(default_factory=dict)  # service name → fqdn
    names: dict[str, str] = field(default_factory=dict)  # fqdn → service name

    def run(self) -> tuple[MeshSnapshot, list[ConfigProblem]]:
        chains, entries = self._chains_cached()
        services: dict[str, Service] = {}
        routes: dict[tuple[str, int], tuple[Route, ...]] = {}
        subsets: dict[str, tuple[str, ...]] = {}
        for name, chain in chains.items():
            fqdn = host_for(name, "", "")
            self.hosts[name] = fqdn
            self.names[fqdn] = name
            ports = self._ports(name)
            protocol = _PORT_PROTOCOLS.get(chain.protocol, "TCP")
            services[fqdn] = Service(
                fqdn, "default",
                tuple(ServicePort(p, protocol, "http" if p == SERVICE_PORT else f"port-{p}") for p in ports),
                location="MESH_INTERNAL",
            )
            chain_route_list = chain_routes(chain, self.state.datacenter)
            for port in ports:
                routes[(fqdn, port)] = chain_route_list
            self._clusters(chain, entries)
            resolver = entries.resolvers.get(name)
            subsets[fqdn] = tuple(resolver.subsets) if resolver is not None else ()

        extra_vhosts: dict[int, list[VirtualHost]] = {}
        extra_services: dict[str, Service] = {}
        if self.overlay:
            self._subset_clusters(chains, entries)
            result = apply_overlay(OverlayInput(
                overlay=self.overlay, workload=self.workload, services=services, clusters=self.clusters,
                endpoints={fqdn: self._local_endpoints(name) for name, fqdn in self.hosts.items()},
                resolver_subsets=subsets,
            ))
            self.problems.extend(result.problems)
            routes.update(result.routes)
            self.clusters.update(result.clusters)
            extra_vhosts = result.vhosts
            extra_services = result.services
        return self._snapshot(services, routes, extra_services, extra_vhosts), self.problems

    # ------------------------------------------------------------------ chains

    def _chains_cached(self) -> tuple[dict[str, CompiledChain], ConfigEntries]:
        """Chains depend on the config entries only: reuse them while those lists are the same objects."""
        sources = tuple(self.state.config_entries.get(kind) for kind in CONFIG_KINDS)
        names_seen = set(self.state.services)
        hit = _LAST_CHAINS.get(self.state.datacenter, sources)
        if hit is not None:
            entries, problems, known = hit
            chains = {n: known[n] for n in sorted(names_seen | set(known)) if n in known}
            try:
                for name in sorted(names_seen - set(known)):
                    chains[name] = compile_chain(name, entries, datacenter=self.state.datacenter)
            except ChainError:
                pass  # a new service breaks an entry: compile everything afresh below
            else:
                self.problems.extend(problems)
                _LAST_CHAINS.put(self.state.datacenter, sources, (entries, problems, chains))
                return {n: chains[n] for n in sorted(chains) if n in names_seen or n in _entry_names(entries)}, entries
        before = len(self.problems)
        parsed, entry_problems = parse_entries(self.state.config_entries)
        self.problems.extend(entry_problems)
        names = sorted(names_seen | _entry_names(parsed))
        chains, entries = self._chains(names, parsed)
        _LAST_CHAINS.put(self.state.datacenter, sources, (entries, list(self.problems[before:]), chains))
        return chains, entries

    def _chains(self, names: list[str], entries: ConfigEntries) -> tuple[dict[str, CompiledChain], ConfigEntries]:
        """Every chain; an entry that breaks one is dropped, and the chains that consulted it compiled again."""
        chains: dict[str, CompiledChain] = {}
        queue = deque(names)
        while queue:
            name = queue.popleft()
            try:
                chains[name] = compile_chain(name, entries, datacenter=self.state.datacenter)
            except ChainError as error:
                self.problems.append(problem(error.kind, error.name, error.field, error.message))
                key = (error.kind, error.name)
                if key not in entries.raw:
                    continue  # nothing to drop: this service has no chain
                entries = entries.without(*key)  # drop the entry, keep everything else
                stale = [n for n, chain in chains.items() if key in chain.entries_used]
                for other in stale:
                    del chains[other]
                queue.extendleft([name, *stale][::-1])
        return dict(sorted(chains.items())), entries

    def _subset_clusters(self, chains: dict[str, CompiledChain], entries: ConfigEntries) -> None:
        """Clusters for every resolver subset, so overlay routes may name subsets Consul's chains do not use."""
        for name in chains:
            resolver = entries.resolvers.get(name)
            for subset in resolver.subsets if resolver is not None else ():
                if cluster_name(SERVICE_PORT, subset, host_for(name, "", "")) in self.clusters:
                    continue
                try:
                    chain = compile_resolver(name, subset, entries, datacenter=self.state.datacenter)
                except ChainError:
                    continue  # reported when the service's own chain was compiled
                self._clusters(chain, entries)

    # ------------------------------------------------------------------ instances and clusters

    def _instances(self, service: str, datacenter: str) -> list[Instance]:
        key = (datacenter, service)
        found = self.instances.get(key)
        if found is None:
            local = datacenter == self.state.datacenter
            remote = self.state.remote_services.get(datacenter)
            if local:
                raw = self.state.services.get(service, ())
            else:
                raw = remote.get(service, ()) if isinstance(remote, Mapping) else ()
            if not isinstance(raw, list | tuple):
                self.problems.append(problem("health", service, "", "the health entries must be a JSON list"))
                raw = ()
            parsed = _INSTANCES.get((key, local), raw)
            if parsed is None:
                parsed = _INSTANCES.put((key, local), raw, parse_instances(service, raw, remote=not local))
            found, problems = parsed
            self.problems.extend(problems)
            self.instances[key] = found
        return found

    def _ports(self, service: str) -> list[int]:
        counts = Counter(i.port for i in self._instances(service, self.state.datacenter))
        ports = [p for p, _ in sorted(counts.items(), key=lambda pc: (-pc[1], pc[0]))][:MAX_PORTS_PER_SERVICE]
        return [SERVICE_PORT, *sorted(p for p in ports if p != SERVICE_PORT)]

    def _local_endpoints(self, service: str) -> list[Endpoint]:
        return [e for i in self._instances(service, self.state.datacenter) if (e := i.endpoint()) is not None]

    def _target_endpoints(self, target: Target, priority: int) -> list[Endpoint]:
        subset = target.subset
        out: list[Endpoint] = []
        for instance in self._instances(target.service, target.datacenter):
            if subset is not None and subset.filter is not None:
                try:
                    if not subset.filter.evaluate(instance.entry):
                        continue
                except BexprError as exc:
                    if target.id not in self.reported_filters:
                        self.reported_filters.add(target.id)
                        self.problems.append(problem("service-resolver", target.service,
                                                     f'Subsets["{target.service_subset}"].Filter', str(exc)))
                    continue
            endpoint = instance.endpoint(subset.only_passing if subset is not None else False, priority)
            if endpoint is not None:
                out.append(endpoint)
        return out

    def _clusters(self, chain: CompiledChain, entries: ConfigEntries) -> None:
        caller = entries.service_defaults.get(self.workload.name) if self.workload.name else None
        for node in chain.nodes.values():
            if node.resolver is None:
                continue
            target = chain.targets[node.resolver.target]
            weighted = target_cluster(target, self.state.datacenter)
            if weighted.cluster in self.clusters:
                continue
            endpoints = self._target_endpoints(target, 0)
            for level, failover_id in enumerate(node.resolver.failover_targets, start=1):
                endpoints += self._target_endpoints(chain.targets[failover_id], level)
            resolver = entries.resolvers.get(target.service)
            upstream = caller.upstream_config(target.service) if caller is not None else None
            self.clusters[weighted.cluster] = Cluster(
                name=weighted.cluster,
                service=weighted.host,
                port=SERVICE_PORT,
                subset=target.service_subset,
                endpoints=tuple(endpoints),
                policy=cluster_policy(node, upstream, resolver is not None
                                      and resolver.prioritize_by_locality == "failover"),
            )

    # ------------------------------------------------------------------ snapshot

    def _snapshot(
        self,
        services: dict[str, Service],
        routes: dict[tuple[str, int], tuple[Route, ...]],
        extra_services: dict[str, Service],
        extra_vhosts: dict[int, list[VirtualHost]],
    ) -> MeshSnapshot:
        by_port: dict[int, list[VirtualHost]] = {}
        for fqdn, service in services.items():
            name = self.names[fqdn]
            for service_port in service.ports:
                number = service_port.number
                vhost = VirtualHost(f"{fqdn}:{number}", _domains(name, self.state.datacenter, number),
                                    routes[(fqdn, number)])
                by_port.setdefault(number, []).append(vhost)
        for number, vhosts in extra_vhosts.items():
            by_port.setdefault(number, []).extend(vhosts)
        route_configs: dict[str, RouteConfiguration] = {}
        listeners: dict[str, Listener] = {}
        for number in sorted(by_port):
            route_configs[str(number)] = RouteConfiguration(str(number), dedupe_domains(by_port[number]))
            listeners[f"0.0.0.0_{number}"] = Listener(f"0.0.0.0_{number}", number, str(number))
        return MeshSnapshot(
            version=self._version(),
            services=MappingProxyType({**extra_services, **services}),
            clusters=MappingProxyType(dict(sorted(self.clusters.items()))),
            route_configs=MappingProxyType(route_configs),
            listeners=MappingProxyType(listeners),
            workload=self.workload,
        )

    def _version(self) -> str:
        base = self.state.version()
        if not self.overlay:
            return base
        digest = hashlib.sha256(self.state.canonical_json() + repr(tuple(self.overlay)).encode()).hexdigest()
        return f"consul-{digest[:16]}"


def _domains(name: str, datacenter: str, port: int) -> tuple[str, ...]:
    names = [name.lower(), f"{name}.service.consul".lower(), f"{name}.service.{datacenter}.consul".lower()]
    return tuple(d for n in names for d in (n, f"{n}:{port}"))
