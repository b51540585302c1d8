"""Real aiohttp traffic through a snapshot compiled from Consul state (no Consul needed: the state is given).

Instances listen on their own loopback ports, as Consul instances do; the
mesh host answers on port 80 and on the instances' ports.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import meshlib
from meshlib.config.model import WorkloadIdentity
from meshlib.discovery.consul.compile import compile_consul
from meshlib.discovery.consul.state import ConsulState
from tests.conftest import Backend, BackendFactory
from tests.unit.consul.consul_data import health_entry

pytestmark = pytest.mark.asyncio

HTTP = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
SUBSETS = {"Kind": "service-resolver", "Name": "web", "Subsets": {
    "v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}}}


def entry(backend: Backend, version: str, **kwargs: Any) -> dict[str, Any]:
    return health_entry("web", "127.0.0.1", backend.port, instance_id=f"web-{version}", meta={"version": version},
                        **kwargs)


def mesh_for(services: dict[str, list[dict[str, Any]]], *entries: dict[str, Any]) -> meshlib.Mesh:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in entries:
        by_kind.setdefault(item["Kind"], []).append(item)
    snapshot, problems = compile_consul(ConsulState("dc1", services, by_kind), WorkloadIdentity())
    assert problems == []
    return meshlib.Mesh(snapshot, rng=random.Random(7))


async def test_hosts_on_port_80_and_instance_ports(backend: BackendFactory) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    mesh = mesh_for({"web": [entry(v1, "v1"), entry(v2, "v2")]}, HTTP)
    async with mesh, mesh.session() as http:
        for _ in range(10):
            async with http.get("http://web/r") as resp:
                assert resp.status == 200
        async with http.get(f"http://web.service.consul:{v1.port}/r") as resp:
            assert resp.status == 200
        async with http.get("http://web.service.dc1.consul/r") as resp:
            assert resp.status == 200
    assert v1.hits + v2.hits == 12
    assert min(v1.hits, v2.hits) >= 5  # round robin over both instances, each on its own port


async def test_splitter_canary_and_router_header_route(backend: BackendFactory) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    splitter = {"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 80, "ServiceSubset": "v1"}, {"Weight": 20, "ServiceSubset": "v2"}]}
    router = {"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/beta/", "Header": [{"Name": "x-canary", "Exact": "1"}]}},
         "Destination": {"ServiceSubset": "v2", "PrefixRewrite": "/"}}]}
    mesh = mesh_for({"web": [entry(v1, "v1"), entry(v2, "v2")]}, HTTP, SUBSETS, splitter, router)
    async with mesh, mesh.session() as http:
        for _ in range(400):
            async with http.get("http://web/r") as resp:
                assert resp.status == 200
        split_v1, split_v2 = v1.hits, v2.hits
        for _ in range(5):
            async with http.get("http://web/beta/page", headers={"x-canary": "1"}) as resp:
                assert (await resp.json())["name"] == "v2"
    # 400 draws at p=0.8: sd = 8 requests; allow 4 sd.
    assert abs(split_v1 - 320) <= 32 and split_v1 + split_v2 == 400
    assert [r.path for r in v2.requests[-5:]] == ["/page"] * 5  # PrefixRewrite "/beta/" → "/"


async def test_failover_when_the_subset_goes_critical(backend: BackendFactory) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    resolver = dict(SUBSETS, DefaultSubset="v1", Failover={"v1": {"ServiceSubset": "v2"}})
    healthy = mesh_for({"web": [entry(v1, "v1"), entry(v2, "v2")]}, HTTP, resolver)
    async with healthy, healthy.session() as http:
        for _ in range(5):
            async with http.get("http://web/r") as resp:
                assert (await resp.json())["name"] == "v1"
    failed = mesh_for({"web": [entry(v1, "v1", checks=("critical",)), entry(v2, "v2")]}, HTTP, resolver)
    async with failed, failed.session() as http:
        for _ in range(5):
            async with http.get("http://web/r") as resp:
                assert (await resp.json())["name"] == "v2"
    assert (v1.hits, v2.hits) == (5, 5)


async def test_no_healthy_instance_is_503_not_a_panic(backend: BackendFactory) -> None:
    v1 = await backend("v1")
    mesh = mesh_for({"web": [entry(v1, "v1", checks=("warning",), weights={"Passing": 1, "Warning": 0})]}, HTTP)
    async with mesh, mesh.session() as http, http.get("http://web/r") as resp:
        assert resp.status == 503
    assert v1.hits == 0
