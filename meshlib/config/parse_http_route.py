"""VirtualService ``http[]`` rule pieces: matches, destinations, rewrites, retries, faults.

Kept apart from :mod:`parse_virtual_service` (which walks the rule list and
checks the rule as a whole) so each file stays about one concern.
"""

from __future__ import annotations

import base64
import binascii

from meshlib.config.fields import Fields, Sink, item_fields
from meshlib.config.hosts import host_problem
from meshlib.config.istio_checks import (
    CORS_METHODS,
    cors_header_problem,
    gateway_name_problem,
    header_name_problem,
    header_operation_problem,
    header_value_problem,
    is_dns_label,
)
from meshlib.config.istio_types import DestinationRef
from meshlib.config.model import (
    CorsPolicy,
    DirectResponse,
    HeaderOps,
    HeaderPolicy,
    Labels,
    Redirect,
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
REDIRECT_CODES = (301, 302, 303, 307, 308)
DIRECT_RESPONSE_MAX_BYTES = 1024 * 1024
DIRECT_RESPONSE_WARN_BYTES = 100 * 1024
MS = 0.001


# --------------------------------------------------------------------------- matches


def string_match(
    sink: Sink, path: str, node: Node, *, allow_present: bool, allow_empty_prefix: bool = False
) -> StringMatch | None:
    """An Istio StringMatch: exactly one of exact/prefix/regex (``{}`` = present where allowed).

    As Istio (and Envoy's StringMatcher) require, a ``prefix`` may be empty only
    for ``uri``, and a ``regex`` never.
    """
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
    if kind == "regex" and not value:
        fields.error(kind, "regex string match should not be empty")
        return None
    if kind == "prefix" and not value and not allow_empty_prefix:
        fields.error(kind, "prefix string match should not be empty")
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
        if key != "queryParams":
            problem = header_name_problem(name)
            if problem:
                sink.error(node.line, path, problem)
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
        if node is None:
            return None
        return string_match(sink, match.at(key), node, allow_present=False, allow_empty_prefix=key == "uri")

    ignore_case = bool(match.boolean("ignoreUriCase"))
    uri = single("uri")
    if uri is not None and ignore_case and uri.kind in ("exact", "prefix"):
        uri = StringMatch(uri.kind, uri.value, ignore_case=True)
    match.string("statPrefix")
    source_namespace = match.string("sourceNamespace") or ""
    if source_namespace and not is_dns_label(source_namespace):
        match.error("sourceNamespace", f"sourceNamespace match {source_namespace} is invalid")
    gateways = match.string_list("gateways") or []
    check_gateway_names(match, "gateways", gateways)
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
        source_namespace=source_namespace,
        gateways=tuple(gateways),
    )


def check_gateway_names(fields: Fields, key: str, names: list[str]) -> None:
    """Istio ``validateGatewayNames``; the legacy ``name.namespace`` form is a warning."""
    for i, name in enumerate(names):
        at = f"{fields.at(key)}[{i}]"
        line = fields.line(key)
        if name == "mesh":
            continue
        if "/" not in name and "." in name:
            first, _, rest = name.partition(".")
            fields.sink.warn(
                line, at, f'using legacy gatewayName format "{name}"; prefer the <namespace>/<name> format: '
                f'"{rest.split(".")[0]}/{first}"'
            )
        problem = gateway_name_problem(name)
        if problem:
            fields.sink.error(line, at, problem)


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


def header_ops(ops: Fields | None, *, request: bool = True) -> HeaderOps:
    """``{set, add, remove}`` for requests or responses, with Istio's header name and value rules."""
    if ops is None:
        return HeaderOps()
    values: dict[str, dict[str, str]] = {}
    for key in ("set", "add"):
        values[key] = ops.string_map(key) or {}
        for name, value in values[key].items():
            problem = header_operation_problem(name, request_set=request) or header_value_problem(value)
            if problem:
                ops.sink.error(ops.line(key), f'{ops.at(key)}["{name}"]', problem)
    removed = ops.string_list("remove") or []
    for i, name in enumerate(removed):
        problem = header_operation_problem(name, request_set=False)
        if problem:
            ops.sink.error(ops.line("remove"), f"{ops.at('remove')}[{i}]", problem)
    return HeaderOps(
        set=tuple((k.lower(), v) for k, v in values["set"].items()),
        add=tuple((k.lower(), v) for k, v in values["add"].items()),
        remove=tuple(k.lower() for k in removed),
    )


