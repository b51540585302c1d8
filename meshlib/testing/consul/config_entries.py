"""Config entries as ``PUT /v1/config`` receives them: decoding, normalising, validating.

Field shapes follow ``hashicorp/consul:api/config_entry*.go``; the write-time
checks and their messages follow each entry's ``Validate()`` in
``agent/structs/config_entry*.go``. Consul answers a failed ``Validate()`` with
**500** and the bare message (the error comes back from the server's RPC and
the HTTP layer has no better code for it); decoding problems are 400
``Request decoding failed: …``. Kinds the emulator has no schema for are stored
as sent (keys unchecked).
"""

from __future__ import annotations

import re
from typing import Any

from meshlib.testing.consul.durations import parse_go_duration
from meshlib.testing.consul.schema import (
    ANY,
    BOOL,
    DURATION,
    FLOAT,
    INT,
    STR,
    STRLIST,
    STRMAP,
    DecodeError,
    FieldType,
    ListOf,
    MapOf,
    Obj,
    decode,
)

HEADER_MODIFIERS = Obj({"Add": STRMAP, "Set": STRMAP, "Remove": STRLIST})
_COMMON: dict[str, FieldType] = {"Kind": STR, "Name": STR, "Namespace": STR, "Partition": STR, "Meta": STRMAP,
           "CreateIndex": INT, "ModifyIndex": INT}
_MESH_GATEWAY = Obj({"Mode": STR})
_UPSTREAM: dict[str, FieldType] = {
    "Name": STR, "Namespace": STR, "Partition": STR, "Peer": STR, "EnvoyListenerJSON": STR, "EnvoyClusterJSON": STR,
    "Protocol": STR, "ConnectTimeoutMs": INT,
    "Limits": Obj({"MaxConnections": INT, "MaxPendingRequests": INT, "MaxConcurrentRequests": INT}),
    "PassiveHealthCheck": Obj({"Interval": DURATION, "MaxFailures": INT, "EnforcingConsecutive5xx": INT,
                               "MaxEjectionPercent": INT, "BaseEjectionTime": DURATION}),
    "MeshGateway": _MESH_GATEWAY, "BalanceOutboundConnections": STR,
}
_TARGET: dict[str, FieldType] = {
    "Service": STR, "ServiceSubset": STR, "Namespace": STR, "Partition": STR, "Datacenter": STR, "Peer": STR}

