"""Config entry validation: Consul's write-time rules, one exact message per case; the rest keeps working."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib.discovery.consul.entries import parse_entries
from meshlib.discovery.consul.fields import go_duration_string, parse_go_duration


def router(*routes: dict[str, Any], name: str = "web") -> dict[str, Any]:
    return {"Kind": "service-router", "Name": name, "Routes": list(routes)}


def splitter(*splits: dict[str, Any], name: str = "web") -> dict[str, Any]:
    return {"Kind": "service-splitter", "Name": name, "Splits": list(splits)}


def resolver(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"Kind": "service-resolver", "Name": name, **fields}


CORPUS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("splits must sum to 100", splitter({"Weight": 90}, {"Weight": 5, "ServiceSubset": "v2"}),
     ["consul service-splitter/web: Splits: the sum of all split weights must be 100, not 95.000000"]),
    ("0.01 units: 33.33+33.33+33.34 is 100", splitter(
        {"Weight": 33.33, "ServiceSubset": "a"}, {"Weight": 33.33, "ServiceSubset": "b"},
        {"Weight": 33.34, "ServiceSubset": "c"}), []),
    ("0.01 units: 33.333 × 3 is 99.99", splitter(
        {"Weight": 33.333, "ServiceSubset": "a"}, {"Weight": 33.333, "ServiceSubset": "b"},
        {"Weight": 33.334, "ServiceSubset": "c"}),
     ["consul service-splitter/web: Splits: the sum of all split weights must be 100, not 99.989998"]),
    ("0.01 rounding: 99.994 is not 100", splitter({"Weight": 99.994}),
     ["consul service-splitter/web: Splits: the sum of all split weights must be 100, not 99.989998"]),
    ("duplicate split destination",
     splitter({"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "ServiceSubset": "v1"}),
     ['consul service-splitter/web: Splits[1]: split destination occurs more than once: service="web", '
      'subset="v1", namespace="default", partition=""']),
    ("no splits", splitter(), ["consul service-splitter/web: Splits: no splits configured"]),
    ("weight out of range", splitter({"Weight": 150}),
     ["consul service-splitter/web: Splits[0].Weight: must be between 0 and 100, not 150"]),
    ("PrefixRewrite needs a path match", router({"Match": {"HTTP": {"Header": [{"Name": "x", "Exact": "1"}]}},
                                                 "Destination": {"PrefixRewrite": "/v2"}}),
     ["consul service-router/web: Routes[0].Destination.PrefixRewrite: cannot make use of PrefixRewrite without "
      "configuring either PathExact or PathPrefix"]),
    ("PathPrefix must start with /", router({"Match": {"HTTP": {"PathPrefix": "api"}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.PathPrefix: PathPrefix doesn't start with '/': 'api'"]),
    ("one path matcher only", router({"Match": {"HTTP": {"PathExact": "/a", "PathPrefix": "/b"}}}),
     ["consul service-router/web: Routes[0].Match.HTTP: should only contain at most one of PathExact, PathPrefix, "
      "or PathRegex"]),
    ("bad PathRegex (not RE2)", router({"Match": {"HTTP": {"PathRegex": "(?=x)"}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.PathRegex: invalid regex '(?=x)': invalid perl operator: (?= "
      "(RE2 does not support lookahead or lookbehind)"]),
    ("invalid method", router({"Match": {"HTTP": {"Methods": ["GET", "FETCH"]}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.Methods[1]: Methods contains an invalid method 'FETCH'"]),
    ("duplicate method", router({"Match": {"HTTP": {"Methods": ["get", "GET"]}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.Methods[1]: Methods contains 'GET' more than once"]),
    ("invalid RetryOn", router({"Destination": {"RetryOn": ["5xx", "sometimes"]}}),
     ["consul service-router/web: Routes[0].Destination.RetryOn: contains an invalid retry condition: 'sometimes'"]),
    ("header needs exactly one matcher",
     router({"Match": {"HTTP": {"Header": [{"Name": "x", "Exact": "1", "Prefix": "2"}]}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.Header[0]: should only contain one of Present, Exact, Prefix, "
      "Suffix, or Regex"]),
    ("header needs a name", router({"Match": {"HTTP": {"Header": [{"Present": True}]}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.Header[0]: missing required Name field"]),
    ("query param needs one matcher", router({"Match": {"HTTP": {"QueryParam": [{"Name": "q"}]}}}),
     ["consul service-router/web: Routes[0].Match.HTTP.QueryParam[0]: should only contain one of Present, "
      "Exact, or Regex"]),
    ("bad duration", router({"Destination": {"RequestTimeout": "soon"}}),
     ["consul service-router/web: Routes[0].Destination.RequestTimeout: invalid duration 'soon' "
      '(Go syntax: "300ms", "1.5s", "2m")']),
    ("wrong type", router({"Destination": {"NumRetries": "three"}}),
     ["consul service-router/web: Routes[0].Destination.NumRetries: must be an integer, not a string"]),
    ("DefaultSubset must exist", resolver(DefaultSubset="v9", Subsets={"v1": {}}),
     ["consul service-resolver/web: DefaultSubset: DefaultSubset 'v9' is not a valid subset"]),
    ("bad bexpr filter", resolver(Subsets={"v1": {"Filter": "Service.Meta.version =="}}),
     ['consul service-resolver/web: Subsets["v1"].Filter: Filter for subset \'v1\' is not a valid expression: '
      "expected a value at position 23"]),
    ("subset name must be a DNS label", resolver(Subsets={"V_1": {}}),
     ['consul service-resolver/web: Subsets["V_1"]: Subset \'V_1\' is invalid: must be a valid DNS label '
      "(lower-case letters, digits and '-', at most 63 characters)"]),
    ("Redirect and Failover exclusive", resolver(Redirect={"Service": "api"}, Failover={"*": {"Service": "api"}}),
     ["consul service-resolver/web: Redirect: Redirect and Failover cannot both be set"]),
    ("empty redirect", resolver(Redirect={}), ["consul service-resolver/web: Redirect: Redirect is empty"]),
    ("redirect subset without service", resolver(Redirect={"ServiceSubset": "v1"}),
     ["consul service-resolver/web: Redirect.ServiceSubset: Redirect.ServiceSubset defined without Redirect.Service"]),
    ("failover needs a destination", resolver(Failover={"*": {}}),
     ['consul service-resolver/web: Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters '
      "is required"]),
    ("failover key must be a subset", resolver(Failover={"v3": {"Datacenters": ["dc2"]}}),
     ['consul service-resolver/web: Failover["v3"]: not a valid subset subset']),
    ("failover Targets with Datacenters",
     resolver(Failover={"*": {"Datacenters": ["dc2"], "Targets": [{"Datacenter": "dc3"}]}}),
     ['consul service-resolver/web: Failover["*"]: Targets cannot be set with Datacenters']),
    ("negative ConnectTimeout", resolver(ConnectTimeout="-1s"),
     ["consul service-resolver/web: ConnectTimeout: must be >= 0"]),
    ("unknown LB policy", resolver(LoadBalancer={"Policy": "fastest"}),
     ["consul service-resolver/web: LoadBalancer.Policy: Bad LoadBalancer policy: 'fastest' is not supported"]),
    ("hash policies need a hash LB", resolver(LoadBalancer={"Policy": "round_robin",
                                                          "HashPolicies": [{"Field": "header", "FieldValue": "x"}]}),
     ["consul service-resolver/web: LoadBalancer.HashPolicies: HashPolicies specified for non-hash-based Policy: "
      "'round_robin'"]),
    ("hash field needs a value", resolver(LoadBalancer={"Policy": "maglev", "HashPolicies": [{"Field": "cookie"}]}),
     ["consul service-resolver/web: LoadBalancer.HashPolicies[0]: Field 'cookie' was specified without a FieldValue"]),
    ("session cookie with TTL", resolver(LoadBalancer={"Policy": "ring_hash", "HashPolicies": [
        {"Field": "cookie", "FieldValue": "id", "CookieConfig": {"Session": True, "TTL": "10s"}}]}),
     ["consul service-resolver/web: LoadBalancer.HashPolicies[0].CookieConfig: a session cookie cannot have an "
      "associated TTL"]),
    ("passive health check percent", {"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {
        "Defaults": {"PassiveHealthCheck": {"MaxEjectionPercent": 150}}}},
     ["consul service-defaults/web: UpstreamConfig.Defaults.PassiveHealthCheck.MaxEjectionPercent: "
      "MaxEjectionPercent must be a percentage between 0 and 100"]),
    ("negative limits", {"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {
        "Defaults": {"Limits": {"MaxConnections": -1}}}},
     ["consul service-defaults/web: UpstreamConfig.Defaults.Limits.MaxConnections: "
      "max connections cannot be negative"]),
    ("proxy-defaults name", {"Kind": "proxy-defaults", "Name": "web", "Config": {"protocol": "http"}},
     ['consul proxy-defaults/web: Name: invalid name ("web"), only "global" is supported']),
    ("name required", {"Kind": "service-router", "Routes": []}, ["consul service-router/[0]: Name: Name is required"]),
]


@pytest.mark.parametrize(("case", "entry", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_validation_corpus(case: str, entry: dict[str, Any], expected: list[str]) -> None:
    kind = entry["Kind"]
    fine = {"Kind": kind, "Name": "other"}
    if kind == "service-splitter":
        fine["Splits"] = [{"Weight": 100}]
    if kind == "proxy-defaults":
        fine = {}
    entries, problems = parse_entries({kind: [entry, fine] if fine else [entry]})
    assert [str(p) for p in problems] == expected, case
    names = {
        "service-router": entries.routers, "service-splitter": entries.splitters,
        "service-resolver": entries.resolvers, "service-defaults": entries.service_defaults,
    }.get(kind, {})
    if fine:
        assert "other" in names  # the valid neighbour keeps working
    assert ("web" in names) is (not expected)  # an invalid entry is dropped as a whole


def test_snake_case_and_camel_case_read_the_same() -> None:
    camel = {"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/a"}}, "Destination": {"ServiceSubset": "v1", "RequestTimeout": "1m30s",
                                                                 "RetryOnStatusCodes": [503]}}]}
    snake = {"kind": "service-router", "name": "web", "routes": [
        {"match": {"http": {"path_prefix": "/a"}}, "destination": {"service_subset": "v1", "request_timeout": "1m30s",
                                                                  "retry_on_status_codes": [503]}}]}
    a, _ = parse_entries({"service-router": [camel]})
    b, _ = parse_entries({"service-router": [snake]})
    assert a.routers["web"].routes[0].match == b.routers["web"].routes[0].match
    assert a.routers["web"].routes[0].destination == b.routers["web"].routes[0].destination
    assert a.routers["web"].routes[0].destination is not None
    assert a.routers["web"].routes[0].destination.request_timeout_s == 90.0


def test_unknown_fields_are_ignored_and_duplicates_reported() -> None:
    entry = {"Kind": "service-defaults", "Name": "web", "Protocol": "http", "EnvoyExtensions": [], "Hash": 7,
             "CreateIndex": 1, "ModifyIndex": 2}
    entries, problems = parse_entries({"service-defaults": [entry, dict(entry, Protocol="grpc")]})
    assert entries.service_defaults["web"].protocol == "http"
    assert [str(p) for p in problems] == ["consul service-defaults/web: Name: a second entry with this name is ignored"]


def test_protocol_falls_back_to_proxy_defaults_then_tcp() -> None:
    entries, _ = parse_entries({
        "proxy-defaults": [{"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "HTTP2"}}],
        "service-defaults": [{"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}],
    })
    assert (entries.protocol("api"), entries.protocol("web")) == ("grpc", "http2")
    assert parse_entries({})[0].protocol("web") == "tcp"


@pytest.mark.parametrize(
    ("text", "seconds", "rendered"),
    [("15s", 15.0, "15s"), ("1m", 60.0, "1m0s"), ("1h2m3.5s", 3723.5, "1h2m3.5s"), ("500ms", 0.5, "500ms"),
     ("1.5s", 1.5, "1.5s"), ("250us", 0.00025, "250µs"), ("0", 0.0, "0s")],
)
def test_go_durations(text: str, seconds: float, rendered: str) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)
    assert go_duration_string(seconds) == rendered


def test_hostile_sizes_are_bounded() -> None:
    many = [{"Match": {"HTTP": {"PathPrefix": "/"}}}] * 2000
    _, problems = parse_entries({"service-router": [router(*many)]})
    assert [str(p) for p in problems] == ["consul service-router/web: Routes: more than 1024 routes"]
    _, problems = parse_entries({"service-router": ["not an object"]})  # type: ignore[list-item]
    assert [str(p) for p in problems] == ["consul service-router/[0]: an entry must be a JSON object"]
