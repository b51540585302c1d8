"""VirtualService spec validation (istio/api networking/v1 virtual_service.proto).

``tls`` and ``tcp`` routes are validated (so typos are caught) but not
compiled: meshlib routes HTTP calls only.
"""

from __future__ import annotations

from dataclasses import replace

from meshlib.config import parse_http_policies as policies
from meshlib.config import parse_http_route as h
from meshlib.config.annotations import rate_limit_annotation
from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_matches, host_problem, is_ip, is_ip_or_cidr
from meshlib.config.istio_checks import export_to_problems
from meshlib.config.istio_types import (
    HttpRuleSpec,
    Meta,
    MirrorSpec,
    RouteDestinationSpec,
    VirtualServiceSpec,
)
from meshlib.config.model import HeaderPolicy, RouteMatch
from meshlib.config.yaml_nodes import Node

SPEC_FIELDS = frozenset({"hosts", "gateways", "http", "tls", "tcp", "exportTo"})
HTTP_FIELDS = frozenset(
    {
        "name",
        "match",
        "route",
        "redirect",
        "directResponse",
        "delegate",
        "rewrite",
        "timeout",
        "retries",
        "fault",
        "mirror",
        "mirrors",
        "mirrorPercentage",
        "mirrorPercent",
        "corsPolicy",
        "headers",
    }
)
ROUTE_DESTINATION_FIELDS = frozenset({"destination", "weight", "headers"})
L4_DESTINATION_FIELDS = frozenset({"destination", "weight"})
TLS_MATCH_FIELDS = frozenset(
    {"sniHosts", "destinationSubnets", "port", "sourceLabels", "gateways", "sourceNamespace"}
)
TCP_MATCH_FIELDS = frozenset(
    {"destinationSubnets", "port", "sourceSubnet", "sourceLabels", "gateways", "sourceNamespace"}
)
ACTIONS = ("route", "redirect", "directResponse", "delegate")
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


