"""The discovery-chain compiler: router → splitter → resolver, as Consul's ``discoverychain/compile.go``.

:func:`compile_chain` follows Consul's algorithm step by step:

- only the ``service-router`` named after the chain's service is consulted;
  each route's destination leads to a splitter (when it names no
  ``ServiceSubset``) or a resolver, and a catch-all route (``PathPrefix "/"``
  → the router's own service) is appended;
- without a router the chain starts at the service's splitter, else at its
  resolver; a split to another service with a splitter of its own is
  flattened into the outer splitter (``weight = outer × inner / 100``, header
  modifiers merged as ``ServiceSplit.MergeParent``); the first hash-based
  load balancer among a splitter's resolvers is attached to the splitter;
- a resolver applies its ``Redirect`` first (with cycle detection), then its
  ``DefaultSubset``; an unknown subset is an error; ``ConnectTimeout`` below
  1 ns becomes 5 s; ``Failover`` (per subset, else ``"*"``) lists targets from
  ``Datacenters``, ``Targets`` or ``Service``/``ServiceSubset``, never the
  target itself, each resolved through its own resolver's redirect/default
  subset;
- the protocol comes from ``service-defaults``, else ``proxy-defaults``
  ``protocol``, else ``tcp``; services of one chain must agree, and a router or
  splitter on a non-L7 protocol is an error ("does not permit advanced routing
  or splitting behavior").

Errors are :class:`ChainError`, which names the config entry to blame, so
the caller can drop that entry and keep the rest working.

>>> from meshlib.discovery.consul.entries import parse_entries
>>> entries, _ = parse_entries({})
>>> compile_chain("web", entries, datacenter="dc1").start_node
'resolver:web.default.dc1'
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from meshlib.discovery.consul.chain_graph import (
    ChainError,
    detect_cycles,
    flatten_splitters,
    merge_headers,
    remove_unused,
)
from meshlib.discovery.consul.chain_types import CompiledChain, Node, Resolver, Route, Split, Target
from meshlib.discovery.consul.entries import parse_entries
from meshlib.discovery.consul.entry_types import (
    DEFAULT_NAMESPACE,
    L7_PROTOCOLS,
    ConfigEntries,
    HttpMatch,
    RouteDestination,
    ServiceResolver,
    ServiceRoute,
    TargetRef,
)
from meshlib.discovery.consul.fields import Fields, as_duration, as_object, as_str

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_TRUST_DOMAIN = "11111111-2222-3333-4444-555555555555.consul"
MAX_REDIRECTS = 64
MAX_SPLITTER_DEPTH = 64

__all__ = ["ChainError", "compile_chain", "compile_resolver", "discovery_chain_response", "merge_headers"]


@dataclass(frozen=True, slots=True)
class _TargetKey:
    service: str
    service_subset: str = ""
    namespace: str = DEFAULT_NAMESPACE
    datacenter: str = ""

    @property
    def id(self) -> str:
        head = f"{self.service_subset}." if self.service_subset else ""
        return f"{head}{self.service}.{self.namespace}.{self.datacenter}"


def compile_chain(
    service: str,
    entries: ConfigEntries,
    *,
    datacenter: str,
    namespace: str = DEFAULT_NAMESPACE,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    override_protocol: str = "",
    override_connect_timeout_s: float = 0.0,
    override_mesh_gateway: str = "",
) -> CompiledChain:
    """Compile ``service``'s discovery chain as Consul would in ``datacenter``.

    Raises :class:`ChainError` for graph errors (unknown subset, redirect
    loop, inconsistent or non-L7 protocol, circular splitters).
    """
    return _Compiler(service, entries, datacenter, namespace, trust_domain, override_protocol.lower(),
                     override_connect_timeout_s, override_mesh_gateway).compile()


@dataclass
class _Compiler:
    service: str
    entries: ConfigEntries
    datacenter: str
    namespace: str
    trust_domain: str
    override_protocol: str
    override_connect_timeout_s: float
    override_mesh_gateway: str
    protocol: str = ""
    uses_advanced_routing: bool = False
    disable_advanced_routing: bool = False
    customized: set[str] = field(default_factory=set)
    nodes: dict[str, Node] = field(default_factory=dict)
    splitter_nodes: dict[str, Node] = field(default_factory=dict)
    resolver_nodes: dict[str, Node] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    retained: set[str] = field(default_factory=set)
    blame: tuple[str, str, str] = ("", "", "")  # the entry being expanded, for errors
    used: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) of every entry consulted
    splitter_depth: int = 0

    def compile(self) -> CompiledChain:
        if self.override_protocol:
            self.disable_advanced_routing = self.override_protocol not in L7_PROTOCOLS
        start = self._assemble()
        self._detect_cycles(start)
        self._flatten_splitters()
        self._remove_unused(start)
        if not self.protocol:
            self.protocol = "tcp"
        if self.uses_advanced_routing and self.protocol not in L7_PROTOCOLS:
            kind = "service-router" if self.service in self.entries.routers else "service-splitter"
            raise ChainError(
                f'discovery chain "{self.service}" uses a protocol "{self.protocol}" that does not permit '
                "advanced routing or splitting behavior", kind, self.service, "Protocol",
            )
        if self.override_protocol and self.override_protocol != self.protocol:
            self.protocol = self.override_protocol
            self.customized.add("protocol")
        digest = ""
        if self.customized:
            text = f"{self.override_mesh_gateway}|{self.override_protocol}|{self.override_connect_timeout_s}"
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        return CompiledChain(
            service_name=self.service,
            namespace=self.namespace,
            datacenter=self.datacenter,
            protocol=self.protocol,
            start_node=start,
            nodes=MappingProxyType(dict(self.nodes)),
            targets=MappingProxyType({k: v for k, v in self.targets.items() if k in self.retained}),
            customization_hash=digest,
            entries_used=frozenset(self.used),
        )

    # ------------------------------------------------------------------ protocol

    def _record_protocol(self, service: str) -> None:
        self.used.add(("service-defaults", service))
        self.used.add(("proxy-defaults", "global"))
        protocol = self.entries.protocol(service)
        if not self.protocol:
            self.protocol = protocol
        elif self.protocol != protocol:
            kind, name, where = self.blame
            raise ChainError(
                f'discovery chain "{self.service}" uses inconsistent protocols; service "{service}" has '
                f'"{protocol}" which is not "{self.protocol}"', kind or "service-defaults", name or service, where,
            )

    # ------------------------------------------------------------------ assembly

    def _assemble(self) -> str:
        router = self.entries.routers.get(self.service)
        self.used.add(("service-router", self.service))
        if router is not None and self.disable_advanced_routing:
            router = None
            self.customized.add("protocol")
        if router is None:
            return self._splitter_or_resolver(_TargetKey(self.service, datacenter=self.datacenter)).key
        self.uses_advanced_routing = True
        self.blame = ("service-router", router.name, "")
        self._record_protocol(router.name)
        routes: list[Route] = []
        for index, route in enumerate(router.routes):
            self.blame = ("service-router", router.name, f"Routes[{index}].Destination")
            dest = route.destination or RouteDestination()
            key = _TargetKey(dest.service or self.service, dest.service_subset, dest.namespace or self.namespace,
                             self.datacenter)
            node = self._resolver(key) if dest.service_subset else self._splitter_or_resolver(key)
            routes.append(Route(route, node.key, index))
        self.blame = ("service-router", router.name, "")
        catch_all = ServiceRoute(HttpMatch(path_prefix="/"), RouteDestination(service=router.name))
        default_node = self._splitter_or_resolver(_TargetKey(router.name, datacenter=self.datacenter))
        routes.append(Route(catch_all, default_node.key, -1))
        node = Node("router", router.name, routes=tuple(routes), entry=f"service-router/{router.name}")
        self.nodes[node.key] = node
        return node.key

    def _splitter_or_resolver(self, key: _TargetKey) -> Node:
        node = self._splitter(key.service)
        return node if node is not None else self._resolver(key)

    def _splitter(self, service: str) -> Node | None:
        known = self.splitter_nodes.get(service)
        if known is not None:
            return known
        splitter = self.entries.splitters.get(service)
        self.used.add(("service-splitter", service))
        if splitter is not None and self.disable_advanced_routing:
            splitter = None
            self.customized.add("protocol")
        if splitter is None:
            return None
        if self.splitter_depth >= MAX_SPLITTER_DEPTH:
            raise ChainError(f"splitters nested deeper than {MAX_SPLITTER_DEPTH} levels", "service-splitter",
                             service, "Splits")
        placeholder = Node("splitter", service, entry=f"service-splitter/{service}")
        self.splitter_nodes[service] = placeholder  # recorded before recursing: loops end here
        self.nodes[placeholder.key] = placeholder
        splits: list[Split] = []
        balancer = None
        for i, split in enumerate(splitter.splits):
            self.blame = ("service-splitter", service, f"Splits[{i}]")
            target_service = split.service or service
            next_node: Node | None = None
            if target_service != service and not split.service_subset:
                self.splitter_depth += 1
                try:
                    next_node = self._splitter(target_service)
                finally:
                    self.splitter_depth -= 1
            if next_node is None:
                key = _TargetKey(target_service, split.service_subset, split.namespace or self.namespace,
                                 self.datacenter)
                next_node = self._resolver(key)
                if balancer is None and next_node.load_balancer is not None and next_node.load_balancer.hash_based:
                    balancer = next_node.load_balancer
            splits.append(Split(split.weight, next_node.key, split.request_headers, split.response_headers))
        self.uses_advanced_routing = True
        node = replace(placeholder, splits=tuple(splits), load_balancer=balancer)
        self.splitter_nodes[service] = node
        self.nodes[node.key] = node
        return node

    # ------------------------------------------------------------------ resolvers

    def _new_target(self, key: _TargetKey) -> _TargetKey:
        key = replace(key, datacenter=key.datacenter or self.datacenter, namespace=key.namespace or self.namespace)
        if key.id not in self.targets:
            self.targets[key.id] = Target(key.id, key.service, key.service_subset, key.namespace, key.datacenter,
                                          sni=f"{key.id}.internal.{self.trust_domain}")
        return key

    def _rewrite(self, key: _TargetKey, ref: TargetRef) -> _TargetKey:
        merged = key
        if ref.service and ref.service != key.service:
            merged = replace(merged, service=ref.service, service_subset="")
        if ref.service_subset:
            merged = replace(merged, service_subset=ref.service_subset)
        if ref.namespace:
            merged = replace(merged, namespace=ref.namespace)
        if ref.datacenter:
            merged = replace(merged, datacenter=ref.datacenter)
        return self._new_target(merged)

    def _resolver_entry(self, service: str) -> ServiceResolver:
        self.used.add(("service-resolver", service))
        return self.entries.resolvers.get(service) or ServiceResolver(service)

    def _resolver(self, key: _TargetKey, for_failover: bool = False) -> Node:
        key = self._new_target(key)
        history: list[str] = []
        while True:
            known = self.resolver_nodes.get(key.id)
            if known is not None:
                return known
            self._record_protocol(key.service)
            resolver = self._resolver_entry(key.service)
            if key.id in history:
                history.append(key.id)
                raise ChainError(f"detected circular resolver redirect: [{' -> '.join(history)}]",
                                 "service-resolver", resolver.name, "Redirect")
            history.append(key.id)
            if len(history) > MAX_REDIRECTS:
                raise ChainError("too many resolver redirects", "service-resolver", resolver.name, "Redirect")
            if resolver.redirect is not None:
                redirected = self._rewrite(key, resolver.redirect)
                if redirected.id != key.id:
                    key = redirected
                    continue
            if not key.service_subset and resolver.default_subset:
                key = self._rewrite(key, TargetRef(service_subset=resolver.default_subset))
                continue
            break
        if key.service_subset and key.service_subset not in resolver.subsets:
            kind, name, where = self.blame
            raise ChainError(f'service "{key.service}" does not have a subset named "{key.service_subset}"',
                             kind or "service-resolver", name or key.service, where)
        connect = resolver.connect_timeout_s if resolver.connect_timeout_s and resolver.connect_timeout_s >= 1e-9 \
            else DEFAULT_CONNECT_TIMEOUT_S
        if self.override_connect_timeout_s > 0 and connect != self.override_connect_timeout_s:
            connect = self.override_connect_timeout_s
            self.customized.add("connect_timeout")
        gateway = ""
        if self.override_mesh_gateway:
            gateway = self.override_mesh_gateway
            self.customized.add("mesh_gateway")
        self.targets[key.id] = replace(self.targets[key.id], subset=resolver.subsets.get(key.service_subset),
                                       connect_timeout_s=connect, mesh_gateway_mode=gateway)
        self.retained.add(key.id)
        node = Node(
            "resolver", key.id,
            resolver=Resolver(key.id, resolver.is_default, connect, resolver.request_timeout_s),
            load_balancer=resolver.load_balancer,
            entry="" if resolver.name not in self.entries.resolvers else f"service-resolver/{resolver.name}",
        )
        if for_failover:
            return node
        self.resolver_nodes[key.id] = node
        self.nodes[node.key] = node
        failover = resolver.failover.get(key.service_subset) or resolver.failover.get("*")
        if failover is None:
            return node
        saved = self.blame
        self.blame = ("service-resolver", resolver.name, "Failover")
        candidates: list[_TargetKey] = []
        base = TargetRef(failover.service, failover.service_subset, failover.namespace)
        if failover.datacenters:
            candidates = [self._rewrite(key, replace(base, datacenter=dc)) for dc in failover.datacenters]
        elif failover.targets:
            candidates = [self._rewrite(key, t) for t in failover.targets]
        else:
            candidates = [self._rewrite(key, base)]
        chosen = [self._resolver(c, for_failover=True).name for c in candidates if c.id != key.id]
        self.blame = saved
        if chosen and node.resolver is not None:
            resolved = replace(node.resolver, failover_targets=tuple(chosen), failover_mode=failover.policy_mode)
            node = replace(node, resolver=resolved)
            self.resolver_nodes[key.id] = node
            self.nodes[node.key] = node
        return node

    # ------------------------------------------------------------------ graph passes

    def _detect_cycles(self, start: str) -> None:
        detect_cycles(self.nodes, start)

    def _flatten_splitters(self) -> None:
        flatten_splitters(self.nodes)

    def _remove_unused(self, start: str) -> None:
        remove_unused(self.nodes, start)


def discovery_chain_response(
    service: str,
    config_entries: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    datacenter: str,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``GET|POST /v1/discovery-chain/:service`` from raw config entries (for emulators and tools).

    ``overrides`` is the POST body (``OverrideConnectTimeout``,
    ``OverrideProtocol``, ``OverrideMeshGateway``). Invalid entries are left
    out as :func:`~meshlib.discovery.consul.entries.parse_entries` reports
    them; raises :class:`ChainError` when the chain cannot be compiled and
    :class:`~meshlib.discovery.consul.fields.FieldError` for a malformed body.
    """
    entries, _ = parse_entries(config_entries)
    body = Fields(overrides or {})
    timeout = as_duration(body.get("OverrideConnectTimeout"), "OverrideConnectTimeout") or 0.0
    protocol = as_str(body.get("OverrideProtocol"), "OverrideProtocol")
    gateway_raw = as_object(body.get("OverrideMeshGateway"), "OverrideMeshGateway") or {}
    gateway = as_str(Fields(gateway_raw).get("Mode"), "OverrideMeshGateway.Mode")
    chain = compile_chain(
        service, entries, datacenter=datacenter, trust_domain=trust_domain, override_protocol=protocol,
        override_connect_timeout_s=max(timeout, 0.0), override_mesh_gateway=gateway,
    )
    return chain.to_consul_json()


def compile_resolver(service: str, subset: str, entries: ConfigEntries, *, datacenter: str) -> CompiledChain:
    """A one-resolver chain for ``service``/``subset`` (redirect, default subset and failover applied).

    For routing that names a subset directly (an Istio overlay route), where
    Consul's own chain for the service may not contain that resolver.
    """
    compiler = _Compiler(service, entries, datacenter, DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN, "", 0.0, "")
    node = compiler._resolver(_TargetKey(service, subset, DEFAULT_NAMESPACE, datacenter))
    return CompiledChain(
        service_name=service, namespace=DEFAULT_NAMESPACE, datacenter=datacenter,
        protocol=compiler.protocol or "tcp", start_node=node.key,
        nodes=MappingProxyType(dict(compiler.nodes)),
        targets=MappingProxyType({k: v for k, v in compiler.targets.items() if k in compiler.retained}),
        entries_used=frozenset(compiler.used),
    )
