"""VirtualService ``http[]`` rule pieces: matches, destinations, rewrites, retries, faults.

Kept apart from :mod:`parse_virtual_service` (which walks the rule list and
checks the rule as a whole) so each file stays about one concern.
"""

from __future__ import annotations

import base64
import binascii

from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_problem
from meshlib.config.istio_types import DestinationRef
from meshlib.config.model import (
    ISTIO_DEFAULT_RETRY,
    CorsPolicy,
    DirectResponse,
    FaultPolicy,
    HeaderOps,
    HeaderPolicy,
    Labels,
    Redirect,
    RetryPolicy,
    Rewrite,
    RouteMatch,
    StringMatch,
)
from meshlib.config.regex import regex_problem
from meshlib.config.yaml_nodes import Node

MATCH_FIELDS = frozenset(
    {
        "name",
        "uri",
        "scheme",
        "method",
        "authority",
        "headers",
        "port",
        "sourceLabels",
        "gateways",
        "queryParams",
        "ignoreUriCase",
        "withoutHeaders",
        "sourceNamespace",
        "statPrefix",
    }
)
STRING_MATCH_KINDS = ("exact", "prefix", "regex")
DESTINATION_FIELDS = frozenset({"host", "subset", "port"})
RETRY_FIELDS = frozenset(
    {"attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities", "retryIgnorePreviousHosts", "backoff"}
)
# Envoy's router and gRPC retry conditions (x-envoy-retry-on / x-envoy-retry-grpc-on).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
REDIRECT_CODES = (301, 302, 303, 307, 308)
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
MS = 0.001


# --------------------------------------------------------------------------- matches


def string_match(sink: Sink, path: str, node: Node, *, allow_present: bool) -> StringMatch | None:
    """An Istio StringMatch: exactly one of exact/prefix/regex (``{}`` = present where allowed)."""
    fields = item_fields(sink, path, node, STRING_MATCH_KINDS)
    if fields is None:
        return None
    kinds = [kind for kind in STRING_MATCH_KINDS if fields.has(kind)]
    if not kinds and allow_present and not fields.node.mapping:
        return StringMatch("present")
    if len(kinds) != 1:
        fields.error(None, "must set exactly one of exact, prefix, regex")
        return None
    kind = kinds[0]
    value = fields.string(kind)
    if value is None:
        return None
    if kind == "regex" and not check_regex(fields, kind, value):
        return None
    return StringMatch(kind, value)  # type: ignore[arg-type]


def check_regex(fields: Fields, key: str, pattern: str) -> bool:
    """Report an invalid or non-RE2 regex at ``key``."""
    problem = regex_problem(pattern)
    if problem:
        fields.error(key, f'invalid regex "{pattern}": {problem}')
        return False
    return True


def _named_matches(
    sink: Sink, fields: Fields, key: str, *, allow_present: bool
) -> tuple[tuple[str, StringMatch], ...]:
    out: list[tuple[str, StringMatch]] = []
    for name, path, node in fields.entries(key):
        if not name:
            sink.error(node.line, path, "name must not be empty")
            continue
        match = string_match(sink, path, node, allow_present=allow_present)
        if match is not None:
            # Header names are case-insensitive; the request view lower-cases them too.
            out.append((name.lower() if key != "queryParams" else name, match))
    return tuple(out)


def route_match(sink: Sink, match: Fields) -> RouteMatch:
    """One ``match[]`` block."""

    def single(key: str) -> StringMatch | None:
        node = match.get(key)
        return string_match(sink, match.at(key), node, allow_present=False) if node is not None else None

    ignore_case = bool(match.boolean("ignoreUriCase"))
    uri = single("uri")
    if uri is not None and ignore_case and uri.kind in ("exact", "prefix"):
        uri = StringMatch(uri.kind, uri.value, ignore_case=True)
    match.string("statPrefix")
    return RouteMatch(
        name=match.string("name") or "",
        uri=uri,
        scheme=single("scheme"),
        method=single("method"),
        authority=single("authority"),
        headers=_named_matches(sink, match, "headers", allow_present=True),
        without_headers=_named_matches(sink, match, "withoutHeaders", allow_present=True),
        query_params=_named_matches(sink, match, "queryParams", allow_present=True),
        port=match.integer("port", 1, 65535),
        source_labels=Labels(match.labels("sourceLabels") or {}),
        source_namespace=match.string("sourceNamespace") or "",
        gateways=tuple(match.string_list("gateways") or ()),
    )


# --------------------------------------------------------------------------- destinations


