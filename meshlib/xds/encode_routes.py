"""Model route configurations → Envoy ``RouteConfiguration`` (RDS), shaped like istiod's.

istiod's shapes followed (``pilot/pkg/networking/core/route/route.go``):

- one Envoy route per Istio match block (a rule with N ``match`` entries
  becomes N consecutive routes with the same action); no match → ``prefix: "/"``;
  route name = rule name, plus ``.<match name>`` when the block is named;
  ``metadata.filter_metadata["istio"]["config"]`` names the VirtualService.
- uri exact/prefix/regex → ``path`` / ``prefix`` / ``safe_regex`` (RE2 is
  Envoy's only engine, so no ``google_re2`` field: it is deprecated);
  ``ignoreUriCase`` → ``case_sensitive: false``; method/authority/scheme →
  header matchers on ``:method`` / ``:authority`` / ``:scheme``; headers and
  query parameters use ``string_match`` (or ``present_match``);
  ``withoutHeaders`` → ``invert_match``. An empty header ``prefix`` is sent as
  ``present_match`` (Envoy rejects an empty prefix; the meaning is the same).
- one destination of weight 100 without header operations → ``route.cluster``,
  otherwise ``weighted_clusters``. ENVOY and gRPC clients get zero-weight
  destinations dropped, as istiod does; MESHLIB keeps them (exact round trip).
- ``timeout`` always set (``0s`` = disabled: Istio turns off Envoy's 15 s
  default); with no timeout ``max_stream_duration`` is ``{0s, grpc_timeout_header_max: 0s}``
  as istiod sends. Proxyless gRPC reads only ``max_stream_duration``: it gets
  ``max_stream_duration`` and ``grpc_timeout_header_max`` = the timeout.
- retries: ``retry_on`` CSV, ``num_retries``, ``per_try_timeout``,
  ``retriable_status_codes``, ``retry_back_off``, previous-hosts predicate +
  ``host_selection_retry_max_attempts``, previous-priorities for
  ``retryRemoteLocalities``. gRPC gets no retry policy with 0 retries.
- fault → ``typed_per_filter_config["envoy.filters.http.fault"]`` (HTTPFault,
  FractionalPercent per MILLION); CORS → ``typed_per_filter_config["envoy.filters.http.cors"]``.
- consistent-hash inputs (a cluster property in the model) → the route's
  ``hash_policy``, taken from the first destination cluster that has them.

meshlib extensions, carried the Envoy way: a route's local rate limit is
``typed_per_filter_config["envoy.filters.http.local_ratelimit"]`` (Envoy
enforces it too when the filter is in the chain, as the ENVOY listener has).
For MESHLIB clients ``filter_metadata["meshlib"]`` on each route adds the
:class:`RouteSource`, ``group`` (which Envoy routes came from one model route),
the workload-decided match fields and redirect ``derive_port``.

gRPC clients get neither CORS nor rate-limit per-filter configs (their filter
chain lacks those filters, and gRPC NACKs configs of unknown filters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from meshlib.config.model import (
    Cluster,
    CorsPolicy,
    FaultPolicy,
    HashPolicy,
    HeaderOps,
    RateLimitSpec,
    RetryPolicy,
    Route,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
)
from meshlib.xds import type_urls
from meshlib.xds.clients import ClientKind
from meshlib.xds.encode_common import ISTIO_KEY, duration, fractional, pack, set_meshlib_metadata

RC = route_components_pb2
_APPEND = base_pb2.HeaderValueOption.HeaderAppendAction
REDIRECT_CODES = {
    301: RC.RedirectAction.MOVED_PERMANENTLY,
    302: RC.RedirectAction.FOUND,
    303: RC.RedirectAction.SEE_OTHER,
    307: RC.RedirectAction.TEMPORARY_REDIRECT,
    308: RC.RedirectAction.PERMANENT_REDIRECT,
}
RATE_LIMIT_STAT_PREFIX = "http_local_rate_limiter"
ISTIO_CONFIG_PREFIX = "/apis/networking.istio.io/v1alpha3/namespaces/"


def encode_route_configuration(config: RouteConfiguration, client: ClientKind, clusters: Mapping[str, Cluster]) -> Any:
    """The RDS resource for one model route configuration."""
    out = route_pb2.RouteConfiguration(name=config.name)
    for vhost in config.virtual_hosts:
        out.virtual_hosts.append(encode_virtual_host(vhost, client, clusters))
    return out


def encode_virtual_host(vhost: VirtualHost, client: ClientKind, clusters: Mapping[str, Cluster]) -> Any:
    out = RC.VirtualHost(name=vhost.name, domains=vhost.domains)
    for group, route in enumerate(vhost.routes):
        for match in route.matches or (None,):
            out.routes.append(encode_route(route, match, group, client, clusters))
    return out


def encode_route(
    route: Route, match: RouteMatch | None, group: int, client: ClientKind, clusters: Mapping[str, Cluster]
) -> Any:
    """One Envoy route: ``route``'s action under one of its match blocks."""
    grpc = client is ClientKind.GRPC_PROXYLESS
    name = route.source.rule_name
    if match is not None and match.name:
        name = f"{name}.{match.name}" if name else match.name
    out = RC.Route(name=name)
    _match(out.match, match)

    if route.redirect is not None:
        redirect = route.redirect
        action = out.redirect
        if redirect.uri is not None:
            action.path_redirect = redirect.uri
        if redirect.authority is not None:
            action.host_redirect = redirect.authority
        if redirect.scheme is not None:
            action.scheme_redirect = redirect.scheme
        if redirect.port is not None:
            action.port_redirect = redirect.port
        action.response_code = REDIRECT_CODES.get(redirect.code, RC.RedirectAction.MOVED_PERMANENTLY)
    elif route.direct_response is not None:
        out.direct_response.status = route.direct_response.status
        if route.direct_response.body:
            out.direct_response.body.inline_bytes = route.direct_response.body
    else:
        _route_action(out.route, route, client, clusters)

    _header_ops(out, route.headers.request, route.headers.response)
    if route.fault is not None:
        out.typed_per_filter_config[type_urls.FAULT_FILTER_NAME].CopyFrom(pack(_fault(route.fault)))
    if not grpc:
        if route.cors is not None:
            out.typed_per_filter_config[type_urls.CORS_FILTER_NAME].CopyFrom(pack(_cors(route.cors)))
        if route.rate_limit is not None:
            limit = local_rate_limit(route.rate_limit)
            out.typed_per_filter_config[type_urls.LOCAL_RATE_LIMIT_FILTER_NAME].CopyFrom(pack(limit))
        source = route.source.virtual_service
        if source:
            namespace, _, vs_name = source.partition("/")
            config = f"{ISTIO_CONFIG_PREFIX}{namespace}/virtual-service/{vs_name}"
            out.metadata.filter_metadata[ISTIO_KEY].update({"config": config})
    if client is ClientKind.MESHLIB:
        set_meshlib_metadata(out.metadata, _meshlib_extras(route, match, group))
    return out


