"""Blocking queries: X-Consul-Index per endpoint, index/wait, timeouts and parameter errors."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.contract.consul.conftest import ConsulTarget


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, int, object]:
    async with http.get(url, params=params) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, int(resp.headers.get("X-Consul-Index", "0")), body


@pytest.mark.asyncio
async def test_health_blocks_until_the_service_changes(consul_target: ConsulTarget, unique: str) -> None:
    url = f"{consul_target.url}/v1/health/service/{unique}"
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, {"Name": unique, "Port": 1, "Check": {"TTL": "60s"}})
        status, index, body = await get(http, url)
        assert status == 200
        assert index >= 1
        blocked = asyncio.create_task(get(http, url, index=str(index), wait="20s"))
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done, "a blocking query with the current index must not return before a change"
        async with http.put(f"{consul_target.url}/v1/agent/check/pass/service:{unique}") as resp:
            assert resp.status == 200
        status, new_index, body = await asyncio.wait_for(blocked, 10)
    assert status == 200
    assert new_index > index
    assert [c["Status"] for c in body[0]["Checks"] if c["ServiceID"]] == ["passing"]  # type: ignore[index]


@pytest.mark.asyncio
async def test_blocking_query_times_out_with_the_same_index(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, {"Name": unique, "Port": 1})
        url = f"{consul_target.url}/v1/health/service/{unique}"
        _, index, first = await get(http, url)
        started = time.monotonic()
        status, again, body = await get(http, url, index=str(index), wait="1s")
        elapsed = time.monotonic() - started
    assert status == 200
    assert again == index
    assert body == first
    assert 0.9 <= elapsed < 1.0 + 1.0 / 16 + 1.5  # wait plus at most wait/16 jitter (+ scheduling slack)


@pytest.mark.asyncio
async def test_unrelated_writes_do_not_wake_a_health_watch(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, {"Name": f"{unique}-watched", "Port": 1})
        url = f"{consul_target.url}/v1/health/service/{unique}-watched"
        _, index, _ = await get(http, url)
        blocked = asyncio.create_task(get(http, url, index=str(index), wait="2s"))
        await consul_target.register_service(http, {"Name": f"{unique}-other", "Port": 2})
        _, services_index, _ = await get(http, f"{consul_target.url}/v1/catalog/services")
        status, returned, _ = await blocked
    assert status == 200
    assert services_index > index  # the catalog moved …
    assert returned == index  # … but the watched service's index did not: the query ran to its timeout


@pytest.mark.asyncio
async def test_catalog_services_index_ignores_health_changes(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, {"Name": unique, "Port": 1, "Check": {"TTL": "60s"}})
        _, before, _ = await get(http, f"{consul_target.url}/v1/catalog/services")
        _, health_before, _ = await get(http, f"{consul_target.url}/v1/health/service/{unique}")
        async with http.put(f"{consul_target.url}/v1/agent/check/pass/service:{unique}") as resp:
            assert resp.status == 200
        _, after, _ = await get(http, f"{consul_target.url}/v1/catalog/services")
        _, health_after, _ = await get(http, f"{consul_target.url}/v1/health/service/{unique}")
    assert after == before
    assert health_after > health_before


@pytest.mark.asyncio
async def test_query_headers_and_index_floor(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}-absent") as resp:
            assert resp.status == 200
            assert await resp.json() == []
            assert int(resp.headers["X-Consul-Index"]) >= 1
            assert resp.headers["X-Consul-KnownLeader"] == "true"
            assert resp.headers["X-Consul-LastContact"] == "0"
            assert resp.headers["Content-Type"].startswith("application/json")
        async with http.get(f"{consul_target.url}/v1/catalog/services", params={"stale": ""}) as resp:
            assert resp.status == 200
            assert "X-Consul-LastContact" in resp.headers


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"wait": "soon"}, 400, "Invalid wait time"),
        ({"index": "-1"}, 400, "Invalid index"),
        ({"stale": "", "consistent": ""}, 400, "Cannot specify ?stale with ?consistent"),
        ({"dc": "no-such-dc"}, 500, "No path to datacenter"),
    ],
)
async def test_bad_query_parameters(consul_target: ConsulTarget, params: dict[str, str], status: int,
                                    message: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:  # noqa: SIM117
        async with http.get(f"{consul_target.url}/v1/health/service/web", params=params) as resp:
            assert resp.status == status
            assert message in await resp.text()


@pytest.mark.asyncio
async def test_agent_service_hash_blocking(consul_target: ConsulTarget, unique: str) -> None:
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, {"Name": unique, "Port": 1, "Tags": ["a"]})
        url = f"{consul_target.url}/v1/agent/service/{unique}"
        async with http.get(url) as resp:
            first = await resp.json()
            content_hash = resp.headers["X-Consul-ContentHash"]
        assert first["ContentHash"] == content_hash
        assert (first["Service"], first["Tags"]) == (unique, ["a"])

        async def watch() -> dict[str, object]:
            async with http.get(url, params={"hash": content_hash, "wait": "20s"}) as resp:
                return dict(await resp.json())

        blocked = asyncio.create_task(watch())
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done
        await consul_target.register_service(http, {"Name": unique, "Port": 1, "Tags": ["a", "b"]})
        changed = await asyncio.wait_for(blocked, 10)
    assert changed["Tags"] == ["a", "b"]
    assert changed["ContentHash"] != content_hash
