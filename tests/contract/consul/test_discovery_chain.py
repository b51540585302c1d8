"""``/v1/discovery-chain/:service`` and the chain checks Consul makes when an entry is written."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.contract.consul.conftest import ConsulTarget
from tests.contract.consul.test_config_entries import put_entry


async def chain(http: aiohttp.ClientSession, target: ConsulTarget, service: str,
                **params: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{target.url}/v1/discovery-chain/{service}", params=params) as resp:
        assert resp.status == 200, await resp.text()
        return int(resp.headers["X-Consul-Index"]), (await resp.json())["Chain"]


@pytest.mark.asyncio
async def test_default_chain_is_a_tcp_resolver(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        _, body = await chain(http, consul_target, unique)
    consul_target.record("discovery_chain_default", body)
    datacenter = body["Datacenter"]
    # "<service>.<namespace>.<dc>" in the docs; Consul 1.11+ inserts the partition before the dc.
    target_id = body["StartNode"].removeprefix("resolver:")
    assert target_id.startswith(f"{unique}.default.")
    assert target_id.endswith(f".{datacenter}")
    assert body["ServiceName"] == unique
    assert body["Protocol"] == "tcp"
    node = body["Nodes"][f"resolver:{target_id}"]
    assert node["Type"] == "resolver"
    assert node["Resolver"]["Default"] is True
    assert node["Resolver"]["ConnectTimeout"] == "5s"
    assert node["Resolver"]["Target"] == target_id
    target = body["Targets"][target_id]
    assert (target["Service"], target["Datacenter"]) == (unique, datacenter)
    assert target["SNI"].startswith(f"{target_id}.internal.")


@pytest.mark.asyncio
async def test_splitter_chain_and_blocking(consul_target: ConsulTarget, unique: str) -> None:
    a, b = f"{unique}-a", f"{unique}-b"
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        for name in (unique, a, b):
            assert (await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": name,
                                                          "Protocol": "http"}))[0] == 200
        index, _ = await chain(http, consul_target, unique)
        blocked = asyncio.create_task(chain(http, consul_target, unique, index=str(index), wait="20s"))
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done
        status, text = await put_entry(http, consul_target, {
            "Kind": "service-splitter", "Name": unique,
            "Splits": [{"Weight": 90, "Service": a}, {"Weight": 10, "Service": b}]})
        assert status == 200, text
        new_index, body = await asyncio.wait_for(blocked, 10)
    consul_target.record("discovery_chain_splitter", body)
    assert new_index > index
    assert body["Protocol"] == "http"
    assert body["StartNode"] == f"splitter:{unique}"
    splits = body["Nodes"][f"splitter:{unique}"]["Splits"]
    dc = body["Datacenter"]
    assert [s["Weight"] for s in splits] == [90, 10]
    for split, service in zip(splits, (a, b), strict=True):
        assert split["NextNode"].startswith(f"resolver:{service}.default.")
        assert split["NextNode"].endswith(f".{dc}")
        assert body["Nodes"][split["NextNode"]]["Type"] == "resolver"


@pytest.mark.asyncio
async def test_writes_that_break_a_chain_are_refused(consul_target: ConsulTarget, unique: str) -> None:
    a, b = f"{unique}-a", f"{unique}-b"
    splitter = {"Kind": "service-splitter", "Name": unique,
                "Splits": [{"Weight": 50, "Service": a}, {"Weight": 50, "Service": b}]}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        status, text = await put_entry(http, consul_target, splitter)
        assert status == 500
        assert "does not permit advanced routing or splitting behavior" in text
        for name in (unique, a, b):
            await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": name, "Protocol": "http"})
        assert (await put_entry(http, consul_target, splitter))[0] == 200
        status, text = await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": a,
                                                             "Protocol": "tcp"})
        assert status == 500
        assert "inconsistent protocols" in text
        async with http.get(f"{consul_target.url}/v1/config/service-defaults/{a}") as resp:
            assert (await resp.json())["Protocol"] == "http"  # the refused write changed nothing