# ----------------------------------------------------------------------------- match


def _match(out: Any, match: RouteMatch | None) -> None:
    uri = match.uri if match is not None else None
    if uri is None or uri.kind == "present":
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.regex = uri.value
    if uri is not None and uri.ignore_case and uri.kind in ("exact", "prefix"):
        out.case_sensitive.value = False
    if match is None:
        return
    for pseudo, value in ((":method", match.method), (":authority", match.authority), (":scheme", match.scheme)):
        if value is not None:
            out.headers.append(_header_matcher(pseudo, value, invert=False))
    for header, value in match.headers:
        out.headers.append(_header_matcher(header, value, invert=False))
    for header, value in match.without_headers:
        out.headers.append(_header_matcher(header, value, invert=True))
    for param, value in match.query_params:
        matcher = out.query_parameters.add(name=param)
        if value.kind == "present" or (value.kind == "prefix" and not value.value):
            matcher.present_match = True
        else:
            matcher.string_match.CopyFrom(string_matcher(value))


def _header_matcher(name: str, value: StringMatch, *, invert: bool) -> Any:
    out = RC.HeaderMatcher(name=name, invert_match=invert)
    if value.kind == "present" or (value.kind == "prefix" and not value.value):
        out.present_match = True
    else:
        out.string_match.CopyFrom(string_matcher(value))
    return out


