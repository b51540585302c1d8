"""The emulator's own limits on hostile input (a real agent's limits differ; these are the emulator's)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from meshlib.testing.consul import consul_emulator


@pytest.mark.asyncio
async def test_oversized_deep_and_malformed_bodies_are_refused_cleanly() -> None:
    async with consul_emulator(set_env=False) as consul, aiohttp.ClientSession() as http:
        url = f"{consul.url}/v1/agent/service/register"
        async with http.put(url, data=b"{" + b" " * (2 << 20) + b"}") as resp:
            assert resp.status == 413
        async with http.put(url, data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.text()).startswith("Request decode failed")
        deep: object = "x"
        for _ in range(200):
            deep = {"Name": deep}
        async with http.put(f"{consul.url}/v1/config", data=json.dumps({"Kind": "service-router", "Name": "a",
                                                                         "Routes": [deep]})) as resp:
            assert resp.status == 400
        async with http.put(url, json={"Name": "x", "Meta": {f"k{i}": "v" for i in range(65)}}) as resp:
            assert resp.status == 400
            assert "64 key/value pairs" in await resp.text()
        async with http.get(f"{consul.url}/v1/health/service/web", params={"filter": "x" * 5000}) as resp:
            assert resp.status == 500
            assert "Failed to create boolean expression evaluator" in await resp.text()
        async with http.get(f"{consul.url}/v1/health/service/web", params={"index": "9" * 40}) as resp:
            assert resp.status == 400
        async with http.put(f"{consul.url}/v1/agent/service/register", json={"Name": "ok", "Port": 1}) as resp:
            assert resp.status == 200  # still serving


def test_wait_is_capped_at_ten_minutes_and_defaults_to_five() -> None:
    from aiohttp.test_utils import make_mocked_request

    from meshlib.testing.consul.http_query import parse_query

    capped = parse_query(make_mocked_request("GET", "/v1/health/service/web?wait=100h&index=5"), "dc1")
    assert (capped.wait, capped.min_index) == (600.0, 5)
    default = parse_query(make_mocked_request("GET", "/v1/health/service/web?index=5"), "dc1")
    assert default.wait == 300.0
