"""Fixtures for live tests against the Consul emulator (meshlib.testing.consul)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from meshlib.discovery.consul.source import consul_source_of
from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator


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
