"""grpcio's native xDS client (``xds:///reviews.default.svc.cluster.local:50051``) against our control plane.

The control plane serves translated Istio YAML from a watched file; two real
``grpc.aio`` servers on loopback answer with their version. The client runs in
a subprocess (grpcio's xDS bootstrap is process-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, FileSnapshotSource, StatusBoard
from meshlib.xds import grpc_bootstrap
from tests.interop.grpc_xds_client import GrpcXdsClient
from tests.interop.mesh_yaml import FQDN, service_yaml, virtual_service, write_config

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SERVICE_PORT = 50051
TARGET = f"xds:///{FQDN}:{SERVICE_PORT}"
METHOD = "/test.Reviews/Version"
NODE_ID = "grpcio-xds-interop"


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """Two grpc.aio servers, ``v1`` and ``v2``, answering ``/test.Reviews/Version`` with their name."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    for version in ("v1", "v2"):

        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes], v: str = version) -> bytes:
            return v.encode()

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "test.Reviews", {"Version": grpc.unary_unary_rpc_method_handler(answer)}
        )
        server.add_generic_rpc_handlers((handler,))
        ports[version] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    yield ports
    for server in servers:
        await server.stop(None)


def _synced(board: StatusBoard) -> bool:
    streams = [s for s in board.streams.values() if s.node_id == NODE_ID]
    wanted = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
    return bool(streams) and all(
        all(s.types[t].state == "SYNCED" for s in streams if t in s.types) and any(t in s.types for s in streams)
        for t in wanted
    )


def _nacks(status: dict[str, Any]) -> list[Any]:
    return [
        (url, t["last_nack"])
        for s in status["streams"]
        if s["node_id"] == NODE_ID
        for url, t in s["types"].items()
        if t["last_nack"] is not None
    ]


async def test_grpcio_routes_by_header_and_weight_and_follows_file_edits(
    backends: dict[str, int], tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    base = service_yaml(SERVICE_PORT, "GRPC", backends["v1"], backends["v2"])
    write_config(config, base + "---\n" + virtual_service({"v1": 100}, fault_route=True))
    source = FileSnapshotSource([config], poll_interval_s=0.1)
    source.load()
    async with ControlPlane(source, port=0, status_port=0) as plane:
        source.attach(plane)
        watcher = asyncio.create_task(source.watch())
        try:
            bootstrap = grpc_bootstrap(plane.address, NODE_ID, cluster="interop")
            async with GrpcXdsClient(TARGET, METHOD, bootstrap) as client:
                try:
                    # Default route → v1; header route → v2; the fault route aborts with 503 = UNAVAILABLE.
                    assert set(await client.calls(10)) == {"v1"}
                    assert set(await client.calls(10, {"x-canary": "true"})) == {"v2"}
                    assert await client.calls(1, {"x-fault": "abort"}) == ["ERR:UNAVAILABLE"]
                    async with asyncio.timeout(10):
                        await plane.wait_until(_synced)
                    first_version = source.snapshot.version if source.snapshot else ""

                    # Edit the watched file: the default route becomes a 50/50 split.
                    edited = time.monotonic()
                    write_config(config, base + "---\n" + virtual_service({"v1": 50, "v2": 50}))
                    seen_v2 = False
                    async with asyncio.timeout(10):
                        while not seen_v2:
                            seen_v2 = "v2" in await client.calls(5)
                    reached_after = time.monotonic() - edited
                    split = Counter(await client.calls(60))
                    assert set(split) == {"v1", "v2"} and min(split.values()) >= 10, split
                    assert set(await client.calls(5, {"x-canary": "true"})) == {"v2"}
                    # The fault route is gone with the edit.
                    assert "ERR:UNAVAILABLE" not in await client.calls(3, {"x-fault": "abort"})
                    async with asyncio.timeout(10):
                        await plane.wait_until(_synced)
                    status = plane.status()  # while the client's streams are open
                except BaseException:
                    print(await client.stderr_tail())
                    raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    print(f"config edit reached the grpcio client after {reached_after:.2f}s; split {dict(split)}")
    assert status["config_errors"] == []
    assert status["config_version"] != first_version
    assert not _nacks(status), json.dumps(status, indent=1)
    assert {s["group"] for s in status["streams"] if s["node_id"] == NODE_ID} == {"GRPC_PROXYLESS"}