def destination(sink: Sink, parent: Fields, key: str) -> DestinationRef | None:
    """An Istio ``Destination`` at ``parent.key``."""
    dest = parent.mapping(key, DESTINATION_FIELDS)
    if dest is None:
        parent.require(key)
        return None
    host = dest.string("host", required=True)
    subset = dest.string("subset") or ""
    selector = dest.mapping("port", ("number",))
    port = selector.integer("number", 1, 65535) if selector is not None else None
    if host is None:
        return None
    problem = host_problem(host)
    if problem:
        dest.error("host", problem)
        return None
    return DestinationRef(host.lower(), subset, port, dest.line("host"), dest.path, dest.line("subset"))


def header_ops(ops: Fields | None) -> HeaderOps:
    """``{set, add, remove}`` for requests or responses."""
    if ops is None:
        return HeaderOps()
    return HeaderOps(
        set=tuple((k.lower(), v) for k, v in (ops.string_map("set") or {}).items()),
        add=tuple((k.lower(), v) for k, v in (ops.string_map("add") or {}).items()),
        remove=tuple(k.lower() for k in ops.string_list("remove") or ()),
    )


def header_policy(parent: Fields, key: str = "headers") -> HeaderPolicy | None:
    """``headers: {request, response}``; None when absent."""
    headers = parent.mapping(key, ("request", "response"))
    if headers is None:
        return None
    ops_fields = ("set", "add", "remove")
    return HeaderPolicy(
        request=header_ops(headers.mapping("request", ops_fields)),
        response=header_ops(headers.mapping("response", ops_fields)),
    )


# --------------------------------------------------------------------------- actions


def rewrite(rule: Fields) -> Rewrite | None:
    """``rewrite: {uri, authority, uriRegexRewrite}``."""
    fields = rule.mapping("rewrite", ("uri", "authority", "uriRegexRewrite"))
    if fields is None:
        return None
    regex = fields.mapping("uriRegexRewrite", ("match", "rewrite"))
    if regex is not None and fields.has("uri"):
        fields.error(None, "uri and uriRegexRewrite cannot both be set")
    uri_regex = None
    if regex is not None:
        pattern = regex.string("match", required=True)
        replacement = regex.string("rewrite", required=True)
        if pattern is not None and replacement is not None and check_regex(regex, "match", pattern):
            uri_regex = (pattern, replacement)
    return Rewrite(uri=fields.string("uri"), authority=fields.string("authority"), uri_regex=uri_regex)


