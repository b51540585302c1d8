"""Parse and validate Consul L7 config entries as Consul does at write time.

:func:`parse_entries` takes the raw ``/v1/config/<kind>`` lists and returns
the valid entries plus one :class:`~meshlib.errors.ConfigProblem` per fault,
rendered ``consul <kind>/<name>: <field path>: <message>``. An invalid entry
is dropped as a whole (Consul would have refused to store it); the others
keep working. The rules and most messages are those of
``hashicorp/consul:agent/structs/config_entry_discoverychain.go`` and
``config_entry.go`` (``Validate()``); the field path says where.

Keys are read in CamelCase or snake_case; unknown keys are ignored (a newer
Consul adds fields this version does not know — they must not invalidate an
entry). Compile-time rules (unknown subset, redirect loop, protocol) are in
:mod:`meshlib.discovery.consul.chain`.

>>> entries, problems = parse_entries({"service-splitter": [
...     {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90}, {"Weight": 5, "ServiceSubset": "v2"}]}]})
>>> [str(p) for p in problems]
['consul service-splitter/web: Splits: the sum of all split weights must be 100, not 95.000000']
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from meshlib.config.regex import regex_problem
from meshlib.discovery.consul import entry_parts as parts
from meshlib.discovery.consul.entry_types import (
    CONFIG_KINDS,
    ConfigEntries,
    HttpMatch,
    ProxyDefaults,
    RouteDestination,
    ServiceDefaults,
    ServiceResolver,
    ServiceRoute,
    ServiceRouter,
    ServiceSplit,
    ServiceSplitter,
)
from meshlib.discovery.consul.fields import (
    FieldError,
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

MAX_ENTRIES_PER_KIND = 10_000
MAX_ROUTES = 1024
MAX_SPLITS = 256
MAX_MATCHERS = 64

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})
RETRY_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx", "refused-stream",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})


class _EntryInvalid(Exception):
    """Collected problems of one entry (raised to drop it)."""


def parse_entries(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[ConfigEntries, list[ConfigProblem]]:
    """Every valid entry of the five L7 kinds, and the problems of the invalid ones."""
    problems: list[ConfigProblem] = []
    parsed: dict[str, dict[str, Any]] = {kind: {} for kind in CONFIG_KINDS}
    raw_by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind in CONFIG_KINDS:
        items = raw.get(kind) or ()
        if not isinstance(items, list | tuple):
            problems.append(problem(kind, "*", "", "the config entries must be a JSON list"))
            continue
        if len(items) > MAX_ENTRIES_PER_KIND:
            problems.append(problem(kind, "*", "", f"more than {MAX_ENTRIES_PER_KIND} entries; the rest are ignored"))
            items = items[:MAX_ENTRIES_PER_KIND]
        for index, item in enumerate(items):
            entry = _parse_one(kind, index, item, problems)
            if entry is None:
                continue
            name = entry.name if not isinstance(entry, ProxyDefaults) else "global"
            if name in parsed[kind]:
                problems.append(problem(kind, name, "Name", "a second entry with this name is ignored"))
                continue
            parsed[kind][name] = entry
            raw_by_key[(kind, name)] = item
    proxy = parsed["proxy-defaults"].get("global")
    entries = ConfigEntries(
        service_defaults=MappingProxyType(parsed["service-defaults"]),
        proxy_defaults=proxy if isinstance(proxy, ProxyDefaults) else None,
        routers=MappingProxyType(parsed["service-router"]),
        splitters=MappingProxyType(parsed["service-splitter"]),
        resolvers=MappingProxyType(parsed["service-resolver"]),
        raw=MappingProxyType(raw_by_key),
    )
    return entries, problems


_Parser = Callable[[str, Fields, list[ConfigProblem]], Any]


def _parse_one(kind: str, index: int, item: Any, problems: list[ConfigProblem]) -> Any:
    if not isinstance(item, Mapping):
        problems.append(problem(kind, f"[{index}]", "", "an entry must be a JSON object"))
        return None
    top = Fields(item)
    raw_name = top.get("Name")
    name = raw_name if isinstance(raw_name, str) and raw_name else ""
    label = name or f"[{index}]"
    written_kind = top.get("Kind")
    if isinstance(written_kind, str) and written_kind and written_kind.lower() != kind:
        problems.append(problem(kind, label, "Kind", f"is {written_kind!r} in the {kind} list"))
        return None
    if not name:
        problems.append(problem(kind, label, "Name", "Name is required"))
        return None
    local: list[ConfigProblem] = []
    parser: _Parser = _PARSERS[kind]
    try:
        entry = parser(name, top, local)
    except FieldError as exc:
        local.append(problem(kind, name, exc.field, exc.message))
        entry = None
    except _EntryInvalid:
        entry = None
    if local:
        problems.extend(local)
        return None
    return entry


# --------------------------------------------------------------------------- service-router


def _router(name: str, top: Fields, out: list[ConfigProblem]) -> ServiceRouter:
    routes_raw = as_list(top.get("Routes"), "Routes")
    if len(routes_raw) > MAX_ROUTES:
        raise FieldError("Routes", f"more than {MAX_ROUTES} routes")
    routes: list[ServiceRoute] = []
    for i, item in enumerate(routes_raw):
        route = object_at(item, f"Routes[{i}]")
        match = _http_match(route, out, name)
        dest_raw = as_object(route.get("Destination"), route.at("Destination"))
        destination = _destination(Fields(dest_raw, route.at("Destination"))) if dest_raw is not None else None
        eligible = match is not None and bool(match.path_exact or match.path_prefix)
        if destination is not None:
            if destination.prefix_rewrite and not eligible:
                out.append(problem(
                    "service-router", name, route.at("Destination.PrefixRewrite"),
                    "cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix",
                ))
            for condition in destination.retry_on:
                if condition not in RETRY_CONDITIONS:
                    out.append(problem("service-router", name, route.at("Destination.RetryOn"),
                                       f"contains an invalid retry condition: {condition!r}"))
            for label, timeout in (("RequestTimeout", destination.request_timeout_s),
                                   ("IdleTimeout", destination.idle_timeout_s)):
                if timeout is not None and timeout < 0:
                    out.append(problem("service-router", name, route.at(f"Destination.{label}"), "must be >= 0"))
        routes.append(ServiceRoute(match, destination, item))
    return ServiceRouter(name, tuple(routes))


def _http_match(route: Fields, out: list[ConfigProblem], name: str) -> HttpMatch | None:
    match_raw = as_object(route.get("Match"), route.at("Match"))
    if match_raw is None:
        return None
    http_raw = as_object(Fields(match_raw).get("HTTP"), route.at("Match.HTTP"))
    if http_raw is None:
        return None
    http = Fields(http_raw, route.at("Match.HTTP"))
    exact = as_str(http.get("PathExact"), http.at("PathExact"))
    prefix = as_str(http.get("PathPrefix"), http.at("PathPrefix"))
    regex = as_str(http.get("PathRegex"), http.at("PathRegex"))

    def fail(field: str, message: str) -> None:
        out.append(problem("service-router", name, field, message))

    if exact and not exact.startswith("/"):
        fail(http.at("PathExact"), f"PathExact doesn't start with '/': {exact!r}")
    if prefix and not prefix.startswith("/"):
        fail(http.at("PathPrefix"), f"PathPrefix doesn't start with '/': {prefix!r}")
    if sum(1 for p in (exact, prefix, regex) if p) > 1:
        fail(http.path, "should only contain at most one of PathExact, PathPrefix, or PathRegex")
    if regex and (why := regex_problem(regex)) is not None:
        fail(http.at("PathRegex"), f"invalid regex {regex!r}: {why}")
    headers = parts.header_matches(http, fail)
    query = parts.query_matches(http, fail)
    methods: list[str] = []
    for j, method in enumerate(as_list(http.get("Methods"), http.at("Methods"))[:MAX_MATCHERS]):
        text = as_str(method, f"{http.at('Methods')}[{j}]").upper()
        if text not in HTTP_METHODS:
            fail(f"{http.at('Methods')}[{j}]", f"Methods contains an invalid method {text!r}")
        elif text in methods:
            fail(f"{http.at('Methods')}[{j}]", f"Methods contains {text!r} more than once")
        else:
            methods.append(text)
    return HttpMatch(exact, prefix, regex, headers, query, tuple(methods))


def _destination(dest: Fields) -> RouteDestination:
    codes = []
    for j, code in enumerate(as_list(dest.get("RetryOnStatusCodes"), dest.at("RetryOnStatusCodes"))[:MAX_MATCHERS]):
        value = as_int(code, f"{dest.at('RetryOnStatusCodes')}[{j}]", minimum=100, maximum=599)
        if value is not None:
            codes.append(value)
    retry_on = [as_str(r, f"{dest.at('RetryOn')}[{j}]")
                for j, r in enumerate(as_list(dest.get("RetryOn"), dest.at("RetryOn"))[:MAX_MATCHERS])]
    return RouteDestination(
        service=as_str(dest.get("Service"), dest.at("Service")),
        service_subset=as_str(dest.get("ServiceSubset"), dest.at("ServiceSubset")),
        namespace=as_str(dest.get("Namespace"), dest.at("Namespace")),
        partition=as_str(dest.get("Partition"), dest.at("Partition")),
        prefix_rewrite=as_str(dest.get("PrefixRewrite"), dest.at("PrefixRewrite")),
        request_timeout_s=as_duration(dest.get("RequestTimeout"), dest.at("RequestTimeout")),
        idle_timeout_s=as_duration(dest.get("IdleTimeout"), dest.at("IdleTimeout")),
        num_retries=as_int(dest.get("NumRetries"), dest.at("NumRetries")) or 0,
        retry_on_connect_failure=as_bool(dest.get("RetryOnConnectFailure"), dest.at("RetryOnConnectFailure")),
        retry_on=tuple(retry_on),
        retry_on_status_codes=tuple(codes),
        request_headers=parts.header_modifiers(dest, "RequestHeaders"),
        response_headers=parts.header_modifiers(dest, "ResponseHeaders"),
    )


# --------------------------------------------------------------------------- service-splitter


def _splitter(name: str, top: Fields, out: list[ConfigProblem]) -> ServiceSplitter:
    splits_raw = as_list(top.get("Splits"), "Splits")
    if not splits_raw:
        out.append(problem("service-splitter", name, "Splits", "no splits configured"))
        raise _EntryInvalid
    if len(splits_raw) > MAX_SPLITS:
        raise FieldError("Splits", f"more than {MAX_SPLITS} splits")
    splits: list[ServiceSplit] = []
    seen: set[tuple[str, str, str, str]] = set()
    total_scaled = 0
    for i, item in enumerate(splits_raw):
        split = object_at(item, f"Splits[{i}]")
        weight_raw = split.get("Weight")
        weight = 0.0 if weight_raw is None else _weight(weight_raw, split.at("Weight"))
        entry = ServiceSplit(
            weight=_normalize_weight(weight),
            service=as_str(split.get("Service"), split.at("Service")),
            service_subset=as_str(split.get("ServiceSubset"), split.at("ServiceSubset")),
            namespace=as_str(split.get("Namespace"), split.at("Namespace")),
            partition=as_str(split.get("Partition"), split.at("Partition")),
            request_headers=parts.header_modifiers(split, "RequestHeaders"),
            response_headers=parts.header_modifiers(split, "ResponseHeaders"),
        )
        key = (entry.service or name, entry.service_subset, entry.namespace or "default", entry.partition)
        if key in seen:
            out.append(problem(
                "service-splitter", name, split.path,
                "split destination occurs more than once: "
                f'service="{key[0]}", subset="{key[1]}", namespace="{key[2]}", partition="{key[3]}"',
            ))
        seen.add(key)
        total_scaled += _scale(weight)
        splits.append(entry)
    if total_scaled != 100 * 100:
        out.append(problem("service-splitter", name, "Splits",
                           f"the sum of all split weights must be 100, not {_float32(total_scaled / 100):f}"))
    return ServiceSplitter(name, tuple(splits))


def _weight(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(field, "must be a number between 0 and 100")
    if value < 0 or value > 100:
        raise FieldError(field, f"must be between 0 and 100, not {value:g}")
    return float(value)


def _float32(value: float) -> float:
    """``value`` rounded to a Go float32 (split weights are float32 in Consul)."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def _scale(weight: float) -> int:
    """Consul's scaleWeight: ``float32(w) * 100`` in float32, to hundredths, half away from zero (Go math.Round)."""
    return math.floor(_float32(_float32(weight) * 100.0) + 0.5)