SCHEMAS: dict[str, Obj] = {
    "service-router": Obj({**_COMMON, "Routes": ListOf(Obj({
        "Match": Obj({"HTTP": Obj({
            "PathExact": STR, "PathPrefix": STR, "PathRegex": STR,
            "Header": ListOf(Obj({"Name": STR, "Present": BOOL, "Exact": STR, "Prefix": STR, "Suffix": STR,
                                  "Regex": STR, "Invert": BOOL})),
            "QueryParam": ListOf(Obj({"Name": STR, "Present": BOOL, "Exact": STR, "Regex": STR})),
            "Methods": STRLIST,
        })}),
        "Destination": Obj({
            "Service": STR, "ServiceSubset": STR, "Namespace": STR, "Partition": STR, "PrefixRewrite": STR,
            "RequestTimeout": DURATION, "IdleTimeout": DURATION, "NumRetries": INT, "RetryOnConnectFailure": BOOL,
            "RetryOnStatusCodes": ListOf(INT), "RetryOn": STRLIST,
            "RequestHeaders": HEADER_MODIFIERS, "ResponseHeaders": HEADER_MODIFIERS,
        }),
    }))}),
    "service-splitter": Obj({**_COMMON, "Splits": ListOf(Obj({
        "Weight": FLOAT, "Service": STR, "ServiceSubset": STR, "Namespace": STR, "Partition": STR,
        "RequestHeaders": HEADER_MODIFIERS, "ResponseHeaders": HEADER_MODIFIERS,
    }))}),
    "service-resolver": Obj({
        **_COMMON,
        "DefaultSubset": STR,
        "Subsets": MapOf(Obj({"Filter": STR, "OnlyPassing": BOOL})),
        "Redirect": Obj({**_TARGET, "SamenessGroup": STR}),
        "Failover": MapOf(Obj({
            "Service": STR, "ServiceSubset": STR, "Namespace": STR, "Datacenters": STRLIST,
            "Targets": ListOf(Obj(_TARGET)), "Policy": Obj({"Mode": STR, "Regions": STRLIST}),
            "SamenessGroup": STR,
        })),
        "ConnectTimeout": DURATION,
        "RequestTimeout": DURATION,
        "PrioritizeByLocality": Obj({"Mode": STR}),
        "LoadBalancer": Obj({
            "Policy": STR,
            "RingHashConfig": Obj({"MinimumRingSize": INT, "MaximumRingSize": INT}),
            "LeastRequestConfig": Obj({"ChoiceCount": INT}),
            "HashPolicies": ListOf(Obj({
                "Field": STR, "FieldValue": STR, "CookieConfig": Obj({"Session": BOOL, "TTL": DURATION, "Path": STR}),
                "SourceIP": BOOL, "Terminal": BOOL,
            })),
        }),
    }),
    "service-defaults": Obj({
        **_COMMON, "Protocol": STR, "Mode": STR, "TransparentProxy": ANY, "MutualTLSMode": STR,
        "MeshGateway": _MESH_GATEWAY, "Expose": ANY, "ExternalSNI": STR,
        "UpstreamConfig": Obj({"Defaults": Obj(_UPSTREAM), "Overrides": ListOf(Obj(_UPSTREAM))}),
        "Destination": ANY, "MaxInboundConnections": INT, "LocalConnectTimeoutMs": INT, "LocalRequestTimeoutMs": INT,
        "BalanceInboundConnections": STR, "RateLimits": ANY, "EnvoyExtensions": ANY,
    }),
    "proxy-defaults": Obj({
        **_COMMON, "Config": ANY, "Mode": STR, "TransparentProxy": ANY, "MutualTLSMode": STR,
        "MeshGateway": _MESH_GATEWAY, "Expose": ANY, "AccessLogs": ANY, "EnvoyExtensions": ANY,
        "FailoverPolicy": ANY, "PrioritizeByLocality": ANY,
    }),
}
OTHER_KINDS = frozenset({
    "ingress-gateway", "terminating-gateway", "service-intentions", "mesh", "exported-services", "api-gateway",
    "bound-api-gateway", "http-route", "tcp-route", "inline-certificate", "file-system-certificate",
    "sameness-group", "jwt-provider", "control-plane-request-limit",
})
KNOWN_KINDS = frozenset(SCHEMAS) | OTHER_KINDS
_VALID_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
_VALID_RETRY_ON = {"5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
                   "refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
_LB_POLICIES = {"", "random", "round_robin", "least_request", "ring_hash", "maglev"}
_HASH_FIELDS = {"header", "cookie", "query_parameter"}
_SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class ConfigEntryError(ValueError):
    """A rejected entry; ``status`` is Consul's HTTP code (400 decode, 500 validation)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decode_entry(body: Any) -> dict[str, Any]:
    """The canonical entry (CamelCase keys, Go durations), or :class:`ConfigEntryError`."""
    if not isinstance(body, dict):
        raise ConfigEntryError("Request decoding failed: expected a JSON object", 400)
    kind = next((v for k, v in body.items() if str(k).lower() == "kind"), None)
    if not isinstance(kind, str) or not kind:
        raise ConfigEntryError("Request decoding failed: Payload does not contain a kind/Kind key at the top level",
                               400)
    if kind not in KNOWN_KINDS:
        raise ConfigEntryError(f"Request decoding failed: invalid config entry kind: {kind}", 400)
    schema = SCHEMAS.get(kind)
    if schema is None:
        entry = dict(body)
        entry["Kind"] = kind
        entry.setdefault("Name", next((v for k, v in body.items() if str(k).lower() == "name"), ""))
        return entry
    try:
        entry = decode(body, schema, strict=True)
    except DecodeError as exc:
        raise ConfigEntryError(f"Request decoding failed: 1 error(s) decoding:\n\n* {exc.detail}", 400) from None
    entry.pop("CreateIndex", None)
    entry.pop("ModifyIndex", None)
    entry.setdefault("Name", "")
    _normalize(entry)
    return dict(entry)


def _normalize(entry: dict[str, Any]) -> None:
    if entry["Kind"] == "service-splitter":
        for split in entry.get("Splits") or []:
            if "Weight" in split:
                split["Weight"] = round(float(split["Weight"]) * 100) / 100
    if entry["Kind"] == "proxy-defaults" and not entry.get("Name"):
        entry["Name"] = "global"


def validate_entry(entry: dict[str, Any]) -> str | None:
    """The entry's ``Validate()`` message (Consul answers it with 500), or None."""
    kind, name = entry["Kind"], entry.get("Name") or ""
    if kind == "proxy-defaults":
        return None if name == "global" else f'invalid name ("{name}"), only "global" is supported'
    if not name:
        return "Name is required"
    validator = _VALIDATORS.get(kind)
    return validator(entry) if validator else None


def _validate_router(entry: dict[str, Any]) -> str | None:
    for i, route in enumerate(entry.get("Routes") or []):
        http = ((route.get("Match") or {}).get("HTTP")) or {}
        rewrite_ok = False
        path_parts = 0
        for field in ("PathExact", "PathPrefix"):
            if http.get(field):
                rewrite_ok = True
                path_parts += 1
                if not http[field].startswith("/"):
                    return f"Route[{i}] {field} doesn't start with '/': \"{http[field]}\""
        if http.get("PathRegex"):
            path_parts += 1
        if path_parts > 1:
            return f"Route[{i}] should only contain at most one of PathExact, PathPrefix, or PathRegex"
        for j, header in enumerate(http.get("Header") or []):
            if not header.get("Name"):
                return f"Route[{i}] Header[{j}] missing required Name field"
            if sum(bool(header.get(f)) for f in ("Present", "Exact", "Regex", "Prefix", "Suffix")) != 1:
                return f"Route[{i}] Header[{j}] should only contain one of Present, Exact, Prefix, Suffix, or Regex"
        for j, query in enumerate(http.get("QueryParam") or []):
            if not query.get("Name"):
                return f"Route[{i}] QueryParam[{j}] missing required Name field"
            if sum(bool(query.get(f)) for f in ("Present", "Exact", "Regex")) != 1:
                return f"Route[{i}] QueryParam[{j}] should only contain one of Present, Exact, or Regex"
        seen: set[str] = set()
        for method in http.get("Methods") or []:
            if method not in _VALID_METHODS:
                return f'Route[{i}] Methods contains an invalid method "{method}"'
            if method in seen:
                return f'Route[{i}] Methods contains "{method}" more than once'
            seen.add(method)
        destination = route.get("Destination") or {}
        if destination.get("PrefixRewrite") and not rewrite_ok:
            return f"Route[{i}] cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix"
        for condition in destination.get("RetryOn") or []:
            if condition not in _VALID_RETRY_ON:
                return f'Route[{i}] contains an invalid retry condition: "{condition}"'
    return None


def _validate_splitter(entry: dict[str, Any]) -> str | None:
    splits = entry.get("Splits") or []
    if not splits:
        return "no splits configured"
    seen: set[tuple[str, str, str, str]] = set()
    for split in splits:
        key = (split.get("Service") or entry["Name"], split.get("ServiceSubset") or "",
               split.get("Namespace") or "", split.get("Partition") or "")
        if key in seen:
            return ("split destination occurs more than once: "
                    f'service="{key[0]}", subset="{key[1]}", namespace="{key[2]}", partition="{key[3]}"')
        seen.add(key)
    total = sum(round(float(s.get("Weight") or 0) * 100) for s in splits)
    if total != 10000:
        return f"the sum of all split weights must be 100, not {total / 100:f}"
    return None


def _validate_resolver(entry: dict[str, Any]) -> str | None:
    name = entry["Name"]
    subsets: dict[str, Any] = entry.get("Subsets") or {}
    for subset_name, subset in subsets.items():
        if not subset_name:
            return "Subset defined with empty name"
        if not _SUBSET_NAME.match(subset_name) or len(subset_name) > 63:
            return f'Subset "{subset_name}" is invalid: must be a valid DNS label'
        problem = filter_problem((subset or {}).get("Filter") or "")
        if problem is not None:
            return f'Filter for subset "{subset_name}" is not a valid expression: {problem}'
    default = entry.get("DefaultSubset") or ""
    if default and default not in subsets:
        return f'DefaultSubset "{default}" is not a valid subset'
    redirect = entry.get("Redirect")
    failover: dict[str, Any] = entry.get("Failover") or {}
    if redirect is not None:
        if failover:
            return "Redirect and Failover cannot both be set"
        if not any(redirect.get(f) for f in ("Service", "ServiceSubset", "Namespace", "Partition", "Datacenter",
                                             "Peer")):
            return "Redirect is empty"
        if not redirect.get("Service"):
            for field in ("ServiceSubset", "Namespace", "Partition", "Peer"):
                if redirect.get(field):
                    return f"Redirect.{field} defined without Redirect.Service"
        elif redirect.get("ServiceSubset") and redirect["Service"] == name and redirect["ServiceSubset"] not in subsets:
            return f'Redirect.ServiceSubset "{redirect["ServiceSubset"]}" is not a valid subset of "{name}"'
    for subset_name, rule in failover.items():
        prefix = f'Bad Failover["{subset_name}"]: '
        if subset_name != "*" and subset_name not in subsets:
            return prefix + "not a valid subset subset"
        if not any(rule.get(f) for f in ("Service", "ServiceSubset", "Namespace", "Datacenters", "Targets")):
            return prefix + "one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required"
        if rule.get("ServiceSubset") and rule.get("Service", name) in ("", name) \
                and rule["ServiceSubset"] not in subsets:
            subset, service = rule["ServiceSubset"], rule.get("Service", "")
            return f'{prefix}ServiceSubset "{subset}" is not a valid subset of "{service}"'
        if rule.get("Datacenters") and rule.get("Targets"):
            return prefix + "Targets cannot be set with Datacenters"
        if rule.get("ServiceSubset") and rule.get("Targets"):
            return prefix + "Targets cannot be set with ServiceSubset"
        if rule.get("Service") and rule.get("Targets"):
            return prefix + "Targets cannot be set with Service"
        if any(dc == "" for dc in rule.get("Datacenters") or []):
            return f'Bad Failover["{subset_name}"].Datacenters: found empty datacenter'
    for field in ("ConnectTimeout", "RequestTimeout"):
        if entry.get(field) and parse_go_duration(entry[field]) < 0:
            return f"Bad {field} '{entry[field]}', must be >= 0"
    return _validate_load_balancer(entry.get("LoadBalancer"))


def _validate_load_balancer(lb: dict[str, Any] | None) -> str | None:
    if lb is None:
        return None
    policy = lb.get("Policy") or ""
    if policy not in _LB_POLICIES:
        return f'Bad LoadBalancer policy: "{policy}" is not supported'
    if policy != "ring_hash" and lb.get("RingHashConfig") is not None:
        return ("Bad LoadBalancer configuration. RingHashConfig specified for incompatible load balancing policy "
                f'"{policy}"')
    if policy != "least_request" and lb.get("LeastRequestConfig") is not None:
        return ("Bad LoadBalancer configuration. LeastRequestConfig specified for incompatible load balancing "
                f'policy "{policy}"')
    if policy not in ("ring_hash", "maglev") and lb.get("HashPolicies"):
        return f'Bad LoadBalancer configuration: HashPolicies specified for non-hash-based Policy: "{policy}"'
    for i, hp in enumerate(lb.get("HashPolicies") or []):
        field, value = hp.get("Field") or "", hp.get("FieldValue") or ""
        if field and field not in _HASH_FIELDS:
            return f'Bad LoadBalancer HashPolicy[{i}]: "{field}" is not a supported field'
        if hp.get("SourceIP") and field:
            return (f"Bad LoadBalancer HashPolicy[{i}]: "
                    f'A single hash policy cannot hash both a source address and a "{field}"')
        if hp.get("SourceIP") and value:
            return f"Bad LoadBalancer HashPolicy[{i}]: A FieldValue cannot be specified when hashing SourceIP"
        if field and not value:
            return f'Bad LoadBalancer HashPolicy[{i}]: Field "{field}" was specified without a FieldValue'
        if value and not field:
            return f"Bad LoadBalancer HashPolicy[{i}]: FieldValue requires a Field to apply to"
        cookie = hp.get("CookieConfig")
        if cookie is not None:
            if field != "cookie":
                return f'Bad LoadBalancer HashPolicy[{i}]: cookie_config provided for "{field}"'
            if cookie.get("Session") and cookie.get("TTL") and parse_go_duration(cookie["TTL"]) != 0:
                return f"Bad LoadBalancer HashPolicy[{i}]: a session cookie cannot have an associated TTL"
    return None


def filter_problem(expression: str) -> str | None:
    """Why a bexpr ``Filter`` does not parse (via meshlib's evaluator when installed), or None."""
    if not expression:
        return None
    try:
        from meshlib.discovery.consul import bexpr  # the chain engineer's evaluator; optional here
    except ImportError:
        return None
    parse = getattr(bexpr, "parse", None) or getattr(bexpr, "compile_filter", None)
    if parse is None:
        return None
    try:
        parse(expression)
    except ValueError as exc:
        return str(exc)
    return None


_VALIDATORS = {
    "service-router": _validate_router,
    "service-splitter": _validate_splitter,
    "service-resolver": _validate_resolver,
}