def redirect(rule: Fields) -> Redirect | None:
    """``redirect``; ``redirectCode`` defaults to 301."""
    fields = rule.mapping("redirect", ("uri", "authority", "port", "derivePort", "scheme", "redirectCode"))
    if fields is None:
        return None
    if fields.has("port") and fields.has("derivePort"):
        fields.error(None, "port and derivePort cannot both be set")
    if not any(fields.has(k) for k in ("uri", "authority", "port", "derivePort", "scheme")):
        fields.error(None, "must set at least one of uri, authority, scheme, port, derivePort")
    code = fields.integer("redirectCode")
    if code is not None and code not in REDIRECT_CODES:
        fields.error("redirectCode", "must be one of 301, 302, 303, 307, 308")
        code = None
    derive = fields.enum("derivePort", ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"))
    return Redirect(
        uri=fields.string("uri"),
        authority=fields.string("authority"),
        scheme=fields.string("scheme"),
        port=fields.integer("port", 1, 65535),
        derive_port=derive or "",  # type: ignore[arg-type]
        code=code or 301,
    )


def direct_response(rule: Fields) -> DirectResponse | None:
    """``directResponse: {status, body: {string | bytes}}``."""
    fields = rule.mapping("directResponse", ("status", "body"))
    if fields is None:
        return None
    status = fields.integer("status", 200, 599, required=True)
    body = b""
    content = fields.mapping("body", ("string", "bytes"))
    if content is not None:
        if content.has("string") == content.has("bytes"):
            content.error(None, "must set exactly one of string, bytes")
        text = content.string("string")
        encoded = content.string("bytes")
        if text is not None:
            body = text.encode()
        elif encoded is not None:
            try:
                body = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                content.error("bytes", "invalid base64")
    return DirectResponse(status, body) if status is not None else None


def retries(rule: Fields) -> tuple[RetryPolicy | None, bool | None]:
    """Istio ``ConvertPolicy``; returns (policy, retryIgnorePreviousHosts when set)."""
    fields = rule.mapping("retries", RETRY_FIELDS)
    if fields is None:
        return ISTIO_DEFAULT_RETRY, None
    attempts = fields.integer("attempts", 0, None)
    per_try = fields.duration("perTryTimeout", minimum_s=MS)
    retry_on_text = fields.string("retryOn")
    remote = fields.boolean("retryRemoteLocalities")
    ignore_previous = fields.boolean("retryIgnorePreviousHosts")
    backoff = fields.duration("backoff", minimum_s=MS)
    retry_on = ISTIO_DEFAULT_RETRY.retry_on
    codes: list[int] = []
    if retry_on_text:
        tokens: list[str] = []
        for raw in retry_on_text.split(","):
            token = raw.strip()
            if not token:
                continue
            if token.isdigit():
                code = int(token)
                if not 100 <= code <= 599:
                    fields.error("retryOn", f'"{token}" is not a valid HTTP status code')
                codes.append(code)
            elif token not in RETRY_ON:
                fields.error("retryOn", f'unknown retry condition "{token}"')
            else:
                tokens.append(token)
        if codes and "retriable-status-codes" not in tokens:
            tokens.append("retriable-status-codes")
        retry_on = tuple(tokens)
    if not attempts:  # attempts 0 (or unset) explicitly disables retries in Istio
        return None, ignore_previous
    base = ISTIO_DEFAULT_RETRY.backoff_base_s if backoff is None else backoff
    return (
        RetryPolicy(
            num_retries=attempts,
            retry_on=retry_on,
            per_try_timeout_s=per_try,
            retriable_status_codes=tuple(codes),
            retry_remote_localities=bool(remote),
            backoff_base_s=base,
            # Envoy: max_interval defaults to 10x base_interval.
            backoff_max_s=ISTIO_DEFAULT_RETRY.backoff_max_s if backoff is None else 10 * base,
            previous_hosts=True if ignore_previous is None else ignore_previous,
        ),
        ignore_previous,
    )


def fault(rule: Fields) -> FaultPolicy | None:
    """``fault: {delay, abort}``; an unset percentage means the fault never fires."""
    fields = rule.mapping("fault", ("delay", "abort"))
    if fields is None:
        return None
    delay_s = None
    delay_percent = 0.0
    delay = fields.mapping("delay", ("fixedDelay", "exponentialDelay", "percentage", "percent"))
    if delay is not None:
        if delay.has("exponentialDelay"):
            delay.error("exponentialDelay", "exponentialDelay is not supported (use fixedDelay)")
        delay_s = delay.duration("fixedDelay", minimum_s=MS)
        if not delay.has("fixedDelay") and not delay.has("exponentialDelay"):
            delay.require("fixedDelay")
        delay_percent = _fault_percent(delay)
    abort_http = abort_grpc = None
    abort_percent = 0.0
    abort = fields.mapping("abort", ("httpStatus", "grpcStatus", "http2Error", "percentage"))
    if abort is not None:
        kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if abort.has(k)]
        if len(kinds) != 1:
            abort.error(None, "must set exactly one of httpStatus, grpcStatus, http2Error")
        abort_http = abort.integer("httpStatus", 200, 599)
        abort_grpc = _grpc_status(abort)
        if abort.string("http2Error") is not None:
            abort.error("http2Error", "http2Error aborts are not supported")
        abort_percent = _fault_percent(abort)
    if delay is None and abort is None:
        fields.error(None, "must set delay or abort")
    return FaultPolicy(delay_s, delay_percent, abort_http, abort_grpc, abort_percent)


def _fault_percent(fields: Fields) -> float:
    if fields.has("percentage") and fields.has("percent"):
        fields.error("percent", "percent and percentage cannot both be set")
    value = fields.percent("percentage")
    if value is None and "percent" in (fields.node.mapping if fields.ok else {}):
        legacy = fields.integer("percent", 0, 100)
        value = float(legacy) if legacy is not None else None
    return value or 0.0


def _grpc_status(abort: Fields) -> int | None:
    node = abort.get("grpcStatus")
    if node is None:
        return None
    value = node.scalar
    if isinstance(value, str) and value.upper() in GRPC_CODES:
        return GRPC_CODES[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16:
        return value
    abort.error("grpcStatus", f'unknown gRPC status "{value}"')
    return None


def cors_policy(rule: Fields) -> CorsPolicy | None:
    """``corsPolicy``; the deprecated ``allowOrigin`` list is read as exact origins."""
    fields = rule.mapping(
        "corsPolicy",
        (
            "allowOrigins",
            "allowOrigin",
            "allowMethods",
            "allowHeaders",
            "exposeHeaders",
            "maxAge",
            "allowCredentials",
            "unmatchedPreflights",
        ),
    )
    if fields is None:
        return None
    origins = [StringMatch("exact", o) for o in fields.string_list("allowOrigin") or ()]
    for path, node in fields.items("allowOrigins"):
        match = string_match(fields.sink, path, node, allow_present=False)
        if match is not None:
            origins.append(match)
    fields.enum("unmatchedPreflights", ("UNSPECIFIED", "FORWARD", "IGNORE"))
    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=tuple(fields.string_list("allowMethods") or ()),
        allow_headers=tuple(fields.string_list("allowHeaders") or ()),
        expose_headers=tuple(fields.string_list("exposeHeaders") or ()),
        max_age_s=fields.duration("maxAge"),
        allow_credentials=fields.boolean("allowCredentials"),
    )
