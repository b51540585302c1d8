"""Fixtures for live tests against the Consul emulator (meshlib.testing.consul)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest_asyncio

from meshlib.discovery.consul.source import consul_source_of
from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator
from tests.conftest import Backend, BackendFactory

HTTP = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
SUBSETS = {
    "Kind": "service-resolver",
    "Name": "web",
    "DefaultSubset": "v1",
    "Subsets": {"v1": {"Filter": '"v1" in Service.Tags'}, "v2": {"Filter": '"v2" in Service.Tags'}},
}


@contextlib.asynccontextmanager
async def emulator(**options: Any) -> AsyncIterator[ConsulEmulator]:
    """A started emulator; its parked blocking queries are released before it stops."""
    async with ConsulEmulator(**options) as started:
        try:
            yield started
        finally:
            # ConsulEmulator.stop() waits for queries parked in a blocking wait (up to their
            # `wait`): answering them with an error first lets the test end at once.
            await started.go_down("error", status=503, body="emulator stopping")


@pytest_asyncio.fixture
async def consul() -> AsyncIterator[ConsulEmulator]:
    """A Consul emulator on a free loopback port (dc1, plus dc2 for cross-datacenter tests)."""
    async with emulator(datacenters=("dc2",)) as started:
        yield started


def url(service: str, path: str = "/") -> str:
    """A request URL for a Consul service, as a Consul DNS user writes it."""
    return f"http://{service}.service.consul{path}"


async def web_v1_and_v2(
    consul: ConsulEmulator, backend: BackendFactory, resolver: Mapping[str, Any] = SUBSETS
) -> tuple[Backend, Backend]:
    """Backends ``v1`` and ``v2`` registered as instances of ``web`` (ids ``web-v1``/``web-v2``, tagged
    ``v1``/``v2``), ``web`` declared HTTP, and ``resolver`` (default: subsets v1/v2 by tag, v1 the default)."""
    v1, v2 = await backend("v1"), await backend("v2")
    consul.add_service("web", v1.port, service_id="web-v1", tags=["v1"])
    consul.add_service("web", v2.port, service_id="web-v2", tags=["v2"])
    consul.set_config_entry(HTTP)
    consul.set_config_entry(dict(resolver))
    return v1, v2


async def names(http: aiohttp.ClientSession, n: int, path: str = "/", **headers: str) -> Counter[str]:
    """Which backends (``x-backend``) answered ``n`` GETs of ``web``; every answer must be a 200."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        async with http.get(url("web", path), headers=headers) as response:
            assert response.status == 200, await response.text()
            seen[response.headers["x-backend"]] += 1
    return seen


def served_by(mesh: Mesh, service: str, **headers: str) -> set[str]:
    """The endpoints ``mesh.explain`` would pick from for a GET of ``service``."""
    decision: dict[str, Any] = mesh.explain("GET", url(service), headers)
    return {endpoint for found in decision["endpoints"].values() for endpoint in found}


async def until(mesh: Mesh, predicate: Callable[[], bool], timeout_s: float = 8.0) -> None:
    """Wait, rebuild by rebuild, until ``predicate()`` holds (no polling sleeps)."""
    source = consul_source_of(mesh)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await source.wait_for_rebuild(source.rebuilds, timeout_s)


def endpoints(mesh: Mesh, service: str) -> set[int]:
    """Ports of the endpoints the mesh holds for ``service`` (every cluster of it, any subset)."""
    return {
        endpoint.port
        for cluster in mesh.snapshot.clusters.values()
        if cluster.service.split(".")[0] == service or cluster.service == service
        for endpoint in cluster.endpoints
    }



async def until_status(mesh: Mesh, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 8.0) -> None:
    """Wait until ``predicate(mesh.status())`` holds, re-checked after every Consul watch request."""
    await consul_source_of(mesh).wait_for_status(lambda _: predicate(mesh.status()), timeout_s)