def parse_virtual_service(sink: Sink, meta: Meta, spec: Fields) -> VirtualServiceSpec:
    """Validate one VirtualService ``spec``; problems go to ``sink``."""
    gateways = spec.string_list("gateways") or []
    h.check_gateway_names(spec, "gateways", gateways)
    # Istio: no gateways means the mesh; listing gateways without "mesh" binds only to them.
    applies_to_mesh = not gateways or "mesh" in gateways
    hosts: list[tuple[str, int]] = []
    for path, node in spec.items("hosts"):
        if node.kind != "scalar" or not isinstance(node.scalar, str):
            sink.error(node.line, path, f"expected string, got {node.type_name}")
            continue
        problem = host_problem(node.scalar)
        if problem:
            sink.error(node.line, path, problem)
            continue
        if node.scalar == "*" and applies_to_mesh:
            sink.error(node.line, path, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            continue
        hosts.append((node.scalar.lower(), node.line))
    for i, (host, line) in enumerate(hosts):
        for other, _ in hosts[i + 1 :]:
            if host_matches(host, other) or host_matches(other, host):
                sink.error(line, spec.at("hosts"), f"duplicate hosts in virtual service: {host} & {other}")
    for problem in export_to_problems(spec.string_list("exportTo") or [], meta.namespace, service_entry=False):
        spec.error("exportTo", problem)
    if not any(spec.items(key) for key in ("http", "tcp", "tls")):
        spec.error(None, "http, tcp or tls must be provided in virtual service")
    rules = [_http_rule(sink, index, path, node) for index, (path, node) in enumerate(spec.items("http"))]
    _unreachable_rules(sink, [r for r in rules if r is not None])
    for path, node in spec.items("tls"):
        _l4_route(sink, path, node, TLS_MATCH_FIELDS, tls=True, hosts=[h for h, _ in hosts])
    for path, node in spec.items("tcp"):
        _l4_route(sink, path, node, TCP_MATCH_FIELDS, tls=False, hosts=[h for h, _ in hosts])
    if not hosts and not spec.has("hosts"):
        if gateways:
            spec.error("gateways", "a delegate VirtualService (no hosts) must not set gateways")
        for key in ("tls", "tcp"):
            if spec.has(key):
                spec.error(key, f"delegate virtual service must have no {key} route specified")
    return VirtualServiceSpec(
        meta, tuple(hosts), tuple(gateways), tuple(r for r in rules if r is not None),
        rate_limit_annotation(sink, meta),
    )


def _http_rule(sink: Sink, index: int, path: str, node: Node) -> HttpRuleSpec | None:
    rule = item_fields(sink, path, node, HTTP_FIELDS)
    if rule is None:
        return None
    actions = [a for a in ACTIONS if rule.has(a)]
    if len(actions) != 1:
        rule.error(None, "must set exactly one of route, redirect, directResponse, delegate")
    for local in ("redirect", "directResponse"):
        if rule.has(local):
            if rule.has("rewrite"):
                rule.error("rewrite", f"rewrite cannot be used together with {local}")
            if rule.has("fault"):
                rule.error("fault", f"fault cannot be used together with {local}")
    if rule.has("mirrorPercent"):
        rule.warn("mirrorPercent", 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')

    matches = []
    for match_path, match_node in rule.items("match"):
        match = item_fields(sink, match_path, match_node, h.MATCH_FIELDS)
        if match is not None:
            matches.append(h.route_match(sink, match))

    destinations = _route_destinations(sink, rule)
    delegate = None
    delegate_fields = rule.mapping("delegate", ("name", "namespace"))
    if delegate_fields is not None:
        name = delegate_fields.string("name", required=True)
        namespace = delegate_fields.string("namespace") or sink.name.split("/")[0]
        if name is not None:
            delegate = (namespace, name)

    timeout = rule.duration("timeout")
    retry, ignore_previous = policies.retries(rule)
    rewrite = h.rewrite(rule)
    headers = h.header_policy(rule)
    if rewrite is not None and rewrite.authority and headers is not None:
        for name, value in (*headers.request.set, *headers.request.add):
            if name in ("host", ":authority"):
                rule.error("headers", f'authority header cannot be set multiple times: have "{rewrite.authority}", '
                           f'attempting to set "{value}"')
    return HttpRuleSpec(
        index=index,
        name=rule.string("name") or "",
        line=node.line,
        path=path,
        matches=tuple(matches),
        route=destinations,
        redirect=h.redirect(rule),
        direct_response=h.direct_response(rule),
        delegate=delegate,
        rewrite=rewrite,
        timeout_s=timeout or None,  # "0s" disables the timeout, as in Istio
        has_timeout=timeout is not None,
        retry=retry,
        has_retries=rule.has("retries"),
        ignore_previous_hosts=ignore_previous,
        fault=policies.fault(rule),
        mirrors=_mirrors(sink, rule),
        cors=h.cors_policy(rule),
        headers=headers,
    )


def _unreachable_rules(sink: Sink, rules: list[HttpRuleSpec]) -> None:
    """Istio's VirtualServiceUnreachableRule warnings: rules after a catch-all, or whose matches repeat."""
    catch_all: HttpRuleSpec | None = None
    seen: set[RouteMatch] = set()
    for rule in rules:
        label = f'"{rule.name}"' if rule.name else f"#{rule.index}"
        if catch_all is not None:
            reason = "route without matches defined before"
            if not rule.matches:
                reason = "only the last rule can have no matches"
            sink.warn(rule.line, rule.path, f"virtualService rule {label} not used ({reason})")
            continue
        if not rule.matches:
            catch_all = rule
            continue
        unnamed = [replace(m, name="") for m in rule.matches]
        if all(m in seen for m in unnamed):
            sink.warn(rule.line, rule.path, f"virtualService rule {label} not used (all matches used by prior rules)")
        seen.update(unnamed)


def _route_destinations(sink: Sink, rule: Fields) -> tuple[RouteDestinationSpec, ...]:
    items = rule.items("route")
    parsed: list[RouteDestinationSpec] = []
    for path, node in items:
        entry = item_fields(sink, path, node, ROUTE_DESTINATION_FIELDS)
        if entry is None:
            continue
        dest = h.destination(sink, entry, "destination")
        # Istio: weights are relative (any non-negative int32; the sum need not be 100).
        weight = entry.integer("weight", 0, None)
        if weight is not None and weight > INT32_MAX:
            entry.error("weight", f"must be at most {INT32_MAX} (int32)")
            continue
        if weight is None and entry.has("weight"):
            continue  # reported; leave it out of the total check
        if weight is None or len(items) == 1:
            # Istio: a lone destination takes all traffic (its weight is ignored); unweighted peers get 0.
            weight = 100 if len(items) == 1 else 0
        headers = h.header_policy(entry) or HeaderPolicy()
        if dest is not None:
            parsed.append(RouteDestinationSpec(dest, weight, headers))
    total = sum(d.weight for d in parsed)
    if len(items) > 1 and len(parsed) == len(items) and total == 0:
        rule.error("route", "total destination weight is 0")
    if total > UINT32_MAX:  # Envoy and gRPC clients sum weights in a uint32
        rule.error("route", f"total destination weight {total} exceeds {UINT32_MAX}")
    return tuple(parsed)


def _mirrors(sink: Sink, rule: Fields) -> tuple[MirrorSpec, ...]:
    if rule.has("mirror") and rule.has("mirrors"):
        rule.error("mirrors", "mirror and mirrors cannot both be set")
    if rule.has("mirrorPercentage") and rule.has("mirrorPercent"):
        rule.error("mirrorPercent", "mirrorPercent and mirrorPercentage cannot both be set")
    out: list[MirrorSpec] = []
    if rule.has("mirror"):
        dest = h.destination(sink, rule, "mirror")
        percent = rule.percent("mirrorPercentage")
        if percent is None and rule.has("mirrorPercent"):
            legacy = rule.integer("mirrorPercent", 0, 100)
            percent = float(legacy) if legacy is not None else None
        if percent is None and not rule.has("mirrorPercentage") and not rule.has("mirrorPercent"):
            percent = 100.0  # absent = mirror everything
        if dest is not None and percent:  # explicit 0 = no mirroring
            out.append(MirrorSpec(dest, percent))
    for path, node in rule.items("mirrors"):
        entry = item_fields(sink, path, node, ("destination", "percentage"))
        if entry is None:
            continue
        dest = h.destination(sink, entry, "destination")
        percent = entry.percent("percentage") if entry.has("percentage") else 100.0
        if dest is not None and percent:
            out.append(MirrorSpec(dest, percent))
    return tuple(out)


def _l4_route(
    sink: Sink, path: str, node: Node, match_fields: frozenset[str], *, tls: bool, hosts: list[str]
) -> None:
    route = item_fields(sink, path, node, ("match", "route"))
    if route is None:
        return
    matches = route.items("match")
    if tls and not matches:
        route.require("match")
    for match_path, match_node in matches:
        match = item_fields(sink, match_path, match_node, match_fields)
        if match is None:
            continue
        if tls:
            sni = match.string_list("sniHosts")
            if not sni:
                match.error(
                    "sniHosts" if sni is not None else None, "at least one sniHosts entry is required"
                )
            for name in sni or ():
                problem = host_problem(name)
                if problem and not is_ip(name):
                    match.error("sniHosts", problem)
                elif is_ip(name):
                    match.warn("sniHosts", f'using an IP address ("{name}") goes against SNI spec and most '
                               "clients do not support this")
                elif hosts and not any(host_matches(h, name.lower()) for h in hosts):
                    match.error("sniHosts", f'SNI host "{name}" is not a compatible subset of any of the '
                                f"virtual service hosts: [{', '.join(hosts)}]")
        for subnet in match.string_list("destinationSubnets") or ():
            if not is_ip_or_cidr(subnet):
                match.error("destinationSubnets", f"{subnet} is not a valid IP or CIDR block")
        match.string("sourceSubnet")
        match.integer("port", 1, 65535)
        match.labels("sourceLabels")
        match.string_list("gateways")
        match.string("sourceNamespace")
    destinations = route.items("route")
    if not destinations:
        route.error("route" if route.has("route") else None, f"{'TLS' if tls else 'TCP'} route is required")
    for dest_path, dest_node in destinations:
        entry = item_fields(sink, dest_path, dest_node, L4_DESTINATION_FIELDS)
        if entry is not None:
            h.destination(sink, entry, "destination")
            entry.integer("weight", 0, None)
