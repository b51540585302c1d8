"""The compiled discovery chain (``structs.CompiledDiscoveryChain``) and its JSON rendering.

``CompiledChain.to_consul_json()`` gives the ``/v1/discovery-chain/:service``
response body in the shape of Consul's documented samples
(``website/content/api-docs/discovery-chain.mdx``): target IDs
``[subset.]service.namespace.datacenter``, node keys ``router:NAME``,
``splitter:NAME``, ``resolver:TARGET``, durations as Go strings, empty fields
left out as Consul's ``omitempty`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from meshlib.discovery.consul.entry_types import (
    HeaderModifiers,
    HttpMatch,
    LoadBalancerSpec,
    ResolverSubset,
    RouteDestination,
    ServiceRoute,
)
from meshlib.discovery.consul.fields import go_duration_string


def _empty_map() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Target:
    """A ``DiscoveryTarget``: one set of instances (service, subset, datacenter)."""

    id: str
    service: str
    service_subset: str
    namespace: str
    datacenter: str
    sni: str
    subset: ResolverSubset | None = None
    mesh_gateway_mode: str = ""
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Split:
    weight: float
    next_node: str
    request_headers: HeaderModifiers | None = None
    response_headers: HeaderModifiers | None = None


@dataclass(frozen=True, slots=True)
class Route:
    definition: ServiceRoute
    next_node: str
    index: int  # position in the router's Routes; -1 for the appended catch-all


@dataclass(frozen=True, slots=True)
class Resolver:
    target: str
    default: bool
    connect_timeout_s: float
    request_timeout_s: float | None = None
    failover_targets: tuple[str, ...] = ()
    failover_mode: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    type: Literal["router", "splitter", "resolver"]
    name: str
    routes: tuple[Route, ...] = ()
    splits: tuple[Split, ...] = ()
    resolver: Resolver | None = None
    load_balancer: LoadBalancerSpec | None = None
    entry: str = ""  # "service-router/web", the config entry behind the node ("" for a default resolver)

    @property
    def key(self) -> str:
        return f"{self.type}:{self.name}"


@dataclass(frozen=True, slots=True)
class CompiledChain:
    service_name: str
    namespace: str
    datacenter: str
    protocol: str
    start_node: str
    nodes: Mapping[str, Node] = field(default_factory=_empty_map)
    targets: Mapping[str, Target] = field(default_factory=_empty_map)
    customization_hash: str = ""
    # (kind, name) of every config entry the compiler consulted, present or not (not rendered):
    # a chain must be compiled again when one of them changes or is dropped.
    entries_used: frozenset[tuple[str, str]] = frozenset()

    @property
    def is_l7(self) -> bool:
        return self.protocol in ("http", "http2", "grpc")

    def to_consul_json(self) -> dict[str, Any]:
        """The ``/v1/discovery-chain/:service`` response body."""
        chain: dict[str, Any] = {
            "ServiceName": self.service_name,
            "Namespace": self.namespace,
            "Datacenter": self.datacenter,
        }
        if self.customization_hash:
            chain["CustomizationHash"] = self.customization_hash
        chain["Protocol"] = self.protocol
        chain["StartNode"] = self.start_node
        chain["Nodes"] = {key: _node_json(node) for key, node in sorted(self.nodes.items())}
        chain["Targets"] = {tid: _target_json(t) for tid, t in sorted(self.targets.items())}
        return {"Chain": chain}


# --------------------------------------------------------------------------- rendering


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def _node_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": node.type, "Name": node.name}
    if node.type == "router":
        out["Routes"] = [{"Definition": route_definition_json(r.definition), "NextNode": r.next_node}
                         for r in node.routes]
    elif node.type == "splitter":
        out["Splits"] = [{"Weight": _number(s.weight), "NextNode": s.next_node} for s in node.splits]
    elif node.resolver is not None:
        r = node.resolver
        resolver: dict[str, Any] = {"ConnectTimeout": go_duration_string(r.connect_timeout_s)}
        if r.request_timeout_s:
            resolver["RequestTimeout"] = go_duration_string(r.request_timeout_s)
        if r.default:
            resolver["Default"] = True
        resolver["Target"] = r.target
        if r.failover_targets:
            failover: dict[str, Any] = {"Targets": list(r.failover_targets)}
            if r.failover_mode:
                failover["Policy"] = {"Mode": r.failover_mode}
            resolver["Failover"] = failover
        out["Resolver"] = resolver
    if node.load_balancer is not None:
        out["LoadBalancer"] = _lb_json(node.load_balancer)
    return out


def _target_json(t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": t.id, "Service": t.service}
    if t.service_subset:
        out["ServiceSubset"] = t.service_subset
    out["Namespace"] = t.namespace
    out["Datacenter"] = t.datacenter
    out["MeshGateway"] = {"Mode": t.mesh_gateway_mode} if t.mesh_gateway_mode else {}
    subset: dict[str, Any] = {}
    if t.subset is not None:
        if t.subset.filter_text:
            subset["Filter"] = t.subset.filter_text
        if t.subset.only_passing:
            subset["OnlyPassing"] = True
    out["Subset"] = subset
    out["SNI"] = t.sni
    out["Name"] = t.sni
    return out


def _lb_json(lb: LoadBalancerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if lb.policy:
        out["Policy"] = lb.policy
    if lb.ring_min is not None or lb.ring_max is not None:
        out["RingHashConfig"] = {k: v for k, v in (("MinimumRingSize", lb.ring_min),
                                                   ("MaximumRingSize", lb.ring_max)) if v}
    if lb.choice_count:
        out["LeastRequestConfig"] = {"ChoiceCount": lb.choice_count}
    if lb.hash_policies:
        policies = []
        for hp in lb.hash_policies:
            item: dict[str, Any] = {}
            if hp.field:
                item["Field"] = hp.field
            if hp.field_value:
                item["FieldValue"] = hp.field_value
            if hp.has_cookie_config:
                cookie: dict[str, Any] = {}
                if hp.cookie_session:
                    cookie["Session"] = True
                if hp.cookie_ttl_s:
                    cookie["TTL"] = go_duration_string(hp.cookie_ttl_s)
                if hp.cookie_path:
                    cookie["Path"] = hp.cookie_path
                item["CookieConfig"] = cookie
            if hp.source_ip:
                item["SourceIP"] = True
            if hp.terminal:
                item["Terminal"] = True
            policies.append(item)
        out["HashPolicies"] = policies
    return out


def _headers_json(mods: HeaderModifiers | None) -> dict[str, Any] | None:
    if mods is None:
        return None
    out: dict[str, Any] = {}
    if mods.add:
        out["Add"] = dict(mods.add)
    if mods.set:
        out["Set"] = dict(mods.set)
    if mods.remove:
        out["Remove"] = list(mods.remove)
    return out


def _match_json(match: HttpMatch) -> dict[str, Any]:
    http: dict[str, Any] = {}
    for key, value in (("PathExact", match.path_exact), ("PathPrefix", match.path_prefix),
                       ("PathRegex", match.path_regex)):
        if value:
            http[key] = value
    if match.headers:
        http["Header"] = [
            _named_matcher(h.name, (("Present", h.present), ("Exact", h.exact), ("Prefix", h.prefix),
                                    ("Suffix", h.suffix), ("Regex", h.regex), ("Invert", h.invert)))
            for h in match.headers
        ]
    if match.query_params:
        http["QueryParam"] = [
            _named_matcher(q.name, (("Present", q.present), ("Exact", q.exact), ("Regex", q.regex)))
            for q in match.query_params
        ]
    if match.methods:
        http["Methods"] = list(match.methods)
    return {"HTTP": http}


def _named_matcher(name: str, settings: tuple[tuple[str, str | bool], ...]) -> dict[str, Any]:
    """A header or query-parameter matcher as Consul renders it: ``Name``, then the settings that are set."""
    out: dict[str, Any] = {"Name": name}
    for key, setting in settings:
        if setting:
            out[key] = setting
    return out


def _destination_json(d: RouteDestination) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if d.request_timeout_s:
        out["RequestTimeout"] = go_duration_string(d.request_timeout_s)
    if d.idle_timeout_s:
        out["IdleTimeout"] = go_duration_string(d.idle_timeout_s)
    for key, value in (("Service", d.service), ("ServiceSubset", d.service_subset), ("Namespace", d.namespace),
                       ("Partition", d.partition), ("PrefixRewrite", d.prefix_rewrite)):
        if value:
            out[key] = value
    if d.num_retries:
        out["NumRetries"] = d.num_retries
    if d.retry_on_connect_failure:
        out["RetryOnConnectFailure"] = True
    if d.retry_on:
        out["RetryOn"] = list(d.retry_on)
    if d.retry_on_status_codes:
        out["RetryOnStatusCodes"] = list(d.retry_on_status_codes)
    for key, mods in (("RequestHeaders", d.request_headers), ("ResponseHeaders", d.response_headers)):
        rendered = _headers_json(mods)
        if rendered is not None:
            out[key] = rendered
    return out


def route_definition_json(route: ServiceRoute) -> dict[str, Any]:
    """A ``ServiceRoute`` as Consul renders it (CamelCase, empty fields left out)."""
    out: dict[str, Any] = {}
    if route.match is not None:
        out["Match"] = _match_json(route.match)
    if route.destination is not None:
        out["Destination"] = _destination_json(route.destination)
    return out
