"""Parsers for the parts of Consul config entries: matchers, header modifiers, upstream config, resolvers.

Used by :mod:`meshlib.discovery.consul.entries`; see there for conventions.
Validation messages follow Consul's ``Validate()`` wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType

from meshlib.config.regex import regex_problem
from meshlib.discovery.consul.bexpr import BexprError
from meshlib.discovery.consul.bexpr import parse as parse_filter
from meshlib.discovery.consul.entry_types import (
    Failover,
    HashPolicySpec,
    HeaderMatch,
    HeaderModifiers,
    LoadBalancerSpec,
    PassiveHealthCheck,
    QueryParamMatch,
    ResolverSubset,
    ServiceResolver,
    TargetRef,
    UpstreamConfig,
    UpstreamLimits,
)
from meshlib.discovery.consul.fields import (
    Fields,
    as_bool,
    as_duration,
    as_int,
    as_list,
    as_object,
    as_str,
    object_at,
    objects_in,
    problem,
)
from meshlib.errors import ConfigProblem

MAX_ITEMS = 64
MAX_SUBSETS = 256
_SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LB_POLICIES = frozenset({"", "random", "round_robin", "least_request", "ring_hash", "maglev"})
_HASH_FIELDS = frozenset({"header", "cookie", "query_parameter"})

Fail = Callable[[str, str], None]


# --------------------------------------------------------------------------- router parts


def header_matches(http: Fields, fail: Fail) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    for header in objects_in(http, "Header", MAX_ITEMS):
        match = HeaderMatch(
            name=as_str(header.get("Name"), header.at("Name")),
            present=as_bool(header.get("Present"), header.at("Present")),
            exact=as_str(header.get("Exact"), header.at("Exact")),
            prefix=as_str(header.get("Prefix"), header.at("Prefix")),
            suffix=as_str(header.get("Suffix"), header.at("Suffix")),
            regex=as_str(header.get("Regex"), header.at("Regex")),
            invert=as_bool(header.get("Invert"), header.at("Invert")),
        )
        if not match.name:
            fail(header.path, "missing required Name field")
        count = sum(1 for v in (match.present, match.exact, match.prefix, match.suffix, match.regex) if v)
        if count != 1:
            fail(header.path, "should only contain one of Present, Exact, Prefix, Suffix, or Regex")
        if match.regex and (why := regex_problem(match.regex)) is not None:
            fail(header.at("Regex"), f"invalid regex {match.regex!r}: {why}")
        out.append(match)
    return tuple(out)


def query_matches(http: Fields, fail: Fail) -> tuple[QueryParamMatch, ...]:
    out: list[QueryParamMatch] = []
    for query in objects_in(http, "QueryParam", MAX_ITEMS):
        match = QueryParamMatch(
            name=as_str(query.get("Name"), query.at("Name")),
            present=as_bool(query.get("Present"), query.at("Present")),
            exact=as_str(query.get("Exact"), query.at("Exact")),
            regex=as_str(query.get("Regex"), query.at("Regex")),
        )
        if not match.name:
            fail(query.path, "missing required Name field")
        if sum(1 for v in (match.present, match.exact, match.regex) if v) != 1:
            fail(query.path, "should only contain one of Present, Exact, or Regex")
        if match.regex and (why := regex_problem(match.regex)) is not None:
            fail(query.at("Regex"), f"invalid regex {match.regex!r}: {why}")
        out.append(match)
    return tuple(out)


def header_modifiers(parent: Fields, key: str) -> HeaderModifiers | None:
    raw = as_object(parent.get(key), parent.at(key))
    if raw is None:
        return None
    mods = Fields(raw, parent.at(key))

    def pairs(name: str) -> tuple[tuple[str, str], ...]:
        mapping = as_object(mods.get(name), mods.at(name)) or {}
        return tuple(
            (as_str(k, mods.at(name), max_length=256), as_str(v, f"{mods.at(name)}[{k!r}]", max_length=8192))
            for k, v in list(mapping.items())[:MAX_ITEMS]
        )

    removed = tuple(as_str(v, f"{mods.at('Remove')}[{i}]", max_length=256)
                    for i, v in enumerate(as_list(mods.get("Remove"), mods.at("Remove"))[:MAX_ITEMS]))
    return HeaderModifiers(add=pairs("Add"), set=pairs("Set"), remove=removed)


# --------------------------------------------------------------------------- service-defaults parts


def upstream_config(upstream: Fields, name: str, out: list[ConfigProblem]) -> UpstreamConfig:
    def fail(field: str, message: str) -> None:
        out.append(problem("service-defaults", name, field, message))

    connect_ms = upstream.get("ConnectTimeoutMs")
    if isinstance(connect_ms, int | float) and not isinstance(connect_ms, bool) and connect_ms < 0:
        fail(upstream.at("ConnectTimeoutMs"), "connect timeout cannot be negative")
        connect_ms = None
    limits = None
    limits_raw = as_object(upstream.get("Limits"), upstream.at("Limits"))
    if limits_raw is not None:
        fields = Fields(limits_raw, upstream.at("Limits"))
        values: dict[str, int | None] = {}
        for key, label in (("MaxConnections", "max connections"), ("MaxPendingRequests", "max pending requests"),
                           ("MaxConcurrentRequests", "max concurrent requests")):
            raw = fields.get(key)
            if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 0:
                fail(fields.at(key), f"{label} cannot be negative")
                raw = None
            values[key] = as_int(raw, fields.at(key))
        limits = UpstreamLimits(values["MaxConnections"], values["MaxPendingRequests"], values["MaxConcurrentRequests"])
    check = None
    check_raw = as_object(upstream.get("PassiveHealthCheck"), upstream.at("PassiveHealthCheck"))
    if check_raw is not None:
        fields = Fields(check_raw, upstream.at("PassiveHealthCheck"))
        interval = as_duration(fields.get("Interval"), fields.at("Interval"))
        if interval is not None and interval < 0:
            fail(fields.at("Interval"), "passive health check interval cannot be negative")
        base = as_duration(fields.get("BaseEjectionTime"), fields.at("BaseEjectionTime"))
        if base is not None and base < 0:
            fail(fields.at("BaseEjectionTime"), "base ejection time cannot be negative")
        enforcing = as_int(fields.get("EnforcingConsecutive5xx"), fields.at("EnforcingConsecutive5xx"))
        if enforcing is not None and enforcing > 100:
            fail(fields.at("EnforcingConsecutive5xx"), "EnforcingConsecutive5xx must be a percentage between 0 and 100")
        max_percent = as_int(fields.get("MaxEjectionPercent"), fields.at("MaxEjectionPercent"))
        if max_percent is not None and max_percent > 100:
            fail(fields.at("MaxEjectionPercent"), "MaxEjectionPercent must be a percentage between 0 and 100")
        check = PassiveHealthCheck(
            interval_s=interval,
            max_failures=as_int(fields.get("MaxFailures"), fields.at("MaxFailures")),
            enforcing_consecutive_5xx=enforcing,
            max_ejection_percent=max_percent,
            base_ejection_time_s=base,
        )
    return UpstreamConfig(
        name=as_str(upstream.get("Name"), upstream.at("Name")),
        connect_timeout_ms=as_int(connect_ms, upstream.at("ConnectTimeoutMs")),
        limits=limits,
        passive_health_check=check,
    )


# --------------------------------------------------------------------------- service-resolver


def _target(fields: Fields) -> TargetRef:
    return TargetRef(
        service=as_str(fields.get("Service"), fields.at("Service")),
        service_subset=as_str(fields.get("ServiceSubset"), fields.at("ServiceSubset")),
        namespace=as_str(fields.get("Namespace"), fields.at("Namespace")),
        partition=as_str(fields.get("Partition"), fields.at("Partition")),
        datacenter=as_str(fields.get("Datacenter"), fields.at("Datacenter")),
        peer=as_str(fields.get("Peer"), fields.at("Peer")),
    )


def resolver(name: str, top: Fields, out: list[ConfigProblem]) -> ServiceResolver:
    def fail(field: str, message: str) -> None:
        out.append(problem("service-resolver", name, field, message))

    subsets: dict[str, ResolverSubset] = {}
    subsets_raw = as_object(top.get("Subsets"), "Subsets") or {}
    if len(subsets_raw) > MAX_SUBSETS:
        fail("Subsets", f"more than {MAX_SUBSETS} subsets")
    for subset_name, item in list(subsets_raw.items())[:MAX_SUBSETS]:
        path = f'Subsets["{subset_name}"]'
        subset = Fields(as_object(item, path) or {}, path)
        if not subset_name:
            fail("Subsets", "Subset defined with empty name")
            continue
        if len(subset_name) > 63 or not _SUBSET_NAME.match(subset_name):
            fail(path, f"Subset {subset_name!r} is invalid: must be a valid DNS label "
                       "(lower-case letters, digits and '-', at most 63 characters)")
        text = as_str(subset.get("Filter"), subset.at("Filter"), max_length=4096)
        compiled = None
        if text:
            try:
                compiled = parse_filter(text)
            except BexprError as exc:
                fail(subset.at("Filter"), f"Filter for subset {subset_name!r} is not a valid expression: {exc}")
        only_passing = as_bool(subset.get("OnlyPassing"), subset.at("OnlyPassing"))
        subsets[subset_name] = ResolverSubset(text, only_passing, compiled)

    default_subset = as_str(top.get("DefaultSubset"), "DefaultSubset")
    if default_subset and default_subset not in subsets:
        fail("DefaultSubset", f"DefaultSubset {default_subset!r} is not a valid subset")

    redirect = None
    redirect_raw = as_object(top.get("Redirect"), "Redirect")
    failover_raw = as_object(top.get("Failover"), "Failover") or {}
    if redirect_raw is not None:
        redirect = _target(Fields(redirect_raw, "Redirect"))
        _check_redirect(redirect, name, subsets, bool(failover_raw), fail)

    failover: dict[str, Failover] = {}
    for key, item in list(failover_raw.items())[:MAX_SUBSETS]:
        failover[key] = _failover(object_at(item, f'Failover["{key}"]'), key, name, subsets, fail)

    connect = as_duration(top.get("ConnectTimeout"), "ConnectTimeout")
    if connect is not None and connect < 0:
        fail("ConnectTimeout", "must be >= 0")
    request = as_duration(top.get("RequestTimeout"), "RequestTimeout")
    if request is not None and request < 0:
        fail("RequestTimeout", "must be >= 0")
    lb_raw = as_object(top.get("LoadBalancer"), "LoadBalancer")
    balancer = _load_balancer(Fields(lb_raw, "LoadBalancer"), fail) if lb_raw is not None else None
    locality_raw = as_object(top.get("PrioritizeByLocality"), "PrioritizeByLocality")
    locality_mode = ""
    if locality_raw is not None:
        locality = Fields(locality_raw, "PrioritizeByLocality")
        locality_mode = as_str(locality.get("Mode"), locality.at("Mode"))
        if locality_mode not in ("", "none", "failover"):
            fail(locality.at("Mode"), f"Mode must be one of '', 'none', or 'failover', not {locality_mode!r}")
    return ServiceResolver(
        name=name,
        default_subset=default_subset,
        subsets=MappingProxyType(subsets),
        redirect=redirect,
        failover=MappingProxyType(failover),
        connect_timeout_s=connect,
        request_timeout_s=request,
        load_balancer=balancer,
        prioritize_by_locality=locality_mode,
    )


def _check_redirect(
    r: TargetRef, name: str, subsets: dict[str, ResolverSubset], has_failover: bool, fail: Fail
) -> None:
    if has_failover:
        fail("Redirect", "Redirect and Failover cannot both be set")
    if not any((r.service, r.service_subset, r.namespace, r.partition, r.datacenter, r.peer)):
        fail("Redirect", "Redirect is empty")
    elif r.peer and r.service_subset:
        fail("Redirect.Peer", "Redirect.Peer cannot be set with Redirect.ServiceSubset")
    elif r.peer and r.partition:
        fail("Redirect.Partition", "Redirect.Partition cannot be set with Redirect.Peer")
    elif r.peer and r.datacenter:
        fail("Redirect.Peer", "Redirect.Peer cannot be set with Redirect.Datacenter")
    elif not r.service:
        for label, value in (("ServiceSubset", r.service_subset), ("Namespace", r.namespace),
                             ("Partition", r.partition), ("Peer", r.peer)):
            if value:
                fail(f"Redirect.{label}", f"Redirect.{label} defined without Redirect.Service")
                break
    elif r.service_subset and r.service == name and r.service_subset not in subsets:
        fail("Redirect.ServiceSubset", f"Redirect.ServiceSubset {r.service_subset!r} is not a valid subset of {name!r}")
    if r.peer:
        fail("Redirect.Peer", "cluster peering is not supported by meshlib")


def _failover(f: Fields, key: str, name: str, subsets: dict[str, ResolverSubset], fail: Fail) -> Failover:
    datacenters = tuple(as_str(dc, f"{f.at('Datacenters')}[{i}]")
                        for i, dc in enumerate(as_list(f.get("Datacenters"), f.at("Datacenters"))[:MAX_ITEMS]))
    targets = tuple(_target(target) for target in objects_in(f, "Targets", MAX_ITEMS))
    policy_raw = as_object(f.get("Policy"), f.at("Policy"))
    mode = as_str(Fields(policy_raw).get("Mode"), f.at("Policy.Mode")) if policy_raw is not None else ""
    failover = Failover(
        service=as_str(f.get("Service"), f.at("Service")),
        service_subset=as_str(f.get("ServiceSubset"), f.at("ServiceSubset")),
        namespace=as_str(f.get("Namespace"), f.at("Namespace")),
        datacenters=datacenters,
        targets=targets,
        policy_mode=mode,
    )
    if key != "*" and key not in subsets:
        fail(f.path, "not a valid subset subset")
    if not (failover.service or failover.service_subset or failover.namespace or datacenters or targets):
        fail(f.path, "one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required")
    if mode not in ("", "default", "order-by-locality"):
        fail(f.at("Policy.Mode"), "Policy must be one of '', 'default', or 'order-by-locality'")
    if failover.service_subset and failover.service in ("", name) and failover.service_subset not in subsets:
        fail(f.at("ServiceSubset"),
             f"ServiceSubset {failover.service_subset!r} is not a valid subset of {failover.service or name!r}")
    if datacenters and targets:
        fail(f.path, "Targets cannot be set with Datacenters")
    if failover.service_subset and targets:
        fail(f.path, "Targets cannot be set with ServiceSubset")
    if failover.service and targets:
        fail(f.path, "Targets cannot be set with Service")
    for i, t in enumerate(targets):
        path = f"{f.at('Targets')}[{i}]"
        if t.peer:
            fail(path, "cluster peering is not supported by meshlib")
        elif t.partition and t.datacenter:
            fail(path, "Partition cannot be set with Datacenter")
        elif t.service_subset and t.service in ("", name) and t.service_subset not in subsets:
            fail(path, f"ServiceSubset {t.service_subset!r} is not a valid subset of {name!r}")
    if any(not dc for dc in datacenters):
        fail(f.at("Datacenters"), "found empty datacenter")
    return failover


def _load_balancer(lb: Fields, fail: Fail) -> LoadBalancerSpec:
    policy = as_str(lb.get("Policy"), lb.at("Policy"))
    if policy not in _LB_POLICIES:
        fail(lb.at("Policy"), f"Bad LoadBalancer policy: {policy!r} is not supported")
    ring_raw = as_object(lb.get("RingHashConfig"), lb.at("RingHashConfig"))
    least_raw = as_object(lb.get("LeastRequestConfig"), lb.at("LeastRequestConfig"))
    if ring_raw is not None and policy != "ring_hash":
        fail(lb.at("RingHashConfig"), f"RingHashConfig specified for incompatible load balancing policy {policy!r}")
    if least_raw is not None and policy != "least_request":
        fail(lb.at("LeastRequestConfig"),
             f"LeastRequestConfig specified for incompatible load balancing policy {policy!r}")
    ring = Fields(ring_raw or {}, lb.at("RingHashConfig"))
    least = Fields(least_raw or {}, lb.at("LeastRequestConfig"))
    policies: list[HashPolicySpec] = []
    for hp in objects_in(lb, "HashPolicies", MAX_ITEMS):
        cookie_raw = as_object(hp.get("CookieConfig"), hp.at("CookieConfig"))
        cookie = Fields(cookie_raw or {}, hp.at("CookieConfig"))
        spec = HashPolicySpec(
            field=as_str(hp.get("Field"), hp.at("Field")),
            field_value=as_str(hp.get("FieldValue"), hp.at("FieldValue")),
            source_ip=as_bool(hp.get("SourceIP"), hp.at("SourceIP")),
            terminal=as_bool(hp.get("Terminal"), hp.at("Terminal")),
            cookie_session=as_bool(cookie.get("Session"), cookie.at("Session")),
            cookie_ttl_s=as_duration(cookie.get("TTL"), cookie.at("TTL")),
            cookie_path=as_str(cookie.get("Path"), cookie.at("Path")),
            has_cookie_config=cookie_raw is not None,
        )
        _check_hash_policy(spec, hp.path, fail)
        policies.append(spec)
    spec_lb = LoadBalancerSpec(
        policy=policy,
        ring_min=as_int(ring.get("MinimumRingSize"), ring.at("MinimumRingSize"), maximum=8_388_608),
        ring_max=as_int(ring.get("MaximumRingSize"), ring.at("MaximumRingSize"), maximum=8_388_608),
        choice_count=as_int(least.get("ChoiceCount"), least.at("ChoiceCount"), maximum=1024),
        hash_policies=tuple(policies),
    )
    if policies and not spec_lb.hash_based:
        fail(lb.at("HashPolicies"), f"HashPolicies specified for non-hash-based Policy: {policy!r}")
    return spec_lb


def _check_hash_policy(hp: HashPolicySpec, path: str, fail: Fail) -> None:
    if hp.field and hp.field not in _HASH_FIELDS:
        fail(f"{path}.Field", f"{hp.field!r} is not a supported field")
    if hp.source_ip and hp.field:
        fail(path, f"A single hash policy cannot hash both a source address and a {hp.field!r}")
    if hp.source_ip and hp.field_value:
        fail(path, "A FieldValue cannot be specified when hashing SourceIP")
    if hp.field and not hp.field_value:
        fail(path, f"Field {hp.field!r} was specified without a FieldValue")
    if hp.field_value and not hp.field:
        fail(path, "FieldValue requires a Field to apply to")
    if hp.has_cookie_config:
        if hp.field != "cookie":
            fail(f"{path}.CookieConfig", f"cookie_config provided for {hp.field!r}")
        if hp.cookie_session and hp.cookie_ttl_s:
            fail(f"{path}.CookieConfig", "a session cookie cannot have an associated TTL")