def string_matcher(value: StringMatch) -> Any:
    out = string_pb2.StringMatcher()
    if value.kind == "exact":
        out.exact = value.value
    elif value.kind == "prefix":
        out.prefix = value.value
    elif value.kind == "regex":
        out.safe_regex.regex = value.value
    if value.ignore_case and value.kind in ("exact", "prefix"):
        out.ignore_case = True
    return out


# ----------------------------------------------------------------------------- action


def _route_action(out: Any, route: Route, client: ClientKind, clusters: Mapping[str, Cluster]) -> None:
    grpc = client is ClientKind.GRPC_PROXYLESS
    destinations = route.destinations
    if client is not ClientKind.MESHLIB and any(d.weight > 0 for d in destinations):
        destinations = tuple(d for d in destinations if d.weight > 0)
    if len(destinations) == 1 and destinations[0].weight == 100 and _no_ops(destinations[0].headers):
        out.cluster = destinations[0].cluster
    else:
        weighted = out.weighted_clusters
        for dest in destinations:
            entry = weighted.clusters.add(name=dest.cluster)
            entry.weight.value = dest.weight
            _header_ops(entry, dest.headers.request, dest.headers.response)

    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.uri is not None:
            out.prefix_rewrite = rewrite.uri
        if rewrite.uri_regex is not None:
            out.regex_rewrite.pattern.regex = rewrite.uri_regex[0]
            out.regex_rewrite.substitution = rewrite.uri_regex[1]
        if rewrite.authority is not None:
            out.host_rewrite_literal = rewrite.authority

    timeout = route.timeout_s or 0.0
    if grpc:
        if route.timeout_s:
            out.max_stream_duration.max_stream_duration.CopyFrom(duration(timeout))
            out.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeout))
    else:
        out.timeout.CopyFrom(duration(timeout))
        if not route.timeout_s:
            out.max_stream_duration.max_stream_duration.CopyFrom(duration(0))
            out.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0))

    if route.retry is not None and not (grpc and route.retry.num_retries <= 0):
        out.retry_policy.CopyFrom(retry_policy(route.retry, grpc=grpc))
    for mirror in route.mirrors:
        policy = out.request_mirror_policies.add(cluster=mirror.cluster)
        policy.runtime_fraction.default_value.CopyFrom(fractional(mirror.percent))
    for dest in destinations:
        cluster = clusters.get(dest.cluster)
        if cluster is not None and cluster.policy.lb.hash_policies:
            for hash_policy in cluster.policy.lb.hash_policies:
                out.hash_policy.append(_hash_policy(hash_policy))
            break


def _no_ops(headers: Any) -> bool:
    return bool(headers.request.empty and headers.response.empty)


def retry_policy(retry: RetryPolicy, *, grpc: bool = False) -> Any:
    out = RC.RetryPolicy(retry_on=",".join(retry.retry_on))
    out.num_retries.value = retry.num_retries
    if retry.per_try_timeout_s is not None:
        out.per_try_timeout.CopyFrom(duration(retry.per_try_timeout_s))
    out.retriable_status_codes.extend(retry.retriable_status_codes)
    out.retry_back_off.base_interval.CopyFrom(duration(retry.backoff_base_s))
    out.retry_back_off.max_interval.CopyFrom(duration(retry.backoff_max_s))
    if grpc:
        return out
    if retry.previous_hosts:
        predicate = out.retry_host_predicate.add(name=type_urls.PREVIOUS_HOSTS_NAME)
        predicate.typed_config.CopyFrom(pack(previous_hosts_pb2.PreviousHostsPredicate()))
    out.host_selection_retry_max_attempts = retry.host_selection_attempts
    if retry.retry_remote_localities:
        out.retry_priority.name = type_urls.PREVIOUS_PRIORITIES_NAME
        config = previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
        out.retry_priority.typed_config.CopyFrom(pack(config))
    return out


