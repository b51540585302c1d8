"""Traffic to 1,000 distinct hosts outside the registry (ALLOW_ANY) keeps every metric and stat bounded.

Each request goes to a real loopback server with its own Host header, which the
mesh does not know, so it is passed through as Istio's ``PassthroughCluster``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

import meshlib

pytestmark = pytest.mark.asyncio

HOSTS = 1000


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.host)

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_a_thousand_passthrough_hosts_make_one_series() -> None:
    mesh = meshlib.Mesh.from_files()
    metrics = mesh.enable_metrics(meter_provider=None)
    async with echo_server() as port, mesh, mesh.session() as http:
        stats_keys_before = (set(mesh.stats()["clusters"]), set(mesh.stats()["hosts"]))
        for i in range(HOSTS):
            host = f"h{i}.outside.example"
            async with http.get(f"http://127.0.0.1:{port}/", headers={"Host": host}) as resp:
                assert resp.status == 200
                assert await resp.text() == host  # really passed through, Host unchanged
            if i == 9:
                text_after_ten = mesh.prometheus_text()
        text = mesh.prometheus_text()
        stats = mesh.stats()

    assert metrics.series_count() == 1
    requests = [line for line in text.splitlines() if line.startswith("istio_requests_total{")]
    assert len(requests) == 1
    [line] = requests
    assert 'destination_service_name="PassthroughCluster"' in line
    assert 'destination_service="PassthroughCluster"' in line
    assert line.endswith(f" {HOSTS}")
    assert "outside.example" not in text
    assert len(text) - len(text_after_ten) < 100  # the page does not grow with hosts (only counts' digits)
    assert (set(stats["clusters"]), set(stats["hosts"])) == stats_keys_before  # no stats key per host