def header_policy(parent: Fields, key: str = "headers") -> HeaderPolicy | None:
    """``headers: {request, response}``; None when absent."""
    headers = parent.mapping(key, ("request", "response"))
    if headers is None:
        return None
    ops_fields = ("set", "add", "remove")
    return HeaderPolicy(
        request=header_ops(headers.mapping("request", ops_fields)),
        response=header_ops(headers.mapping("response", ops_fields), request=False),
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
        if (pattern is not None and not pattern) or (replacement is not None and not replacement):
            regex.error(None, "UriRegexRewrite requires both Rewrite and Match fields to be specified")
        elif pattern is not None and replacement is not None and check_regex(regex, "match", pattern):
            uri_regex = (pattern, replacement)
    uri = fields.string("uri")
    authority = fields.string("authority")
    if not uri and not authority and regex is None:
        fields.error(None, "rewrite must specify at least one of uri, uriRegexRewrite, or authority")
    return Rewrite(uri=uri, authority=authority, uri_regex=uri_regex)


def redirect(rule: Fields) -> Redirect | None:
    """``redirect``; ``redirectCode`` defaults to 301."""
    fields = rule.mapping("redirect", ("uri", "authority", "port", "derivePort", "scheme", "redirectCode"))
    if fields is None:
        return None
    if fields.has("port") and fields.has("derivePort"):
        fields.error(None, "port and derivePort cannot both be set")
    uri, authority, scheme = fields.string("uri"), fields.string("authority"), fields.string("scheme")
    if not (uri or authority or scheme or fields.has("port") or fields.has("derivePort")):
        fields.error(None, "must set at least one of uri, authority, scheme, port, derivePort")
    if scheme and scheme not in ("http", "https"):
        fields.error("scheme", 'invalid redirect scheme, must be "http" or "https"')
    code = fields.integer("redirectCode")
    if code is not None and code not in REDIRECT_CODES:
        fields.error("redirectCode", "must be one of 301, 302, 303, 307, 308")
        code = None
    derive = fields.enum("derivePort", ("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"))
    return Redirect(
        uri=uri,
        authority=authority,
        scheme=scheme,
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
        if len(body) > DIRECT_RESPONSE_MAX_BYTES:
            content.error(None, "large direct_responses may impact control plane performance, must be less than 1MB")
        elif len(body) > DIRECT_RESPONSE_WARN_BYTES:
            content.warn(None, "large direct_responses may impact control plane performance")
    return DirectResponse(status, body) if status is not None else None


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
    rule.warn("corsPolicy", "not executed by meshlib's in-process clients (no preflight answers or CORS response "
                            "headers; browsers reach services through a gateway); the control plane sends it to Envoy")
    legacy = fields.string_list("allowOrigin")
    if legacy is not None:
        fields.warn("allowOrigin", 'using deprecated setting "allowOrigin", use "allowOrigins" instead')
    origins = [StringMatch("exact", o) for o in legacy or ()]
    for path, node in fields.items("allowOrigins"):
        match = string_match(fields.sink, path, node, allow_present=False)
        if match is not None:
            if not match.value:
                fields.sink.error(node.line, path, "'' is not a valid match type for CORS allow origins")
                continue
            origins.append(match)
    fields.enum("unmatchedPreflights", ("UNSPECIFIED", "FORWARD", "IGNORE"))
    methods = fields.string_list("allowMethods") or []
    for i, method in enumerate(methods):
        if method not in CORS_METHODS:
            fields.sink.error(fields.line("allowMethods"), f"{fields.at('allowMethods')}[{i}]",
                              f'"{method}" is not a supported HTTP method')
    header_lists: dict[str, list[str]] = {}
    for key in ("allowHeaders", "exposeHeaders"):
        header_lists[key] = fields.string_list(key) or []
        for i, name in enumerate(header_lists[key]):
            problem = cors_header_problem(name)
            if problem:
                fields.sink.error(fields.line(key), f"{fields.at(key)}[{i}]", problem)
    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=tuple(methods),
        allow_headers=tuple(header_lists["allowHeaders"]),
        expose_headers=tuple(header_lists["exposeHeaders"]),
        max_age_s=fields.duration("maxAge", precision_s=1),  # Istio: seconds precision
        allow_credentials=fields.boolean("allowCredentials"),
    )
