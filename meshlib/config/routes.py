"""Route configurations, as istiod builds them for a sidecar's outbound listeners.

One RouteConfiguration (and one Listener ``0.0.0.0_<port>``) per HTTP service
port number. In it, one VirtualHost per service on that port, named
``<fqdn>:<port>``, whose routes come from the VirtualService that covers the
service, or else a single default route to ``outbound|<port>||<fqdn>``.

Which VirtualService covers a service: VirtualServices whose ``gateways`` do
not include ``mesh`` are ignored (they configure gateways). A VirtualService
host equal to the service name wins over wildcard hosts; among wildcards the
most specific wins; ties go to the first in file order. Istio does the same
(oldest wins) and also tolerates the conflict rather than rejecting it.

Workload-dependent matches are decided here, once per snapshot, against the
:class:`WorkloadIdentity`: a match block whose ``gateways`` exclude ``mesh``,
whose ``port`` is not the listener port, or whose ``sourceLabels`` /
``sourceNamespace`` do not fit the workload is dropped; a rule whose blocks
are all dropped is dropped.

Delegation (one level): a rule with ``delegate`` is replaced by the delegate
VirtualService's rules. Their match blocks are combined with the root rule's
(every root block AND every delegate block, delegate fields winning where both
set the same field, header conditions concatenated) and root-rule settings
(timeout, retries, fault, rewrite, mirrors, CORS, headers) apply where the
delegate rule leaves them unset. Istio additionally rejects combinations
whose URI conditions conflict; meshlib keeps them (they simply never match).

As in istiod, a VirtualService host that matches no service gets a virtual
host on port 80 (the only port such a host can be reached on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from meshlib.config.hosts import host_matches, is_cluster_local
from meshlib.config.istio_types import DestinationRef, HttpRuleSpec, VirtualServiceSpec
from meshlib.config.model import (
    ISTIO_DEFAULT_RETRY,
    Cluster,
    HeaderPolicy,
    LbKind,
    Listener,
    Mirror,
    RetryPolicy,
    Route,
    RouteConfiguration,
    RouteMatch,
    RouteSource,
    VirtualHost,
    WeightedCluster,
    WorkloadIdentity,
    cluster_name,
)
from meshlib.config.registry import Registry

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
_HASH_KINDS = (LbKind.RING_HASH, LbKind.MAGLEV)
NO_SERVICE_PORT = 80


def domains(fqdn: str, port: int, workload_namespace: str) -> tuple[str, ...]:
    """The Host/authority values that select a service's virtual host (lower-case)."""
    fqdn = fqdn.lower()
    if is_cluster_local(fqdn):
        name, namespace = fqdn.split(".")[:2]
        names = [name] if namespace == workload_namespace else []
        names += [f"{name}.{namespace}", f"{name}.{namespace}.svc", fqdn]
    else:
        names = [fqdn]
    return tuple(d for n in names for d in (n, f"{n}:{port}"))


