"""Config entries: CRUD, blocking list, CAS, Go durations, Consul's write-time validation."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.contract.consul.conftest import ConsulTarget


async def put_entry(http: aiohttp.ClientSession, target: ConsulTarget, entry: dict[str, Any],
                    **params: str) -> tuple[int, str]:
    async with http.put(f"{target.url}/v1/config", json=entry, params=params) as resp:
        text = await resp.text()
    if resp.status == 200:
        kind = entry.get("Kind") or entry.get("kind")
        name = entry.get("Name") or entry.get("name")
        target.deregister_later(str(kind), str(name))
    return resp.status, text


@pytest.mark.asyncio
async def test_crud_and_index_fields(consul_target: ConsulTarget, unique: str) -> None:
    client = consul_target.client()
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        status, text = await put_entry(http, consul_target,
                                       {"Kind": "service-defaults", "Name": unique, "Protocol": "http"})
        assert (status, text.strip()) == (200, "true")
        async with http.get(f"{consul_target.url}/v1/config/service-defaults/{unique}") as resp:
            entry = await resp.json()
            assert int(resp.headers["X-Consul-Index"]) >= entry["ModifyIndex"]
        consul_target.record("config_service_defaults", entry)
        assert (entry["Kind"], entry["Name"], entry["Protocol"]) == ("service-defaults", unique, "http")
        assert entry["CreateIndex"] == entry["ModifyIndex"] >= 1
        listed = client.config.list("service-defaults")
        assert unique in {e["Name"] for e in listed}
        assert client.config.get("service-defaults", unique)["Protocol"] == "http"
        async with http.delete(f"{consul_target.url}/v1/config/service-defaults/{unique}") as resp:
            assert resp.status == 200
        async with http.get(f"{consul_target.url}/v1/config/service-defaults/{unique}") as resp:
            assert resp.status == 404
            assert "Config entry not found" in await resp.text()
        assert client.config.get("service-defaults", unique) is None


@pytest.mark.asyncio
async def test_cas_writes_and_deletes(consul_target: ConsulTarget, unique: str) -> None:
    entry = {"Kind": "service-defaults", "Name": unique, "Protocol": "http"}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        assert await put_entry(http, consul_target, entry, cas="0") == (200, "true")
        assert (await put_entry(http, consul_target, entry, cas="0"))[1].strip() == "false"  # exists already
        async with http.get(f"{consul_target.url}/v1/config/service-defaults/{unique}") as resp:
            modify = (await resp.json())["ModifyIndex"]
        assert (await put_entry(http, consul_target, {**entry, "Protocol": "grpc"}, cas=str(modify)))[1].strip() == \
            "true"
        async with http.delete(f"{consul_target.url}/v1/config/service-defaults/{unique}",
                               params={"cas": str(modify)}) as resp:
            assert (await resp.text()).strip() == "false"  # stale CAS index
        async with http.get(f"{consul_target.url}/v1/config/service-defaults/{unique}") as resp:
            current = await resp.json()
        assert current["Protocol"] == "grpc"
        async with http.delete(f"{consul_target.url}/v1/config/service-defaults/{unique}",
                               params={"cas": str(current["ModifyIndex"])}) as resp:
            assert (await resp.text()).strip() == "true"


@pytest.mark.asyncio
async def test_list_blocks_until_a_write_of_that_kind(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await put_entry(http, consul_target, {"Kind": "service-resolver", "Name": f"{unique}-a"})
        async with http.get(f"{consul_target.url}/v1/config/service-resolver") as resp:
            index = int(resp.headers["X-Consul-Index"])

        async def watch() -> tuple[int, list[dict[str, Any]]]:
            async with http.get(f"{consul_target.url}/v1/config/service-resolver",
                                params={"index": str(index), "wait": "20s"}) as resp:
                return int(resp.headers["X-Consul-Index"]), await resp.json()

        blocked = asyncio.create_task(watch())
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done
        await put_entry(http, consul_target, {"Kind": "service-resolver", "Name": f"{unique}-b",
                                              "ConnectTimeout": "15s"})
        new_index, entries = await asyncio.wait_for(blocked, 10)
    assert new_index > index
    names = {e["Name"] for e in entries}
    assert {f"{unique}-a", f"{unique}-b"} <= names


@pytest.mark.asyncio
async def test_snake_case_keys_and_go_durations(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": unique, "Protocol": "http"})
        status, text = await put_entry(http, consul_target, {
            "kind": "service-resolver", "name": unique, "connect_timeout": "90s", "request_timeout": "1500ms",
            "default_subset": "v1", "subsets": {"v1": {"filter": "Service.Meta.version == v1", "only_passing": True}},
        })
        assert status == 200, text
        status, text = await put_entry(http, consul_target, {
            "Kind": "service-router", "Name": unique,
            "Routes": [{"Match": {"HTTP": {"path_prefix": "/admin"}},
                        "Destination": {"service_subset": "v1", "request_timeout": 15_000_000_000,
                                        "num_retries": 2}}],
        })
        assert status == 200, text
        async with http.get(f"{consul_target.url}/v1/config/service-resolver/{unique}") as resp:
            resolver = await resp.json()
        async with http.get(f"{consul_target.url}/v1/config/service-router/{unique}") as resp:
            router = await resp.json()
    consul_target.record("config_service_resolver", resolver)
    consul_target.record("config_service_router", router)
    assert resolver["ConnectTimeout"] == "1m30s"
    assert resolver["RequestTimeout"] == "1.5s"
    assert resolver["DefaultSubset"] == "v1"
    assert resolver["Subsets"]["v1"] == {"Filter": "Service.Meta.version == v1", "OnlyPassing": True}
    destination = router["Routes"][0]["Destination"]
    assert destination["RequestTimeout"] == "15s"
    assert destination["ServiceSubset"] == "v1"
    assert destination["NumRetries"] == 2
    assert router["Routes"][0]["Match"]["HTTP"]["PathPrefix"] == "/admin"


@pytest.mark.asyncio
async def test_splitter_weights_are_rounded_to_hundredths(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": unique, "Protocol": "http"})
        await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": f"{unique}-b", "Protocol": "http"})
        status, text = await put_entry(http, consul_target, {
            "Kind": "service-splitter", "Name": unique,
            "Splits": [{"Weight": 33.333}, {"Weight": 66.667, "Service": f"{unique}-b"}],
        })
        assert status == 200, text
        async with http.get(f"{consul_target.url}/v1/config/service-splitter/{unique}") as resp:
            splitter = await resp.json()
    assert [s["Weight"] for s in splitter["Splits"]] == pytest.approx([33.33, 66.67], abs=1e-4)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"Kind": "service-splitter", "Splits": [{"Weight": 90}, {"Weight": 5, "Service": "{u}-b"}]},
         "the sum of all split weights must be 100, not 95.000000"),
        ({"Kind": "service-splitter", "Splits": []}, "no splits configured"),
        ({"Kind": "service-splitter", "Splits": [{"Weight": 50}, {"Weight": 50}]},
         "split destination occurs more than once"),
        ({"Kind": "service-router", "Routes": [{"Destination": {"PrefixRewrite": "/x"}}]},
         "cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix"),
        ({"Kind": "service-router", "Routes": [{"Match": {"HTTP": {"PathPrefix": "/a", "PathExact": "/b"}}}]},
         "should only contain at most one of PathExact, PathPrefix, or PathRegex"),
        ({"Kind": "service-router", "Routes": [{"Match": {"HTTP": {"Methods": ["FETCH"]}}}]},
         'Methods contains an invalid method "FETCH"'),
        ({"Kind": "service-router", "Routes": [{"Destination": {"RetryOn": ["sometimes"]}}]},
         'invalid retry condition: "sometimes"'),
        ({"Kind": "service-resolver", "DefaultSubset": "v9"}, 'DefaultSubset "v9" is not a valid subset'),
        ({"Kind": "service-resolver", "Redirect": {"Service": "x"}, "Failover": {"*": {"Service": "y"}}},
         "Redirect and Failover cannot both be set"),
        ({"Kind": "service-resolver", "LoadBalancer": {"Policy": "fastest"}}, 'Bad LoadBalancer policy: "fastest"'),
        ({"Kind": "service-resolver", "LoadBalancer": {"Policy": "round_robin",
                                                       "HashPolicies": [{"Field": "header", "FieldValue": "x"}]}},
         "HashPolicies specified for non-hash-based Policy"),
    ],
)
async def test_entries_consul_rejects_at_write_time(consul_target: ConsulTarget, unique: str,
                                                    entry: dict[str, Any], message: str) -> None:
    entry = {**entry, "Name": unique}
    for split in entry.get("Splits", []):
        if "Service" in split:
            split["Service"] = split["Service"].replace("{u}", unique)
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": unique, "Protocol": "http"})
        await put_entry(http, consul_target, {"Kind": "service-defaults", "Name": f"{unique}-b", "Protocol": "http"})
        status, text = await put_entry(http, consul_target, entry)
    assert status == 500  # Consul's HTTP layer answers a failed Validate() from the server RPC with 500
    assert message in text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"Kind": "service-nonsense", "Name": "x"}, "invalid config entry kind: service-nonsense"),
        ({"Name": "x"}, "Request decoding failed"),
        ({"Kind": "service-defaults", "Name": "x", "Protocl": "http"}, "Protocl"),
        ({"Kind": "service-resolver", "Name": "x", "ConnectTimeout": "soon"}, "Request decoding failed"),
    ],
)
async def test_undecodable_entries_are_400(consul_target: ConsulTarget, entry: dict[str, Any], message: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        status, text = await put_entry(http, consul_target, entry)
    assert status == 400
    assert message in text


@pytest.mark.asyncio
async def test_proxy_defaults_must_be_named_global(consul_target: ConsulTarget) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        status, text = await put_entry(http, consul_target, {"Kind": "proxy-defaults", "Name": "local",
                                                             "Config": {"protocol": "http"}})
    assert status == 500
    assert 'only "global" is supported' in text
