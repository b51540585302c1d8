"""Registration round trips against the emulator: aiohttp and gRPC servers, TTL keep-alive, crash clean-up."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest
from aiohttp import web

from meshlib.aiohttp import consul_registration
from meshlib.discovery.consul.client import ConsulClient, ConsulSettings
from meshlib.discovery.consul.register import HttpCheck, TtlCheck, register_service
from meshlib.grpc import consul_grpc_registration
from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator, ManualClock
from tests.integration.consul.conftest import emulator, served_by, until, url
from tests.ports import free_port

pytestmark = pytest.mark.asyncio


async def health(consul: ConsulEmulator, service: str) -> list[dict[str, Any]]:
    async with ConsulClient(ConsulSettings.resolve(consul.address, env={})) as client:
        entries: list[dict[str, Any]] = (await client.get(f"/v1/health/service/{service}")).json()
    return entries


async def health_until(consul: ConsulEmulator, service: str, predicate: Any, timeout_s: float = 5.0) -> None:
    """Follow ``/v1/health/service`` with blocking queries (Consul's own change notification) until it holds."""
    async with ConsulClient(ConsulSettings.resolve(consul.address, env={})) as client, asyncio.timeout(timeout_s):
        index = 0
        while True:
            response = await client.get(f"/v1/health/service/{service}", index=index, wait_s=timeout_s)
            if predicate(response.json()):
                return
            index = response.index


def check_status(entry: dict[str, Any]) -> str:
    statuses: set[str] = {c["Status"] for c in entry["Checks"] if c["ServiceID"]}
    assert len(statuses) == 1
    return statuses.pop()


async def test_aiohttp_server_registers_keeps_ttl_alive_and_deregisters_on_cleanup() -> None:
    async with emulator(clock=ManualClock()) as consul:
        mesh = Mesh.from_consul(consul.address, rng=random.Random(4))
        async with mesh, mesh.session() as http:
            port = free_port()

            async def hello(request: web.Request) -> web.Response:
                return web.Response(text="registered", headers={"x-backend": "reg"})

            app = web.Application()
            app.router.add_get("/", hello)
            key = consul_registration(
                app, mesh, "web", port, id="web-reg", address="127.0.0.1", tags=("v1",), meta={"team": "a"},
                check=TtlCheck("10s", heartbeat_s=0.05),
            )
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            try:
                registration = app[key]
                [entry] = await health(consul, "web")
                assert entry["Service"]["ID"] == "web-reg"
                assert entry["Service"]["Tags"] == ["v1"]
                assert entry["Service"]["Meta"] == {"team": "a"}
                assert check_status(entry) == "passing"  # the first keep-alive went out with the registration
                await until(mesh, lambda: served_by(mesh, "web") == {f"127.0.0.1:{port}"})
                async with http.get(url("web")) as response:
                    assert (response.status, await response.text()) == (200, "registered")
                # The agent's clock runs 8 s twice (16 s > TTL): the check stays passing only
                # because the keep-alive task marks it passing in between.
                for _ in range(2):
                    beats = registration.heartbeats
                    await consul.advance(8.0)
                    await registration.wait_for_heartbeats(beats + 1)
                    [entry] = await health(consul, "web")
                    assert check_status(entry) == "passing"
            finally:
                await runner.cleanup()  # on_shutdown/on_cleanup: deregister
            assert await health(consul, "web") == []
            assert registration.deregistered
            await until(mesh, lambda: served_by(mesh, "web") == set())


async def test_a_crashed_instance_goes_critical_then_is_reaped() -> None:
    async with emulator(clock=ManualClock()) as consul:
        registration = await register_service(
            None, "web", 9999, id="web-crash", address="127.0.0.1",
            check=TtlCheck("10s", deregister_after="1m", heartbeat_s=3600),
            client=ConsulClient(ConsulSettings.resolve(consul.address, env={})),
        )
        [entry] = await health(consul, "web")
        assert check_status(entry) == "passing"
        assert registration._keepalive is not None
        registration._keepalive.cancel()  # the process "crashes": no more keep-alives, no deregistration
        await consul.advance(11.0)
        [entry] = await health(consul, "web")
        assert check_status(entry) == "critical"
        await consul.advance(61.0)  # DeregisterCriticalServiceAfter
        assert await health(consul, "web") == []
        await registration.client.close()


async def test_http_check_is_run_by_the_agent() -> None:
    async with emulator(check_interval=0.05) as consul:
        port = free_port()
        app = web.Application()

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/health", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = ConsulClient(ConsulSettings.resolve(consul.address, env={}))
        try:
            async with await register_service(
                None, "api", port, id="api-1", address="127.0.0.1", check=HttpCheck("/health", interval="1s"),
                client=client,
            ):
                await health_until(consul, "api", lambda entries: check_status(entries[0]) == "passing")
            assert await health(consul, "api") == []
        finally:
            await client.close()
            await runner.cleanup()


async def test_grpc_server_registration_round_trip() -> None:
    async with emulator() as consul:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = ConsulClient(ConsulSettings.resolve(consul.address, env={}))
        try:
            async with consul_grpc_registration(
                None, "reviews", port, id="reviews-1", address="127.0.0.1", client=client
            ) as registration:
                [entry] = await health(consul, "reviews")
                assert (entry["Service"]["Port"], check_status(entry)) == (port, "passing")
                assert registration.check_id == "service:reviews-1"
            assert await health(consul, "reviews") == []
        finally:
            await client.close()
            await server.stop(None)


async def test_registrations_through_the_mesh_end_with_it() -> None:
    async with emulator() as consul:
        mesh = Mesh.from_consul(consul.address)
        async with mesh:
            registration = await mesh.register("web", 8081, id="web-m", address="127.0.0.1")
            assert [e["Service"]["ID"] for e in await health(consul, "web")] == ["web-m"]
            assert isinstance(registration.check_id, str)
        assert registration.deregistered
        assert await health(consul, "web") == []
        with pytest.raises(ValueError, match="port"):
            await register_service(mesh, "web", 0)
        with pytest.raises(ValueError, match="Go duration"):
            await register_service(mesh, "web", 80, check=TtlCheck("ten seconds"))


async def test_grpc_check_is_called_by_the_agent() -> None:
    from meshlib.discovery.consul.register import GrpcCheck

    serving = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}

    async def check(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return serving

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with emulator(check_interval=0.05) as consul:
            client = ConsulClient(ConsulSettings.resolve(consul.address, env={}))
            try:
                async with consul_grpc_registration(
                    None, "reviews", port, id="reviews-g", address="127.0.0.1", check=GrpcCheck(interval="1s"),
                    client=client,
                ):
                    [entry] = await health(consul, "reviews")
                    grpc_checks = [c for c in entry["Checks"] if c["ServiceID"]]
                    assert grpc_checks[0]["Type"] == "grpc"
                    await health_until(consul, "reviews", lambda entries: check_status(entries[0]) == "passing")
                assert await health(consul, "reviews") == []
            finally:
                await client.close()
    finally:
        await server.stop(None)
