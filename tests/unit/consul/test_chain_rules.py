"""Discovery-chain rules beyond the documented examples, and hostile graphs."""

from __future__ import annotations

import time
from typing import Any

import pytest

from meshlib.discovery.consul.chain import ChainError, compile_chain
from meshlib.discovery.consul.entries import parse_entries

from .consul_data import build, health_entry, messages, state


def entries(*items: dict[str, Any]) -> Any:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["Kind"], []).append(item)
    parsed, problems = parse_entries(by_kind)
    assert problems == []
    return parsed


HTTP = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}


def test_nested_splitters_flatten_with_multiplied_weights_and_merged_headers() -> None:
    outer = {"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 50, "Service": "api", "RequestHeaders": {"Set": {"x-from": "web", "x-a": "outer"}}},
        {"Weight": 50}]}
    inner = {"Kind": "service-splitter", "Name": "api", "Splits": [
        {"Weight": 20, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-a": "inner"}}},
        {"Weight": 80, "ServiceSubset": "v1"}]}
    resolver = {"Kind": "service-resolver", "Name": "api", "Subsets": {"v1": {}, "v2": {}}}
    chain = compile_chain("web", entries(HTTP, outer, inner, resolver), datacenter="dc1")
    splits = chain.nodes["splitter:web"].splits
    assert [(s.weight, s.next_node) for s in splits] == [
        (10.0, "resolver:v2.api.default.dc1"), (40.0, "resolver:v1.api.default.dc1"),
        (50.0, "resolver:web.default.dc1")]
    assert splits[0].request_headers is not None
    assert dict(splits[0].request_headers.set) == {"x-from": "web", "x-a": "inner"}  # the child wins for requests
    assert "splitter:api" not in chain.nodes  # no longer reachable


def test_redirect_to_another_service_then_its_default_subset() -> None:
    web = {"Kind": "service-resolver", "Name": "web", "Redirect": {"Service": "api"}}
    api = {"Kind": "service-resolver", "Name": "api", "DefaultSubset": "v2", "Subsets": {"v2": {"OnlyPassing": True}}}
    chain = compile_chain("web", entries(web, api), datacenter="dc1")
    assert chain.start_node == "resolver:v2.api.default.dc1"
    target = chain.targets["v2.api.default.dc1"]
    assert target.subset is not None and target.subset.only_passing


def test_failover_targets_skip_self_and_resolve_their_own_default_subset() -> None:
    web = {"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "0s", "Failover": {"*": {"Targets": [
        {"Datacenter": "dc1"}, {"Service": "backup"}, {"Datacenter": "dc2"}]}}}
    backup = {"Kind": "service-resolver", "Name": "backup", "DefaultSubset": "warm", "Subsets": {"warm": {}}}
    chain = compile_chain("web", entries(web, backup), datacenter="dc1")
    resolver = chain.nodes["resolver:web.default.dc1"].resolver
    assert resolver is not None
    assert resolver.failover_targets == ("warm.backup.default.dc1", "web.default.dc2")
    assert resolver.connect_timeout_s == 5.0  # ConnectTimeout < 1ns → 5 s


def test_router_on_tcp_is_an_error_naming_the_router() -> None:
    router = {"Kind": "service-router", "Name": "web", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a"}}}]}
    with pytest.raises(ChainError) as caught:
        compile_chain("web", entries(router), datacenter="dc1")
    assert (caught.value.kind, caught.value.name) == ("service-router", "web")
    assert "does not permit advanced routing or splitting behavior" in caught.value.message


def test_circular_splitters_are_reported() -> None:
    a = {"Kind": "service-splitter", "Name": "a", "Splits": [{"Weight": 100, "Service": "b"}]}
    b = {"Kind": "service-splitter", "Name": "b", "Splits": [{"Weight": 100, "Service": "a"}]}
    with pytest.raises(ChainError) as caught:
        compile_chain("a", entries(HTTP, a, b), datacenter="dc1")
    assert caught.value.message == "detected circular reference: [splitter:a -> splitter:b -> splitter:a]"


def test_deeply_nested_splitters_are_a_problem_not_a_crash() -> None:
    chain = [{"Kind": "service-splitter", "Name": f"s{i}", "Splits": [{"Weight": 100, "Service": f"s{i + 1}"}]}
             for i in range(200)]
    _, problems = build(state({}, HTTP, *chain))
    assert "splitters nested deeper than 64 levels" in " ".join(messages(problems))


def test_splitter_diamonds_stay_cheap() -> None:
    # 14 levels, each splitting 50/50 into two splitters that both lead to the next level.
    items: list[dict[str, Any]] = [HTTP]
    for i in range(14):
        items.append({"Kind": "service-splitter", "Name": f"l{i}", "Splits": [
            {"Weight": 50, "Service": f"a{i}"}, {"Weight": 50, "Service": f"b{i}"}]})
        for side in "ab":
            items.append({"Kind": "service-splitter", "Name": f"{side}{i}", "Splits": [
                {"Weight": 100, "Service": f"l{i + 1}"}]})
    started = time.perf_counter()
    _, problems = build(state({}, *items))
    assert time.perf_counter() - started < 30.0  # generous: guards against exponential or quadratic blow-ups
    assert any("more than 1024 splits" in m or "nested deeper" in m for m in messages(problems))


def test_many_broken_entries_are_dropped_without_quadratic_recompiles() -> None:
    services = {f"s{i}": [health_entry(f"s{i}", f"10.1.{i // 250}.{i % 250}", 80)] for i in range(300)}
    routers = [{"Kind": "service-router", "Name": f"s{i}", "Routes": [
        {"Destination": {"ServiceSubset": "missing"}}]} for i in range(300)]
    started = time.perf_counter()
    mesh, problems = build(state(services, HTTP, *routers))
    assert time.perf_counter() - started < 30.0  # generous: guards against exponential or quadratic blow-ups
    assert len(problems) == 300
    assert len(mesh.snapshot.clusters) == 300


def test_dotted_service_names() -> None:
    mesh, problems = build(state({"api.v1": [health_entry("api.v1", "10.0.0.9", 8000)]}))
    assert problems == []
    assert [e.address for e in mesh.snapshot.clusters["outbound|80||api.v1.service.consul"].endpoints] == [
        "10.0.0.9"]


@pytest.mark.parametrize(("weight", "expected"), [(90, 9000), (33.33, 3333), (14.29, 1429), (0.01, 1), (99.99, 9999)])
def test_split_weights_scale_as_consul_does(weight: float, expected: int) -> None:
    from meshlib.discovery.consul.to_model import envoy_weight

    assert envoy_weight(weight) == expected


def test_connect_failure_listed_once_in_retry_on() -> None:
    router = {"Kind": "service-router", "Name": "web", "Routes": [{"Destination": {
        "RetryOn": ["connect-failure", "5xx"], "RetryOnConnectFailure": True}}]}
    mesh, problems = build(state({"web": [health_entry("web", "10.0.0.1", 80)]}, HTTP, router))
    assert problems == []
    route = mesh.snapshot.route_configs["80"].virtual_hosts[0].routes[0]
    assert route.retry is not None
    assert route.retry.retry_on == ("connect-failure", "5xx")
