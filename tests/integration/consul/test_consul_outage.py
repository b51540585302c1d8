"""Consul goes away under steady traffic: zero failed requests, status shows it, resync within 5 s of its return."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator
from tests.conftest import BackendFactory
from tests.integration.consul.conftest import served_by, until, until_status, url

pytestmark = pytest.mark.asyncio


class SteadyTraffic:
    """One request after another through the mesh, counting statuses (and transport errors)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.statuses: Counter[int | str] = Counter()
        self.by_backend: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._target = 0
        self._reached = asyncio.Event()

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    async def _run(self) -> None:
        async with self.mesh.session() as http:
            while not self._stop.is_set():
                try:
                    async with http.get(url("web")) as response:
                        await response.read()
                        self.statuses[response.status] += 1
                        if self.total >= self._target:
                            self._reached.set()
                        self.by_backend[response.headers.get("x-backend", "-")] += 1
                except Exception as exc:  # counted, never raised: the test asserts there are none
                    self.statuses[type(exc).__name__] += 1
                await asyncio.sleep(0.002)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def at_least(self, more: int) -> None:
        self._target = self.total + more
        self._reached.clear()
        async with asyncio.timeout(15.0):
            await self._reached.wait()


async def test_outage_keeps_serving_reports_and_resyncs(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a, b = await backend("a"), await backend("b")
    consul.add_service("web", a.port, service_id="web-a")
    consul.add_service("web", b.port, service_id="web-b")
    mesh = Mesh.from_consul(consul.address, rng=random.Random(11))
    async with mesh:
        traffic = SteadyTraffic(mesh)
        traffic.start()
        await traffic.at_least(20)
        await consul.go_down("refuse")
        await until_status(mesh, lambda st: all(w["consecutive_failures"] >= 3 for w in st["watches"].values()))
        status = mesh.status()
        assert status["connected"] is False
        assert status["watches_failing"] == status["watches_total"] == 7
        assert all(not w["connected"] and "cannot reach Consul" in w["last_error"] for w in status["watches"].values())
        assert status["last_error"], status
        await traffic.at_least(100)  # still served from the last good configuration
        # While Consul is away, b goes critical; the mesh must learn it once Consul is back.
        consul.set_check_status("web-b", "critical")
        assert served_by(mesh, "web") == {a.address, b.address}
        await consul.come_back()
        back = time.monotonic()
        await until(mesh, lambda: served_by(mesh, "web") == {a.address}, 5.0)  # resynced
        await until_status(mesh, lambda st: st["connected"], 5.0)
        resynced_after = time.monotonic() - back
        print(f"resynced {resynced_after:.2f}s after Consul's return; {traffic.total} requests so far")
        assert resynced_after <= 5.0
        status = mesh.status()
        assert all(w["consecutive_failures"] == 0 for w in status["watches"].values())
        assert status["last_error"] == []
        await traffic.at_least(20)
        await traffic.stop()
    assert set(traffic.statuses) == {200}, traffic.statuses  # zero failed requests


async def test_no_leader_keeps_the_last_good_configuration(consul: ConsulEmulator, backend: BackendFactory) -> None:
    a = await backend("a")
    consul.add_service("web", a.port, service_id="web-a")
    mesh = Mesh.from_consul(consul.address, rng=random.Random(2))
    async with mesh, mesh.session() as http:
        await consul.go_down("error", status=500, body="rpc error making call: No cluster leader")
        await until_status(
            mesh, lambda st: all("No cluster leader" in (w["last_error"] or "") for w in st["watches"].values())
        )
        for _ in range(10):
            async with http.get(url("web")) as response:
                assert response.status == 200
        assert served_by(mesh, "web") == {a.address}
        await consul.come_back()
        await until_status(mesh, lambda st: st["connected"], 5.0)


async def test_index_going_backwards_is_reset_and_later_changes_arrive(
    consul: ConsulEmulator, backend: BackendFactory
) -> None:
    a, b = await backend("a"), await backend("b")
    consul.add_service("web", a.port, service_id="web-a")
    consul.add_service("web", b.port, service_id="web-b")
    mesh = Mesh.from_consul(consul.address, rng=random.Random(4))
    async with mesh:
        before = mesh.status()["watches"]["/v1/health/service/web"]["last_index"]
        await consul.wait_blocked(7)  # every watch parked on its index
        consul.restore_snapshot(1)  # Consul's indexes move back (snapshot restore): parked queries return
        await until_status(mesh, lambda st: st["watches"]["/v1/health/service/web"]["last_index"] < before)
        consul.set_check_status("web-b", "critical")  # a change after the reset must still arrive
        await until(mesh, lambda: served_by(mesh, "web") == {a.address}, 5.0)
        assert mesh.status()["connected"] is True


async def test_a_hung_consul_times_out_after_connect_plus_wait_plus_jitter(consul: ConsulEmulator) -> None:
    from meshlib.discovery.consul.client import ConsulClient, ConsulError, ConsulSettings

    consul.add_service("web", 8080, service_id="web-a")
    client = ConsulClient(ConsulSettings.resolve(consul.address, env={}, connect_timeout_s=0.2))
    try:
        first = await client.get("/v1/health/service/web")
        consul.set_latency(1.5)  # every answer now takes 1.5 s
        started = time.monotonic()
        with pytest.raises(ConsulError, match=r"no answer from Consul within 0\.5s"):
            # blocking: 0.2 s connect + 0.32 s wait + 0.02 s (wait/16) of server jitter allowed
            await client.get("/v1/health/service/web", index=first.index, wait_s=0.32)
        assert time.monotonic() - started < 3.0  # a hang guard; the raise above proves the early timeout
    finally:
        consul.set_latency(0.0)
        await client.close()
