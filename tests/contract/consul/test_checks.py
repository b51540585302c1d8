"""Checks the agent runs itself: HTTP probes, TCP connects, TTL expiry, the critical-service reaper."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from meshlib.testing.consul import ManualClock, consul_emulator, consul_emulator_in_thread
from tests.contract.consul.conftest import REAL_AGENT, SKIP_REAL, ConsulTarget


class Probed:
    """A loopback HTTP server whose health answer the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.status, text=f"status {self.status}")


@pytest_asyncio.fixture
async def probed() -> AsyncIterator[Probed]:
    server = Probed()
    app = web.Application()
    app.router.add_get("/health", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server
    await runner.cleanup()


async def wait_for_status(http: aiohttp.ClientSession, target: ConsulTarget, service: str, check_id: str,
                          want: str) -> dict[str, Any]:
    """Follow the service's health with blocking queries until the check reaches ``want``."""
    index = "0"
    for _ in range(40):
        async with http.get(f"{target.url}/v1/health/service/{service}",
                            params={"index": index, "wait": "5s"}) as resp:
            index = resp.headers["X-Consul-Index"]
            entries = await resp.json()
        for entry in entries:
            for check in entry["Checks"]:
                if check["CheckID"] == check_id and check["Status"] == want:
                    return dict(check)
    raise AssertionError(f"{check_id} never became {want}")


@pytest.mark.asyncio
async def test_http_check_maps_2xx_429_and_5xx(consul_target: ConsulTarget, probed: Probed, unique: str) -> None:
    body = {"Name": unique, "Port": probed.port, "Check": {
        "HTTP": f"http://127.0.0.1:{probed.port}/health", "Interval": "1s", "Timeout": "2s"}}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, body, unique)
        check = await wait_for_status(http, consul_target, unique, f"service:{unique}", "passing")
        assert check["Type"] == "http"
        assert "200" in check["Output"]
        assert check["Definition"]["Interval"] == "1s"
        probed.status = 429
        await wait_for_status(http, consul_target, unique, f"service:{unique}", "warning")
        probed.status = 503
        check = await wait_for_status(http, consul_target, unique, f"service:{unique}", "critical")
        assert "503" in check["Output"]
    assert probed.hits >= 3


@pytest.mark.asyncio
async def test_tcp_check(consul_target: ConsulTarget, probed: Probed, unique: str) -> None:
    body = {"Name": unique, "Port": probed.port, "Checks": [
        {"CheckID": f"{unique}-up", "TCP": f"127.0.0.1:{probed.port}", "Interval": "1s"},
        {"CheckID": f"{unique}-down", "TCP": "127.0.0.1:1", "Interval": "1s", "Timeout": "1s"}]}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, body, unique)
        await wait_for_status(http, consul_target, unique, f"{unique}-up", "passing")
        down = await wait_for_status(http, consul_target, unique, f"{unique}-down", "critical")
    assert down["Type"] == "tcp"


@pytest.mark.asyncio
async def test_ttl_expires_to_critical(consul_target: ConsulTarget, unique: str) -> None:
    body = {"Name": unique, "Port": 1, "Check": {"TTL": "1s"}}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, body, unique)
        async with http.put(f"{consul_target.url}/v1/agent/check/pass/service:{unique}") as resp:
            assert resp.status == 200
        await wait_for_status(http, consul_target, unique, f"service:{unique}", "passing")
        expired = await wait_for_status(http, consul_target, unique, f"service:{unique}", "critical")
    assert expired["Output"] == "TTL expired"