@dataclass(slots=True)
class RouteBuilder:
    """Builds the route configurations of one snapshot."""

    services: Sequence[VirtualServiceSpec]
    registry: Registry
    clusters: Mapping[str, Cluster]
    workload: WorkloadIdentity
    _by_ref: dict[str, VirtualServiceSpec] = field(default_factory=dict)
    _cache: dict[tuple[int, int], tuple[Route, ...]] = field(default_factory=dict)

    def build(self) -> tuple[dict[str, RouteConfiguration], dict[str, Listener]]:
        """All route configurations and listeners, keyed by name."""
        self._by_ref = {vs.meta.ref: vs for vs in self.services}
        applicable = [vs for vs in self.services if vs.hosts and vs.applies_to_sidecars]
        resolved = [
            (vs, [self.registry.resolve(h, vs.meta.namespace) for h, _ in vs.hosts]) for vs in applicable
        ]
        exact: dict[str, VirtualServiceSpec] = {}
        wildcards: list[tuple[str, VirtualServiceSpec]] = []
        for vs, hosts in resolved:
            for host in hosts:
                if host.startswith("*"):
                    wildcards.append((host, vs))
                else:
                    exact.setdefault(host, vs)
        wildcards.sort(key=lambda item: (item[0] == "*", -len(item[0])))

        namespace = self.workload.namespace
        by_port: dict[int, list[VirtualHost]] = {}
        for fqdn, service in self.registry.services.items():
            covering = exact.get(fqdn) or next((v for p, v in wildcards if host_matches(p, fqdn)), None)
            for service_port in service.ports:
                number = service_port.number
                if service_port.protocol.upper() not in HTTP_PROTOCOLS:
                    continue
                routes = self._routes(covering, number) if covering is not None else ()
                if not routes:  # no VirtualService, or none of its rules apply on this port
                    routes = (self._default_route(fqdn, number),)
                vhost = VirtualHost(f"{fqdn}:{number}", domains(fqdn, number, namespace), routes)
                by_port.setdefault(number, []).append(vhost)

        for vs, hosts in resolved:
            for host in hosts:
                if any(host_matches(host, s) for s in self.registry.services):
                    continue
                routes = self._routes(vs, NO_SERVICE_PORT)
                if routes:
                    name = f"{host}:{NO_SERVICE_PORT}"
                    vhost = VirtualHost(name, domains(host, NO_SERVICE_PORT, namespace), routes)
                    by_port.setdefault(NO_SERVICE_PORT, []).append(vhost)

        route_configs: dict[str, RouteConfiguration] = {}
        listeners: dict[str, Listener] = {}
        for number in sorted(by_port):
            name = str(number)
            route_configs[name] = RouteConfiguration(name, dedupe_domains(by_port[number]))
            listeners[f"0.0.0.0_{number}"] = Listener(f"0.0.0.0_{number}", number, name)
        return route_configs, listeners

    # ----------------------------------------------------------------- routes

    def _routes(self, vs: VirtualServiceSpec, port: int) -> tuple[Route, ...]:
        key = (id(vs), port)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = tuple(self._compile(vs, port))
        return cached

    def _compile(self, vs: VirtualServiceSpec, port: int) -> list[Route]:
        routes: list[Route] = []
        for rule in vs.http:
            matches = self._applicable(rule.matches, port)
            if matches is None:
                continue
            if rule.delegate is None:
                routes.append(self._route(vs, rule, matches, port))
                continue
            target = self._by_ref.get("/".join(rule.delegate))
            if target is None or target.hosts:
                continue  # reported by references.check_delegates
            for child in target.http:
                if child.delegate is not None:
                    continue
                child_matches = self._applicable(child.matches, port)
                if child_matches is None:
                    continue
                merged = _combine_matches(matches, child_matches)
                routes.append(self._route(target, _inherit(child, rule), merged, port))
        return routes

    def _applicable(self, matches: tuple[RouteMatch, ...], port: int) -> tuple[RouteMatch, ...] | None:
        """Drop blocks this workload/port can never satisfy; None when the rule cannot match."""
        if not matches:
            return ()
        kept = tuple(m for m in matches if self._can_match(m, port))
        return kept or None

    def _can_match(self, match: RouteMatch, port: int) -> bool:
        if match.gateways and "mesh" not in match.gateways:
            return False
        if match.port is not None and match.port != port:
            return False
        if match.source_namespace and match.source_namespace != self.workload.namespace:
            return False
        return self.workload.labels.selects(match.source_labels)

    def _target(self, dest: DestinationRef, namespace: str, port: int) -> tuple[str, str, int]:
        """(cluster name, service fqdn, port) for a destination, as istiod's GetDestinationCluster."""
        fqdn = self.registry.resolve(dest.host, namespace)
        service = self.registry.service_for(fqdn)
        host = service.fqdn if service is not None else fqdn
        number = dest.port
        if number is None:
            number = service.ports[0].number if service is not None and len(service.ports) == 1 else port
        return cluster_name(number, dest.subset, host), host, number

    def _route(
        self, vs: VirtualServiceSpec, rule: HttpRuleSpec, matches: tuple[RouteMatch, ...], port: int
    ) -> Route:
        namespace = vs.meta.namespace
        weighted = []
        for item in rule.route:
            name, host, number = self._target(item.destination, namespace, port)
            subset = item.destination.subset
            weighted.append(WeightedCluster(name, host, number, subset, item.weight, item.headers))
        mirrors = []
        for mirror in rule.mirrors:
            name, host, number = self._target(mirror.destination, namespace, port)
            mirrors.append(Mirror(name, host, number, mirror.destination.subset, mirror.percent))
        retry = rule.retry if rule.has_retries else ISTIO_DEFAULT_RETRY
        if rule.ignore_previous_hosts is None:
            retry = self._hash_aware(retry, [w.cluster for w in weighted])
        return Route(
            matches=matches,
            source=RouteSource(vs.meta.ref, rule.name, rule.index, vs.meta.file, rule.line),
            destinations=tuple(weighted),
            redirect=rule.redirect,
            direct_response=rule.direct_response,
            rewrite=rule.rewrite,
            timeout_s=rule.timeout_s,
            retry=retry,
            fault=rule.fault,
            mirrors=tuple(mirrors),
            headers=rule.headers or HeaderPolicy(),
            cors=rule.cors,
            rate_limit=vs.rate_limit,
        )

    def _default_route(self, fqdn: str, port: int) -> Route:
        name = cluster_name(port, "", fqdn)
        return Route(
            matches=(),
            source=RouteSource(None, "default", 0),
            destinations=(WeightedCluster(name, fqdn, port),),
            retry=self._hash_aware(ISTIO_DEFAULT_RETRY, [name]),
        )

    def _hash_aware(self, retry: RetryPolicy | None, cluster_names: list[str]) -> RetryPolicy | None:
        # istiod drops the previous-hosts predicate when consistent hashing is in use:
        # a retry must stay on the hashed host, not avoid it.
        if retry is None or not retry.previous_hosts:
            return retry
        for name in cluster_names:
            cluster = self.clusters.get(name)
            if cluster is not None and cluster.policy.lb.kind in _HASH_KINDS:
                return replace(retry, previous_hosts=False)
        return retry