def _hash_policy(policy: HashPolicy) -> Any:
    out = RC.RouteAction.HashPolicy(terminal=policy.terminal)
    if policy.kind == "header":
        out.header.header_name = policy.name
    elif policy.kind == "cookie":
        out.cookie.name = policy.name
        if policy.cookie_ttl_s is not None:
            out.cookie.ttl.CopyFrom(duration(policy.cookie_ttl_s))
        if policy.cookie_path:
            out.cookie.path = policy.cookie_path
    elif policy.kind == "source_ip":
        out.connection_properties.source_ip = True
    else:
        out.query_parameter.name = policy.name
    return out


def _header_ops(out: Any, request: HeaderOps, response: HeaderOps) -> None:
    _add_headers(out.request_headers_to_add, request)
    out.request_headers_to_remove.extend(request.remove)
    _add_headers(out.response_headers_to_add, response)
    out.response_headers_to_remove.extend(response.remove)


def _add_headers(target: Any, ops: HeaderOps) -> None:
    for key, value in ops.set:
        option = target.add(append_action=_APPEND.OVERWRITE_IF_EXISTS_OR_ADD)
        option.header.key, option.header.value = key, value
    for key, value in ops.add:
        option = target.add(append_action=_APPEND.APPEND_IF_EXISTS_OR_ADD)
        option.header.key, option.header.value = key, value


# ----------------------------------------------------------------------------- per-filter configs


def _fault(fault: FaultPolicy) -> Any:
    out = fault_pb2.HTTPFault()
    if fault.delay_s is not None:
        delay = common_fault_pb2.FaultDelay()
        delay.fixed_delay.CopyFrom(duration(fault.delay_s))
        delay.percentage.CopyFrom(fractional(fault.delay_percent))
        out.delay.CopyFrom(delay)
    if fault.abort_http_status is not None or fault.abort_grpc_status is not None:
        abort = out.abort
        if fault.abort_grpc_status is not None:
            abort.grpc_status = fault.abort_grpc_status
        else:
            abort.http_status = fault.abort_http_status
        abort.percentage.CopyFrom(fractional(fault.abort_percent))
    return out


def _cors(cors: CorsPolicy) -> Any:
    out = cors_pb2.CorsPolicy(
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    for origin in cors.allow_origins:
        out.allow_origin_string_match.append(string_matcher(origin))
    if cors.max_age_s is not None:
        out.max_age = str(round(cors.max_age_s))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out


def local_rate_limit(limit: RateLimitSpec) -> Any:
    """Envoy's local rate limit filter config for one token bucket, enabled and enforced at 100%."""
    out = local_rate_limit_pb2.LocalRateLimit(stat_prefix=RATE_LIMIT_STAT_PREFIX)
    out.token_bucket.max_tokens = limit.max_tokens
    out.token_bucket.tokens_per_fill.value = limit.tokens_per_fill
    out.token_bucket.fill_interval.CopyFrom(duration(limit.fill_interval_s))
    hundred = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
    out.filter_enabled.default_value.CopyFrom(hundred)
    out.filter_enforced.default_value.CopyFrom(hundred)
    return out


def _meshlib_extras(route: Route, match: RouteMatch | None, group: int) -> dict[str, Any]:
    source = route.source
    extras: dict[str, Any] = {
        "group": group,
        "source": {
            "virtual_service": source.virtual_service,
            "rule_name": source.rule_name,
            "rule_index": source.rule_index,
            "file": source.file,
            "line": source.line,
        },
    }
    if match is not None:
        extras["match"] = {
            "name": match.name,
            "port": match.port,
            "source_labels": dict(match.source_labels),
            "source_namespace": match.source_namespace,
            "gateways": list(match.gateways),
        }
        if match.uri is None:
            extras["match"]["uri_absent"] = True
        elif match.uri.kind == "present":
            extras["match"]["uri_present"] = True
    else:
        extras["match_all"] = True
    if route.redirect is not None and route.redirect.derive_port:
        extras["derive_port"] = route.redirect.derive_port
    return extras
