"""aiohttp traffic through a Consul-sourced mesh, against the Consul emulator and real loopback backends."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from meshlib.discovery.consul.register import TtlCheck
from meshlib.discovery.consul.source import consul_source_of
from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator
from tests.conftest import BackendFactory
from tests.integration.consul.conftest import HTTP, SUBSETS, names, served_by, until, url, web_v1_and_v2

pytestmark = pytest.mark.asyncio

async def test_instances_follow_consul_health(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a, b = await backend("a"), await backend("b")
    consul.add_service("web", a.port, service_id="web-a")
    consul.add_service("web", b.port, service_id="web-b")
    mesh = Mesh.from_consul(consul.address, rng=random.Random(1))
    async with mesh, mesh.session() as http:
        assert served_by(mesh, "web") == {a.address, b.address}
        assert set(await names(http, 20)) == {"a", "b"}
        consul.set_check_status("web-b", "critical")
        await until(mesh, lambda: served_by(mesh, "web") == {a.address})
        assert await names(http, 20) == Counter({"a": 20})
        consul.set_check_status("web-b", "warning")  # warning = healthy (with the Warning weight)
        await until(mesh, lambda: served_by(mesh, "web") == {a.address, b.address})
        consul.remove_service("web-a")
        await until(mesh, lambda: served_by(mesh, "web") == {b.address})
        assert await names(http, 5) == Counter({"b": 5})


async def test_canary_split_by_service_splitter(consul: ConsulEmulator, backend: BackendFactory) -> None:
    await web_v1_and_v2(consul, backend)
    consul.set_config_entry(
        {"Kind": "service-splitter", "Name": "web",
         "Splits": [{"Weight": 80, "ServiceSubset": "v1"}, {"Weight": 20, "ServiceSubset": "v2"}]}
    )
    mesh = Mesh.from_consul(consul.address, rng=random.Random(7))
    async with mesh, mesh.session() as http:
        seen = await names(http, 400)
        assert 40 <= seen["v2"] <= 130, seen  # 20 % of 400 = 80
        assert seen["v1"] + seen["v2"] == 400
        # moving the split moves the traffic, without a restart
        consul.set_config_entry(
            {"Kind": "service-splitter", "Name": "web",
             "Splits": [{"Weight": 0, "ServiceSubset": "v1"}, {"Weight": 100, "ServiceSubset": "v2"}]}
        )
        await until(mesh, lambda: mesh.explain("GET", url("web"))["destinations"][0]["weight"] in (0, 100)
                    and all(d["weight"] in (0, 100) for d in mesh.explain("GET", url("web"))["destinations"]))
        assert (await names(http, 20))["v2"] == 20


async def test_header_route_by_service_router_and_failover_when_subset_goes_critical(
    consul: ConsulEmulator, backend: BackendFactory
) -> None:
    v1, v2 = await web_v1_and_v2(consul, backend, {**SUBSETS, "Failover": {"v2": {"ServiceSubset": "v1"}}})
    consul.set_config_entry(
        {"Kind": "service-router", "Name": "web", "Routes": [
            {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "yes"}]}},
             "Destination": {"ServiceSubset": "v2"}},
        ]}
    )
    mesh = Mesh.from_consul(consul.address, rng=random.Random(3))
    async with mesh, mesh.session() as http:
        assert await names(http, 10, **{"x-canary": "yes"}) == Counter({"v2": 10})
        assert await names(http, 10) == Counter({"v1": 10})
        consul.set_check_status("web-v2", "critical")
        await until(mesh, lambda: served_by(mesh, "web", **{"x-canary": "yes"}) == {v1.address}
                    or v2.address not in served_by(mesh, "web", **{"x-canary": "yes"}))
        assert await names(http, 10, **{"x-canary": "yes"}) == Counter({"v1": 10})  # failed over, no errors
        consul.set_check_status("web-v2", "passing")
        await until(mesh, lambda: v2.address in served_by(mesh, "web", **{"x-canary": "yes"}))
        assert await names(http, 10, **{"x-canary": "yes"}) == Counter({"v2": 10})


async def test_maintenance_mode_drains_an_instance(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a, b = await backend("a"), await backend("b")
    mesh = Mesh.from_consul(consul.address, rng=random.Random(5))
    async with mesh, mesh.session() as http:
        ra = await mesh.register("web", a.port, id="web-a", address="127.0.0.1", check=TtlCheck("30s"))
        rb = await mesh.register("web", b.port, id="web-b", address="127.0.0.1", check=TtlCheck("30s"))
        await until(mesh, lambda: served_by(mesh, "web") == {a.address, b.address})
        client = consul_source_of(mesh).client
        await client.api.agent.service.maintenance("web-a", True, "deploying")
        await until(mesh, lambda: served_by(mesh, "web") == {b.address})
        assert await names(http, 10) == Counter({"b": 10})
        await client.api.agent.service.maintenance("web-a", False)
        await until(mesh, lambda: served_by(mesh, "web") == {a.address, b.address})
        await ra.deregister()
        await rb.deregister()
        await until(mesh, lambda: served_by(mesh, "web") == set())


async def test_invalid_entry_is_reported_and_the_rest_keeps_working(
    consul: ConsulEmulator, backend: BackendFactory
) -> None:
    _, v2 = await web_v1_and_v2(consul, backend)
    good = {"Kind": "service-splitter", "Name": "web",
            "Splits": [{"Weight": 100, "ServiceSubset": "v2"}]}
    consul.set_config_entry(good)
    mesh = Mesh.from_consul(consul.address, rng=random.Random(9))
    async with mesh, mesh.session() as http:
        assert await names(http, 5) == Counter({"v2": 5})
        # An entry Consul's own write path would refuse, stored as an old agent might have kept it.
        bad = {"Kind": "service-splitter", "Name": "web", "CreateIndex": 0, "ModifyIndex": 0,
               "Splits": [{"Weight": 60, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
        consul.local_store.set_config_entry(bad)
        source = consul_source_of(mesh)
        await until(mesh, lambda: bool(source.problems))
        status = mesh.status()
        problem = status["config_problems"][0]
        assert (problem["kind"], problem["name"]) == ("service-splitter", "web")
        assert "100" in problem["message"] or "sum" in problem["message"]
        assert await names(http, 5) == Counter({"v2": 5})  # the last good splitter stays
        # health still flows while the bad entry is there
        consul.set_check_status("web-v2", "critical")
        await until(mesh, lambda: v2.address not in served_by(mesh, "web"))
        consul.set_check_status("web-v2", "passing")
        await until(mesh, lambda: v2.address in served_by(mesh, "web"))
        assert await names(http, 5) == Counter({"v2": 5})  # still the last good splitter, rebuilds later
        assert mesh.status()["config_problems"]
        consul.set_config_entry(good)
        await until(mesh, lambda: not source.problems)
        assert mesh.status()["config_problems"] == []


async def test_failover_to_another_datacenter(consul: ConsulEmulator, backend: BackendFactory) -> None:
    local, remote = await backend("dc1"), await backend("dc2")
    consul.add_service("web", local.port, service_id="web-dc1")
    consul.add_service("web", remote.port, service_id="web-dc2", datacenter="dc2")
    consul.set_config_entry(HTTP)
    consul.set_config_entry({"Kind": "service-resolver", "Name": "web", "Failover": {"*": {"Datacenters": ["dc2"]}}})
    mesh = Mesh.from_consul(consul.address, rng=random.Random(8))
    async with mesh, mesh.session() as http:
        assert "/v1/health/service/web?dc=dc2" in mesh.status()["watches"]  # watched because the resolver names it
        assert await names(http, 5) == Counter({"dc1": 5})
        consul.set_check_status("web-dc1", "critical")
        await until(mesh, lambda: served_by(mesh, "web") == {remote.address})
        assert await names(http, 5) == Counter({"dc2": 5})
        consul.delete_config_entry("service-resolver", "web")  # no failover any more: the dc2 watch stops
        await until(mesh, lambda: "/v1/health/service/web?dc=dc2" not in mesh.status()["watches"])


async def test_an_empty_consul_syncs_at_once(consul: ConsulEmulator) -> None:
    mesh = Mesh.from_consul(consul.address, initial_sync_timeout_s=30.0)
    async with asyncio.timeout(10.0), mesh:  # well before the 30 s initial deadline
        assert mesh.status()["synced"] is True
        assert mesh.status()["services"] == 0


async def test_the_callers_upstream_config_applies_with_workload_name(
    consul: ConsulEmulator, backend: BackendFactory
) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    consul.set_config_entry({"Kind": "service-defaults", "Name": "frontend", "UpstreamConfig": {
        "Defaults": {"ConnectTimeoutMs": 1500, "Limits": {"MaxConnections": 7}}}})
    cluster = "outbound|80||web.service.consul"
    pools = []
    for name in ("frontend", ""):
        mesh = Mesh.from_consul(consul.address, workload_name=name, rng=random.Random(2))
        async with mesh, mesh.session() as http:
            assert await names(http, 2) == Counter({"a": 2})
            pool = mesh.snapshot.clusters[cluster].policy.connection_pool
            pools.append((pool.connect_timeout_s, pool.max_connections))
    assert pools == [(1.5, 7), (5.0, 1024)]  # the caller's UpstreamConfig; else Consul's 5 s and Envoy's limit
