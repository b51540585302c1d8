"""Envoy ``RouteConfiguration`` (RDS, or inline in an HCM) → model :class:`RouteConfiguration`.

Understands istiod's shapes (see :mod:`meshlib.xds.encode_routes`): one
Envoy route per match block, ``:method``/``:authority``/``:scheme`` header
matchers, ``weighted_clusters``, Envoy retry policies with host predicates
and priorities, timeouts (``timeout`` ``0s`` = none; absent → Envoy's 15 s,
or ``max_stream_duration`` as proxyless gRPC reads it), faults, CORS and local
rate limits in ``typed_per_filter_config``, mirrors, header operations.

Routes that came from one model route (meshlib metadata ``group``) merge back
into one :class:`Route` with several matches; otherwise each Envoy route is
one model route. The :class:`RouteSource` comes from meshlib metadata, else
from istiod's ``filter_metadata["istio"]["config"]`` and the route name.

Rejected: path templates and separated prefixes, ``runtime_fraction`` /
``tls_context`` / metadata / filter-state matchers, range header matches,
``cluster_header`` and cluster-specifier plugins, redirect prefix/regex
rewrites, direct-response bodies from files, path rewrite policies, host
rewrites from headers or regexes, non-forwarding and filter actions, the
vhost ``matcher`` tree, typed retry policies, header ``ADD_IF_ABSENT`` /
``OVERWRITE_IF_EXISTS``. Suffix/contains string matches become RE2 regexes.
Ignored: hedging, global rate limits, priority, vhost-level header operations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from meshlib.config.model import (
    CorsPolicy,
    DirectResponse,
    FaultPolicy,
    HashPolicy,
    HeaderOps,
    HeaderPolicy,
    Labels,
    Mirror,
    RateLimitSpec,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    RouteConfiguration,
    RouteMatch,
    RouteSource,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshlib.config.regex import regex_problem
from meshlib.xds import type_urls
from meshlib.xds.decode_common import (
    Where,
    as_int,
    fractional_percent,
    istio_metadata,
    metadata,
    optional_seconds,
    parse_cluster_name,
    seconds,
    unpack,
    wrapped,
)

RC = route_components_pb2
REDIRECT_CODES = {
    RC.RedirectAction.MOVED_PERMANENTLY: 301,
    RC.RedirectAction.FOUND: 302,
    RC.RedirectAction.SEE_OTHER: 303,
    RC.RedirectAction.TEMPORARY_REDIRECT: 307,
    RC.RedirectAction.PERMANENT_REDIRECT: 308,
}
ENVOY_DEFAULT_TIMEOUT_S = 15.0
PSEUDO_HEADERS = {":method": "method", ":authority": "authority", ":scheme": "scheme"}
_ISTIO_CONFIG = re.compile(r"/namespaces/([^/]+)/virtual-service/([^/]+)$")
# HeaderValueOption.HeaderAppendAction values
_APPEND_IF_EXISTS_OR_ADD, _ADD_IF_ABSENT, _OVERWRITE_IF_EXISTS_OR_ADD, _OVERWRITE_IF_EXISTS = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class DecodedRoutes:
    """A decoded route configuration plus, per cluster, the hash policies routes apply to it."""

    config: RouteConfiguration
    hash_policies: dict[str, tuple[HashPolicy, ...]]


def decode_route_configuration(message: Any, name: str | None = None) -> DecodedRoutes:
    where = Where(type_urls.ROUTE_CONFIGURATION, name or message.name)
    hashes: dict[str, tuple[HashPolicy, ...]] = {}
    vhosts = tuple(
        _virtual_host(vhost, where, f"virtual_hosts[{i}]", hashes) for i, vhost in enumerate(message.virtual_hosts)
    )
    return DecodedRoutes(RouteConfiguration(name or message.name, vhosts), hashes)


def _virtual_host(vhost: Any, where: Where, path: str, hashes: dict[str, tuple[HashPolicy, ...]]) -> VirtualHost:
    if vhost.HasField("matcher"):
        raise where.error(f"{path}.matcher", "the matcher tree is not supported; use routes")
    if vhost.HasField("retry_policy_typed_config"):
        raise where.error(f"{path}.retry_policy_typed_config", "typed retry policies are not supported")
    default_retry = (
        _retry(vhost.retry_policy, where, f"{path}.retry_policy") if vhost.HasField("retry_policy") else None
    )
    routes: list[Route] = []
    last_group: object = None
    for i, envoy_route in enumerate(vhost.routes):
        route_path = f"{path}.routes[{i}]"
        extras = metadata(envoy_route)
        match = _match(envoy_route.match, where, f"{route_path}.match", extras, envoy_route.name)
        group = extras.get("group")
        if group is not None and group == last_group and routes and match is not None:
            routes[-1] = replace(routes[-1], matches=(*routes[-1].matches, match))
            continue
        last_group = group
        route = _route(
            envoy_route, where, route_path, extras=extras, default_retry=default_retry, index=len(routes), hashes=hashes
        )
        routes.append(route if match is None else replace(route, matches=(match,)))
    return VirtualHost(vhost.name, tuple(d.lower() for d in vhost.domains), tuple(routes))


# ----------------------------------------------------------------------------- match


def _match(match: Any, where: Where, path: str, extras: dict[str, Any], route_name: str) -> RouteMatch | None:
    """The model match block, or None for a bare ``prefix: "/"`` (match everything)."""
    kind = match.WhichOneof("path_specifier")
    ignore_case = match.HasField("case_sensitive") and not match.case_sensitive.value
    uri: StringMatch | None
    if kind == "prefix":
        uri = StringMatch("prefix", match.prefix, ignore_case)
    elif kind == "path":
        uri = StringMatch("exact", match.path, ignore_case)
    elif kind == "safe_regex":
        uri = StringMatch("regex", _regex(match.safe_regex.regex, where, f"{path}.safe_regex.regex"))
    else:
        raise where.error(
            f"{path}.{kind or 'path_specifier'}", "unsupported path match (use prefix, path or safe_regex)"
        )
    for unsupported in ("runtime_fraction", "tls_context"):
        if match.HasField(unsupported):
            raise where.error(f"{path}.{unsupported}", "not supported")
    if match.dynamic_metadata:
        raise where.error(f"{path}.dynamic_metadata", "not supported")
    if match.filter_state:
        raise where.error(f"{path}.filter_state", "not supported")

    pseudo: dict[str, StringMatch] = {}
    headers: list[tuple[str, StringMatch]] = []
    without: list[tuple[str, StringMatch]] = []
    for i, header in enumerate(match.headers):
        value, negated = _header_match(header, where, f"{path}.headers[{i}]")
        name = header.name.lower()
        if name in PSEUDO_HEADERS and not negated and name not in pseudo:
            pseudo[name] = value
        elif negated:
            without.append((name, value))
        else:
            headers.append((name, value))
    if match.HasField("grpc"):
        headers.append(("content-type", StringMatch("prefix", "application/grpc")))
    params: list[tuple[str, StringMatch]] = []
    for i, param in enumerate(match.query_parameters):
        if param.HasField("string_match"):
            params.append((param.name, _string_match(param.string_match, where, f"{path}.query_parameters[{i}]")))
        else:
            params.append((param.name, StringMatch("present")))

    info = extras.get("match") if isinstance(extras.get("match"), dict) else {}
    assert isinstance(info, dict)
    if info.get("uri_present"):
        uri = StringMatch("present")
    elif info.get("uri_absent") or (not info and uri == StringMatch("prefix", "/")):
        uri = None  # every path starts with "/": the same condition as none
    result = RouteMatch(
        name=str(info.get("name", "")),
        uri=uri,
        scheme=pseudo.get(":scheme"),
        method=pseudo.get(":method"),
        authority=pseudo.get(":authority"),
        headers=tuple(headers),
        without_headers=tuple(without),
        query_params=tuple(params),
        port=as_int(info["port"]) if isinstance(info.get("port"), float | int) else None,
        source_labels=Labels({str(k): str(v) for k, v in (info.get("source_labels") or {}).items()}),
        source_namespace=str(info.get("source_namespace", "")),
        gateways=tuple(str(g) for g in info.get("gateways") or ()),
    )
    if extras.get("match_all") or (not info and result == RouteMatch()):
        return None
    return result


def _header_match(header: Any, where: Where, path: str) -> tuple[StringMatch, bool]:
    """(match, negated): ``invert_match`` or ``present_match: false`` negate."""
    kind = header.WhichOneof("header_match_specifier")
    invert = header.invert_match
    if kind is None:
        return StringMatch("present"), invert
    if kind == "present_match":
        return StringMatch("present"), invert == header.present_match
    if kind == "exact_match":
        return StringMatch("exact", header.exact_match), invert
    if kind == "prefix_match":
        return StringMatch("prefix", header.prefix_match), invert
    if kind == "suffix_match":
        return StringMatch("regex", ".*" + re.escape(header.suffix_match)), invert
    if kind == "contains_match":
        return StringMatch("regex", ".*" + re.escape(header.contains_match) + ".*"), invert
    if kind == "safe_regex_match":
        return StringMatch("regex", _regex(header.safe_regex_match.regex, where, f"{path}.safe_regex_match")), invert
    if kind == "string_match":
        return _string_match(header.string_match, where, f"{path}.string_match"), invert
    raise where.error(f"{path}.{kind}", "unsupported header match")


def _regex(pattern: str, where: Where, path: str) -> str:
    """An RE2 pattern as Envoy would accept it (syntax, length, program size), else a NACK."""
    problem = regex_problem(pattern)
    if problem is not None:
        raise where.error(path, f"invalid regex {pattern[:100]!r}: {problem}")
    return pattern


def _string_match(matcher: Any, where: Where, path: str) -> StringMatch:
    kind = matcher.WhichOneof("match_pattern")
    ignore_case = matcher.ignore_case
    if kind == "exact":
        return StringMatch("exact", matcher.exact, ignore_case)
    if kind == "prefix":
        return StringMatch("prefix", matcher.prefix, ignore_case)
    if kind == "safe_regex":
        return StringMatch("regex", _regex(matcher.safe_regex.regex, where, f"{path}.safe_regex.regex"))
    flags = "(?i)" if ignore_case else ""
    if kind == "suffix":
        return StringMatch("regex", flags + ".*" + re.escape(matcher.suffix))
    if kind == "contains":
        return StringMatch("regex", flags + ".*" + re.escape(matcher.contains) + ".*")
    raise where.error(f"{path}.{kind or 'match_pattern'}", "unsupported string match")


# ----------------------------------------------------------------------------- route


def _route(
    envoy_route: Any,
    where: Where,
    path: str,
    *,
    extras: dict[str, Any],
    default_retry: RetryPolicy | None,
    index: int,
    hashes: dict[str, tuple[HashPolicy, ...]],
) -> Route:
    action = envoy_route.WhichOneof("action")
    destinations: tuple[WeightedCluster, ...] = ()
    redirect = direct = rewrite = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    if action == "route":
        act = envoy_route.route
        destinations = _destinations(act, where, f"{path}.route")
        rewrite = _rewrite(act, where, f"{path}.route")
        timeout = _timeout(act, f"{path}.route")
        if act.HasField("retry_policy_typed_config"):
            raise where.error(f"{path}.route.retry_policy_typed_config", "typed retry policies are not supported")
        retry = (
            _retry(act.retry_policy, where, f"{path}.route.retry_policy")
            if act.HasField("retry_policy")
            else default_retry
        )
        mirrors = tuple(_mirror(m) for m in act.request_mirror_policies)
        if act.hash_policy:
            policies = tuple(
                _hash_policy(h, where, f"{path}.route.hash_policy[{i}]") for i, h in enumerate(act.hash_policy)
            )
            for dest in destinations:
                hashes.setdefault(dest.cluster, tuple(p for p in policies if p is not None))
    elif action == "redirect":
        redirect = _redirect(envoy_route.redirect, where, f"{path}.redirect", extras)
    elif action == "direct_response":
        direct = _direct(envoy_route.direct_response, where, f"{path}.direct_response")
    else:
        raise where.error(
            f"{path}.{action or 'action'}", "unsupported route action (use route, redirect or direct_response)"
        )

    configs = envoy_route.typed_per_filter_config
    return Route(
        matches=(),
        source=_source(envoy_route, extras, index),
        destinations=destinations,
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        timeout_s=timeout,
        retry=retry,
        fault=_per_filter(configs, type_urls.FAULT_FILTER_NAME, fault_pb2.HTTPFault, _fault, where=where, path=path),
        mirrors=mirrors,
        headers=HeaderPolicy(
            _header_ops(envoy_route.request_headers_to_add, envoy_route.request_headers_to_remove, where, path),
            _header_ops(envoy_route.response_headers_to_add, envoy_route.response_headers_to_remove, where, path),
        ),
        cors=_per_filter(configs, type_urls.CORS_FILTER_NAME, cors_pb2.CorsPolicy, _cors, where=where, path=path),
        rate_limit=_per_filter(
            configs,
            type_urls.LOCAL_RATE_LIMIT_FILTER_NAME,
            local_rate_limit_pb2.LocalRateLimit,
            _rate_limit,
            where=where,
            path=path,
        ),
    )


def _source(envoy_route: Any, extras: dict[str, Any], index: int) -> RouteSource:
    raw = extras.get("source")
    if isinstance(raw, dict):
        vs = raw.get("virtual_service")
        return RouteSource(
            str(vs) if vs is not None else None,
            str(raw.get("rule_name", "")),
            as_int(raw.get("rule_index")),
            str(raw.get("file", "")),
            as_int(raw.get("line")),
        )
    found = _ISTIO_CONFIG.search(str(istio_metadata(envoy_route).get("config", "")))
    return RouteSource(f"{found.group(1)}/{found.group(2)}" if found else None, envoy_route.name, index)


def _target(cluster: str) -> tuple[str, int, str]:
    parsed = parse_cluster_name(cluster)
    return parsed if parsed is not None else (cluster, 0, "")


def _destinations(act: Any, where: Where, path: str) -> tuple[WeightedCluster, ...]:
    kind = act.WhichOneof("cluster_specifier")
    if kind == "cluster":
        if not act.cluster:
            raise where.error(f"{path}.cluster", "must not be empty")
        host, port, subset = _target(act.cluster)
        return (WeightedCluster(act.cluster, host, port, subset, 100),)
    if kind != "weighted_clusters":
        raise where.error(f"{path}.{kind or 'cluster_specifier'}", "unsupported (use cluster or weighted_clusters)")
    out = []
    for i, entry in enumerate(act.weighted_clusters.clusters):
        entry_path = f"{path}.weighted_clusters.clusters[{i}]"
        if not entry.name:
            raise where.error(f"{entry_path}.name", "must not be empty (cluster_header is not supported)")
        host, port, subset = _target(entry.name)
        headers = HeaderPolicy(
            _header_ops(entry.request_headers_to_add, entry.request_headers_to_remove, where, entry_path),
            _header_ops(entry.response_headers_to_add, entry.response_headers_to_remove, where, entry_path),
        )
        out.append(WeightedCluster(entry.name, host, port, subset, wrapped(entry, "weight", 0), headers))
    if not out:
        raise where.error(f"{path}.weighted_clusters.clusters", "must not be empty")
    if sum(w.weight for w in out) <= 0:
        raise where.error(f"{path}.weighted_clusters", "the total weight must be greater than 0")
    return tuple(out)


def _rewrite(act: Any, where: Where, path: str) -> Rewrite | None:
    if act.HasField("path_rewrite_policy"):
        raise where.error(f"{path}.path_rewrite_policy", "not supported")
    host_kind = act.WhichOneof("host_rewrite_specifier")
    if host_kind not in (None, "host_rewrite_literal", "auto_host_rewrite"):
        raise where.error(f"{path}.{host_kind}", "not supported (use host_rewrite_literal)")
    uri = act.prefix_rewrite or None
    regex = None
    if act.HasField("regex_rewrite"):
        pattern = _regex(act.regex_rewrite.pattern.regex, where, f"{path}.regex_rewrite.pattern.regex")
        regex = (pattern, act.regex_rewrite.substitution)
    if uri is not None and regex is not None:
        raise where.error(f"{path}.regex_rewrite", "cannot be combined with prefix_rewrite")
    authority = act.host_rewrite_literal if host_kind == "host_rewrite_literal" else None
    if uri is None and regex is None and authority is None:
        return None
    return Rewrite(uri=uri, authority=authority, uri_regex=regex)


def _timeout(act: Any, path: str) -> float | None:
    if act.HasField("timeout"):
        return seconds(act.timeout, f"{path}.timeout") or None
    if act.HasField("max_stream_duration"):
        msd = act.max_stream_duration
        value = optional_seconds(msd, "grpc_timeout_header_max", f"{path}.max_stream_duration")
        if value is None:
            value = optional_seconds(msd, "max_stream_duration", f"{path}.max_stream_duration")
        if value is not None:
            return value or None
    return ENVOY_DEFAULT_TIMEOUT_S


def _retry(policy: Any, where: Where, path: str) -> RetryPolicy:
    retry_on = tuple(part.strip() for part in policy.retry_on.split(",") if part.strip())
    base = maximum = None
    if policy.HasField("retry_back_off"):
        base = optional_seconds(policy.retry_back_off, "base_interval", f"{path}.retry_back_off")
        maximum = optional_seconds(policy.retry_back_off, "max_interval", f"{path}.retry_back_off")
    base = 0.025 if base is None else base
    if base <= 0:
        raise where.error(f"{path}.retry_back_off.base_interval", "must be greater than 0")
    previous_hosts = False
    for predicate in policy.retry_host_predicate:
        url = predicate.typed_config.type_url
        if predicate.name == type_urls.PREVIOUS_HOSTS_NAME or url == type_urls.PREVIOUS_HOSTS:
            previous_hosts = True
    remote = policy.HasField("retry_priority") and (
        policy.retry_priority.name == type_urls.PREVIOUS_PRIORITIES_NAME
        or policy.retry_priority.typed_config.type_url == type_urls.PREVIOUS_PRIORITIES
    )
    return RetryPolicy(
        num_retries=wrapped(policy, "num_retries", 1),
        retry_on=retry_on,
        per_try_timeout_s=optional_seconds(policy, "per_try_timeout", path) or None,
        retriable_status_codes=tuple(policy.retriable_status_codes),
        retry_remote_localities=remote,
        backoff_base_s=base,
        backoff_max_s=maximum if maximum is not None else base * 10,
        previous_hosts=previous_hosts,
        host_selection_attempts=policy.host_selection_retry_max_attempts or 1,
    )


def _mirror(policy: Any) -> Mirror:
    host, port, subset = _target(policy.cluster)
    percent = (
        fractional_percent(policy.runtime_fraction.default_value) if policy.HasField("runtime_fraction") else 100.0
    )
    return Mirror(policy.cluster, host, port, subset, percent)


def _hash_policy(policy: Any, where: Where, path: str) -> HashPolicy | None:
    kind = policy.WhichOneof("policy_specifier")
    terminal = policy.terminal
    if kind == "header":
        return HashPolicy("header", policy.header.header_name.lower(), terminal)
    if kind == "cookie":
        ttl = optional_seconds(policy.cookie, "ttl", f"{path}.cookie")
        return HashPolicy("cookie", policy.cookie.name, terminal, ttl, policy.cookie.path)
    if kind == "connection_properties":
        return HashPolicy("source_ip", "", terminal) if policy.connection_properties.source_ip else None
    if kind == "query_parameter":
        return HashPolicy("query_parameter", policy.query_parameter.name, terminal)
    return None  # filter_state (gRPC channel id): meshlib hashes nothing for it


def _redirect(redirect: Any, where: Where, path: str, extras: dict[str, Any]) -> Redirect:
    if redirect.WhichOneof("path_rewrite_specifier") not in (None, "path_redirect"):
        raise where.error(
            f"{path}.{redirect.WhichOneof('path_rewrite_specifier')}", "not supported (use path_redirect)"
        )
    scheme_kind = redirect.WhichOneof("scheme_rewrite_specifier")
    scheme = "https" if scheme_kind == "https_redirect" and redirect.https_redirect else None
    if scheme_kind == "scheme_redirect":
        scheme = redirect.scheme_redirect
    derive = str(extras.get("derive_port", ""))
    return Redirect(
        uri=redirect.path_redirect if redirect.WhichOneof("path_rewrite_specifier") else None,
        authority=redirect.host_redirect or None,
        scheme=scheme,
        port=redirect.port_redirect or None,
        derive_port=derive if derive in ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT") else "",  # type: ignore[arg-type]
        code=REDIRECT_CODES.get(redirect.response_code, 301),
    )


def _direct(direct: Any, where: Where, path: str) -> DirectResponse:
    if not 200 <= direct.status <= 599:
        raise where.error(f"{path}.status", f"must be between 200 and 599, got {direct.status}")
    body = b""
    if direct.HasField("body"):
        kind = direct.body.WhichOneof("specifier")
        if kind == "inline_bytes":
            body = direct.body.inline_bytes
        elif kind == "inline_string":
            body = direct.body.inline_string.encode()
        elif kind is not None:
            raise where.error(f"{path}.body.{kind}", "only inline bodies are supported")
    return DirectResponse(direct.status, body)


def _header_ops(to_add: Any, to_remove: Any, where: Where, path: str) -> HeaderOps:
    set_: list[tuple[str, str]] = []
    add: list[tuple[str, str]] = []
    for i, option in enumerate(to_add):
        action = option.append_action
        if option.HasField("append"):  # deprecated bool: true appends, false overwrites
            action = _APPEND_IF_EXISTS_OR_ADD if option.append.value else _OVERWRITE_IF_EXISTS_OR_ADD
        pair = (option.header.key.lower(), option.header.value)
        if action == _OVERWRITE_IF_EXISTS_OR_ADD:
            set_.append(pair)
        elif action == _APPEND_IF_EXISTS_OR_ADD:
            add.append(pair)
        else:
            raise where.error(
                f"{path}.headers_to_add[{i}].append_action",
                "only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are supported",
            )
    return HeaderOps(tuple(set_), tuple(add), tuple(h.lower() for h in to_remove))


# ----------------------------------------------------------------------------- per-filter configs


def _per_filter(
    configs: Any, name: str, message_type: Any, convert: Callable[[Any, Where, str], Any], *, where: Where, path: str
) -> Any:
    packed = configs.get(name)
    if packed is None:
        return None
    config_path = f'{path}.typed_per_filter_config["{name}"]'
    if packed.type_url == type_urls.FILTER_CONFIG:
        wrapper = unpack(packed, RC.FilterConfig, where, config_path)
        packed = wrapper.config
        config_path += ".config"
    return convert(unpack(packed, message_type, where, config_path), where, config_path)


def _fault(fault: Any, where: Where, path: str) -> FaultPolicy | None:
    delay_s = None
    delay_percent = 0.0
    if fault.HasField("delay"):
        if fault.delay.WhichOneof("fault_delay_secifier") != "fixed_delay":
            raise where.error(f"{path}.delay", "only fixed_delay is supported")
        delay_s = seconds(fault.delay.fixed_delay, f"{path}.delay.fixed_delay")
        delay_percent = fractional_percent(fault.delay.percentage) if fault.delay.HasField("percentage") else 100.0
    http_status = grpc_status = None
    abort_percent = 0.0
    if fault.HasField("abort"):
        kind = fault.abort.WhichOneof("error_type")
        if kind == "http_status":
            http_status = fault.abort.http_status
        elif kind == "grpc_status":
            grpc_status = fault.abort.grpc_status
        else:
            raise where.error(f"{path}.abort", "only http_status or grpc_status aborts are supported")
        abort_percent = fractional_percent(fault.abort.percentage) if fault.abort.HasField("percentage") else 100.0
    if delay_s is None and http_status is None and grpc_status is None:
        return None
    return FaultPolicy(delay_s, delay_percent, http_status, grpc_status, abort_percent)


def _cors(cors: Any, where: Where, path: str) -> CorsPolicy:
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    origins = tuple(
        _string_match(m, where, f"{path}.allow_origin_string_match[{i}]")
        for i, m in enumerate(cors.allow_origin_string_match)
    )
    max_age = float(cors.max_age) if cors.max_age.strip().isdigit() else None
    return CorsPolicy(
        allow_origins=origins,
        allow_methods=split(cors.allow_methods),
        allow_headers=split(cors.allow_headers),
        expose_headers=split(cors.expose_headers),
        max_age_s=max_age,
        allow_credentials=cors.allow_credentials.value if cors.HasField("allow_credentials") else None,
    )


def _rate_limit(limit: Any, where: Where, path: str) -> RateLimitSpec | None:
    if not limit.HasField("token_bucket"):
        return None
    bucket = limit.token_bucket
    interval = seconds(bucket.fill_interval, f"{path}.token_bucket.fill_interval")
    if interval <= 0:
        raise where.error(f"{path}.token_bucket.fill_interval", "must be greater than 0")
    return RateLimitSpec(bucket.max_tokens, wrapped(bucket, "tokens_per_fill", 1), interval)
