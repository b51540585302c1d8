"""Parsed, validated Consul L7 config entries (``hashicorp/consul:agent/structs`` shapes).

Only fields meshlib acts on are kept, plus ``raw``: the entry's JSON as read,
which the discovery-chain renderer echoes back in ``Definition`` blocks.
Durations are float seconds; ``None`` means unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from meshlib.discovery.consul.bexpr import Filter

L7_PROTOCOLS = frozenset({"http", "http2", "grpc"})
CONFIG_KINDS = ("service-defaults", "proxy-defaults", "service-router", "service-splitter", "service-resolver")
DEFAULT_NAMESPACE = "default"


def _empty_map() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class HeaderModifiers:
    add: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    present: bool = False
    exact: str = ""
    prefix: str = ""
    suffix: str = ""
    regex: str = ""
    invert: bool = False


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    name: str
    present: bool = False
    exact: str = ""
    regex: str = ""


@dataclass(frozen=True, slots=True)
class HttpMatch:
    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteDestination:
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    prefix_rewrite: str = ""
    request_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    num_retries: int = 0
    retry_on_connect_failure: bool = False
    retry_on: tuple[str, ...] = ()
    retry_on_status_codes: tuple[int, ...] = ()
    request_headers: HeaderModifiers | None = None
    response_headers: HeaderModifiers | None = None

    @property
    def has_retry_features(self) -> bool:
        return bool(self.num_retries or self.retry_on_connect_failure or self.retry_on or self.retry_on_status_codes)


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    match: HttpMatch | None
    destination: RouteDestination | None
    raw: Mapping[str, Any] = field(default_factory=_empty_map)  # the route as written, for Definition


@dataclass(frozen=True, slots=True)
class ServiceRouter:
    name: str
    routes: tuple[ServiceRoute, ...]


@dataclass(frozen=True, slots=True)
class ServiceSplit:
    weight: float
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    request_headers: HeaderModifiers | None = None
    response_headers: HeaderModifiers | None = None


@dataclass(frozen=True, slots=True)
class ServiceSplitter:
    name: str
    splits: tuple[ServiceSplit, ...]


@dataclass(frozen=True, slots=True)
class ResolverSubset:
    filter_text: str = ""
    only_passing: bool = False
    filter: Filter | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A Redirect, a Failover target: every field optional, merged onto the current target."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    partition: str = ""
    datacenter: str = ""
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Failover:
    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenters: tuple[str, ...] = ()
    targets: tuple[TargetRef, ...] = ()
    policy_mode: str = ""


@dataclass(frozen=True, slots=True)
class HashPolicySpec:
    field: str = ""  # header | cookie | query_parameter
    field_value: str = ""
    source_ip: bool = False
    terminal: bool = False
    cookie_session: bool = False
    cookie_ttl_s: float | None = None
    cookie_path: str = ""
    has_cookie_config: bool = False


@dataclass(frozen=True, slots=True)
class LoadBalancerSpec:
    policy: str = ""
    ring_min: int | None = None
    ring_max: int | None = None
    choice_count: int | None = None
    hash_policies: tuple[HashPolicySpec, ...] = ()

    @property
    def hash_based(self) -> bool:
        return self.policy in ("ring_hash", "maglev")


@dataclass(frozen=True, slots=True)
class ServiceResolver:
    name: str
    default_subset: str = ""
    subsets: Mapping[str, ResolverSubset] = field(default_factory=_empty_map)
    redirect: TargetRef | None = None
    failover: Mapping[str, Failover] = field(default_factory=_empty_map)
    connect_timeout_s: float | None = None
    request_timeout_s: float | None = None
    load_balancer: LoadBalancerSpec | None = None
    prioritize_by_locality: str = ""  # "" | "none" | "failover"

    @property
    def is_default(self) -> bool:
        """Consul's ``IsDefault()``: nothing configured beyond the name."""
        return (
            not self.default_subset and not self.subsets and self.redirect is None and not self.failover
            and not self.connect_timeout_s and not self.request_timeout_s and self.load_balancer is None
        )


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_concurrent_requests: int | None = None


@dataclass(frozen=True, slots=True)
class PassiveHealthCheck:
    interval_s: float | None = None
    max_failures: int | None = None
    enforcing_consecutive_5xx: int | None = None
    max_ejection_percent: int | None = None
    base_ejection_time_s: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """How a service calls its upstreams (service-defaults ``UpstreamConfig`` Defaults / Overrides[i])."""

    name: str = ""  # Overrides only: the upstream service it applies to
    connect_timeout_ms: int | None = None
    limits: UpstreamLimits | None = None
    passive_health_check: PassiveHealthCheck | None = None


@dataclass(frozen=True, slots=True)
class ServiceDefaults:
    name: str
    protocol: str = ""
    upstream_defaults: UpstreamConfig | None = None
    upstream_overrides: tuple[UpstreamConfig, ...] = ()

    def upstream_config(self, upstream: str) -> UpstreamConfig | None:
        """The override for ``upstream`` merged over the defaults (Consul's field-by-field merge)."""
        override = next((o for o in self.upstream_overrides if o.name == upstream), None)
        base = self.upstream_defaults
        if override is None:
            return base
        if base is None:
            return override
        return UpstreamConfig(
            name=upstream,
            connect_timeout_ms=override.connect_timeout_ms or base.connect_timeout_ms,
            limits=override.limits or base.limits,
            passive_health_check=override.passive_health_check or base.passive_health_check,
        )


@dataclass(frozen=True, slots=True)
class ProxyDefaults:
    protocol: str = ""
    connect_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ConfigEntries:
    """Every valid entry, by name. Invalid entries are absent (and reported)."""

    service_defaults: Mapping[str, ServiceDefaults] = field(default_factory=_empty_map)
    proxy_defaults: ProxyDefaults | None = None
    routers: Mapping[str, ServiceRouter] = field(default_factory=_empty_map)
    splitters: Mapping[str, ServiceSplitter] = field(default_factory=_empty_map)
    resolvers: Mapping[str, ServiceResolver] = field(default_factory=_empty_map)
    raw: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=_empty_map)  # (kind, name) → JSON

    def protocol(self, service: str) -> str:
        """service-defaults ``Protocol``, else proxy-defaults ``protocol``, else ``tcp`` (lower-cased)."""
        defaults = self.service_defaults.get(service)
        if defaults is not None and defaults.protocol:
            return defaults.protocol.lower()
        if self.proxy_defaults is not None and self.proxy_defaults.protocol:
            return self.proxy_defaults.protocol.lower()
        return "tcp"

    def without(self, kind: str, name: str) -> ConfigEntries:
        """These entries minus one (an entry found invalid when chains were compiled)."""
        def drop(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
            return MappingProxyType({k: v for k, v in mapping.items() if k != name})

        return ConfigEntries(
            service_defaults=drop(self.service_defaults) if kind == "service-defaults" else self.service_defaults,
            proxy_defaults=None if kind == "proxy-defaults" else self.proxy_defaults,
            routers=drop(self.routers) if kind == "service-router" else self.routers,
            splitters=drop(self.splitters) if kind == "service-splitter" else self.splitters,
            resolvers=drop(self.resolvers) if kind == "service-resolver" else self.resolvers,
            raw=MappingProxyType({k: v for k, v in self.raw.items() if k != (kind, name)}),
        )