def dedupe_domains(vhosts: list[VirtualHost]) -> tuple[VirtualHost, ...]:
    """Envoy rejects a domain used twice in one route configuration; the first vhost keeps it."""
    seen: set[str] = set()
    out: list[VirtualHost] = []
    for vhost in vhosts:
        kept = tuple(d for d in vhost.domains if d not in seen)
        seen.update(kept)
        if kept:
            out.append(vhost if len(kept) == len(vhost.domains) else replace(vhost, domains=kept))
    return tuple(out)


def _combine_matches(root: tuple[RouteMatch, ...], child: tuple[RouteMatch, ...]) -> tuple[RouteMatch, ...]:
    if not root:
        return child
    if not child:
        return root
    return tuple(_combine(r, c) for r in root for c in child)


def _combine(root: RouteMatch, child: RouteMatch) -> RouteMatch:
    return RouteMatch(
        name=child.name or root.name,
        uri=child.uri or root.uri,
        scheme=child.scheme or root.scheme,
        method=child.method or root.method,
        authority=child.authority or root.authority,
        headers=root.headers + child.headers,
        without_headers=root.without_headers + child.without_headers,
        query_params=root.query_params + child.query_params,
        port=child.port if child.port is not None else root.port,
        source_labels=child.source_labels or root.source_labels,
        source_namespace=child.source_namespace or root.source_namespace,
        gateways=child.gateways or root.gateways,
    )


def _inherit(child: HttpRuleSpec, root: HttpRuleSpec) -> HttpRuleSpec:
    """Root-rule settings fill what the delegate rule leaves unset."""
    return replace(
        child,
        rewrite=child.rewrite or root.rewrite,
        timeout_s=child.timeout_s if child.has_timeout else root.timeout_s,
        has_timeout=child.has_timeout or root.has_timeout,
        retry=child.retry if child.has_retries else root.retry,
        has_retries=child.has_retries or root.has_retries,
        ignore_previous_hosts=(
            child.ignore_previous_hosts if child.has_retries else root.ignore_previous_hosts
        ),
        fault=child.fault or root.fault,
        mirrors=child.mirrors or root.mirrors,
        cors=child.cors or root.cors,
        headers=child.headers or root.headers,
    )