@pytest.mark.asyncio
@pytest.mark.skipif(bool(REAL_AGENT), reason=SKIP_REAL)
async def test_deregister_critical_service_after_with_a_manual_clock() -> None:
    clock = ManualClock()
    async with consul_emulator(clock=clock, set_env=False) as consul, aiohttp.ClientSession() as http:
        body = {"Name": "app", "ID": "app-1", "Port": 1,
                "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "30s"}}
        async with http.put(f"{consul.url}/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200
        await consul.advance(45)  # critical for 45 s: beyond 30 s but under Consul's 1-minute minimum
        assert consul.agent.service("app-1") is not None
        await consul.advance(20)  # 65 s critical: reaped
        assert consul.agent.service("app-1") is None
        async with http.get(f"{consul.url}/v1/health/service/app") as resp:
            assert await resp.json() == []


@pytest.mark.asyncio
@pytest.mark.skipif(bool(REAL_AGENT), reason=SKIP_REAL)
async def test_ttl_keepalive_with_a_manual_clock_and_the_reaper_sparing_a_recovered_service() -> None:
    clock = ManualClock()
    async with consul_emulator(clock=clock, deregister_minimum=0, set_env=False) as consul, \
            aiohttp.ClientSession() as http:
        body = {"Name": "app", "ID": "app-1", "Port": 1,
                "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "20s"}}
        async with http.put(f"{consul.url}/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200
        for _ in range(5):  # a client that keeps its TTL alive is never expired nor reaped
            async with http.put(f"{consul.url}/v1/agent/check/pass/service:app-1") as resp:
                assert resp.status == 200
            await consul.advance(8)
        assert consul.local_store.checks[(consul.agent.node, "service:app-1")].status == "passing"
        await consul.advance(3)  # 11 s without a heartbeat
        check = consul.local_store.checks[(consul.agent.node, "service:app-1")]
        assert (check.status, check.output) == ("critical", "TTL expired")
        await consul.advance(15)
        assert consul.agent.service("app-1") is not None  # critical for 15 s < 20 s
        await consul.advance(10)
        assert consul.agent.service("app-1") is None


def test_checks_run_in_a_threaded_emulator_with_a_fast_interval(unique: str) -> None:
    """The threaded fixture works from a sync test with py-consul (and a check-interval override)."""
    if REAL_AGENT:
        pytest.skip(SKIP_REAL)
    import consul as pyconsul

    with socket.create_server(("127.0.0.1", 0)) as listener, \
            consul_emulator_in_thread(set_env=False, check_interval=0.05) as emulator:
        port = listener.getsockname()[1]
        client = pyconsul.Consul(host=emulator.host, port=emulator.port)
        assert client.agent.service.register(unique, port=port, check=pyconsul.Check.tcp("127.0.0.1", port, "10s"))
        index, entries = client.health.service(unique)
        statuses = [c["Status"] for c in entries[0]["Checks"] if c["ServiceID"]]
        while statuses != ["passing"]:  # blocking queries: each returns when the instance's health changes
            index, entries = client.health.service(unique, index=index, wait="5s")
            statuses = [c["Status"] for c in entries[0]["Checks"] if c["ServiceID"]]
        check = next(c for c in entries[0]["Checks"] if c["ServiceID"])
        assert (check["Type"], check["Output"]) == ("tcp", f"TCP connect 127.0.0.1:{port}: Success")


class HealthServer:
    """A real gRPC server with ``grpc.health.v1.Health/Check`` answering what the test sets."""

    def __init__(self) -> None:
        self.serving: dict[str, bool] = {"": True}
        self.port = 0

    async def check(self, request: bytes, context: Any) -> bytes:
        service = request[2:].decode() if request[:1] == b"\x0a" else ""
        return b"\x08\x01" if self.serving.get(service, False) else b"\x08\x02"


@pytest.mark.asyncio
async def test_grpc_check(consul_target: ConsulTarget, unique: str) -> None:
    grpc = pytest.importorskip("grpc")
    health = HealthServer()
    health.serving["orders"] = True
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health.check)})])
    health.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        body = {"Name": unique, "Port": health.port, "Checks": [
            {"CheckID": f"{unique}-all", "GRPC": f"127.0.0.1:{health.port}", "Interval": "1s"},
            {"CheckID": f"{unique}-orders", "GRPC": f"127.0.0.1:{health.port}/orders", "Interval": "1s"}]}
        async with aiohttp.ClientSession(headers=consul_target.headers) as http:
            await consul_target.register_service(http, body, unique)
            check = await wait_for_status(http, consul_target, unique, f"{unique}-all", "passing")
            assert check["Type"] == "grpc"
            await wait_for_status(http, consul_target, unique, f"{unique}-orders", "passing")
            health.serving["orders"] = False
            await wait_for_status(http, consul_target, unique, f"{unique}-orders", "critical")
    finally:
        await server.stop(None)