def _normalize_weight(weight: float) -> float:
    return _scale(weight) / 100.0


# --------------------------------------------------------------------------- service-defaults, proxy-defaults


def _service_defaults(name: str, top: Fields, out: list[ConfigProblem]) -> ServiceDefaults:
    protocol = as_str(top.get("Protocol"), "Protocol", max_length=64)
    defaults = None
    overrides: list[Any] = []
    upstream_raw = as_object(top.get("UpstreamConfig"), "UpstreamConfig")
    if upstream_raw is not None:
        upstream = Fields(upstream_raw, "UpstreamConfig")
        defaults_raw = as_object(upstream.get("Defaults"), upstream.at("Defaults"))
        if defaults_raw is not None:
            defaults = parts.upstream_config(Fields(defaults_raw, upstream.at("Defaults")), name, out)
        for fields in objects_in(upstream, "Overrides", MAX_ROUTES):
            override = parts.upstream_config(fields, name, out)
            if not override.name:
                out.append(problem("service-defaults", name, fields.at("Name"), "Name is required"))
            overrides.append(override)
    return ServiceDefaults(name, protocol, defaults, tuple(overrides))


def _proxy_defaults(name: str, top: Fields, out: list[ConfigProblem]) -> ProxyDefaults:
    if name != "global":
        out.append(problem("proxy-defaults", name, "Name", f'invalid name ("{name}"), only "global" is supported'))
        raise _EntryInvalid
    config_raw = as_object(top.get("Config"), "Config") or {}
    # Config is an opaque map with snake_case keys (protocol, connect_timeout_ms); read them exactly.
    protocol = as_str(config_raw.get("protocol"), "Config.protocol", max_length=64)
    timeout = config_raw.get("connect_timeout_ms")
    connect_ms = as_int(timeout, "Config.connect_timeout_ms") if not isinstance(timeout, str) else _int_text(timeout)
    return ProxyDefaults(protocol, connect_ms)


def _int_text(text: str) -> int | None:
    # Consul decodes proxy Config weakly: "5000" is 5000.
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _resolver(name: str, top: Fields, out: list[ConfigProblem]) -> ServiceResolver:
    return parts.resolver(name, top, out)


_PARSERS: Mapping[str, _Parser] = {
    "service-router": _router,
    "service-splitter": _splitter,
    "service-defaults": _service_defaults,
    "proxy-defaults": _proxy_defaults,
    "service-resolver": _resolver,
}
