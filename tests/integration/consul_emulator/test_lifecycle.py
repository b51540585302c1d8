"""Emulator lifecycle: stopping answers parked blocking queries at once; restarting works."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from meshlib.testing.consul import ConsulEmulator


@pytest.mark.asyncio
async def test_stop_answers_parked_blocking_queries_immediately() -> None:
    consul = ConsulEmulator()
    await consul.start()
    consul.add_service("web", 8080)
    async with aiohttp.ClientSession() as http:

        async def watch() -> int:
            async with http.get(f"{consul.url}/v1/health/service/web", params={"index": "999", "wait": "60s"}) as r:
                return r.status

        parked = [asyncio.create_task(watch()) for _ in range(3)]
        await consul.wait_blocked(3)
        started = time.monotonic()
        await consul.stop()
        assert time.monotonic() - started < 2.0  # not the 60 s wait, nor aiohttp's shutdown timeout
        assert await asyncio.gather(*parked) == [200, 200, 200]
    assert consul.blocked == 0


@pytest.mark.asyncio
async def test_restart_on_the_same_port_keeps_state() -> None:
    consul = ConsulEmulator()
    await consul.start()
    port = consul.port
    consul.add_service("web", 8080)
    await consul.stop()
    await consul.start(port=port)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{consul.url}/v1/catalog/services") as resp:
            assert await resp.json() == {"web": []}
    finally:
        await consul.stop()


def test_threaded_emulator_methods_run_in_its_own_loop() -> None:
    import consul as pyconsul

    from meshlib.testing.consul import consul_emulator_in_thread

    with consul_emulator_in_thread(set_env=False) as consul:
        service_id = consul.add_service("web", 8080, tags=["v1"])
        client = pyconsul.Consul(host=consul.host, port=consul.port)
        _, entries = client.health.service("web", passing=True)
        assert [e["Service"]["ID"] for e in entries] == [service_id]
        assert consul.set_check_status(service_id, "critical") == 1
        _, entries = client.health.service("web", passing=True)
        assert entries == []
        consul.go_down("no-leader")  # a coroutine method, awaited in the emulator's loop
        assert consul.faults.leader is False
        consul.come_back()
        assert consul.count("GET /v1/health/service/") == 2


@pytest.mark.asyncio
async def test_fixtures_set_and_restore_consul_http_addr(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from meshlib.testing.consul import consul_emulator, consul_emulator_in_thread

    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.9.9.9:8500")
    async with consul_emulator() as consul:
        assert os.environ["CONSUL_HTTP_ADDR"] == consul.address
    assert os.environ["CONSUL_HTTP_ADDR"] == "10.9.9.9:8500"
    monkeypatch.delenv("CONSUL_HTTP_ADDR")
    with consul_emulator_in_thread() as threaded:
        assert os.environ["CONSUL_HTTP_ADDR"] == threaded.address
    assert "CONSUL_HTTP_ADDR" not in os.environ
