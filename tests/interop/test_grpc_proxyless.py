"""Proxyless round trip in one process: ``meshlib.grpc.xds_channel`` → meshlib control plane → v1/v2.

The control plane serves translated Istio YAML (two versions of a gRPC
service, a VirtualService sending ``x-canary: true`` to v2); the client is
grpcio's own xDS client on a ``xds:///`` channel with a per-channel bootstrap,
so no process-wide environment is touched. The backends run behind
``mesh.grpc_server_interceptor()``, which also shows the request id of the
client reaching the server's context. Also runs ``examples/grpc_proxyless``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

import meshlib
from meshlib.controlplane import ControlPlane, FileSnapshotSource
from meshlib.grpc.proxyless import xds_channel
from meshlib.tracing.propagation import INBOUND_HEADERS
from meshlib.xds import grpc_bootstrap
from tests.interop.mesh_yaml import FQDN, service_yaml, virtual_service, write_config

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SERVICE_PORT = 50051
TARGET = f"xds:///{FQDN}:{SERVICE_PORT}"
METHOD = "/test.Reviews/Version"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpc_proxyless" / "main.py"


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """grpc.aio servers ``v1`` and ``v2`` behind the mesh interceptor, answering ``<version> <x-request-id>``."""
    mesh = meshlib.Mesh.from_files()
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    for version in ("v1", "v2"):

        async def answer(request: bytes, context: Any, v: str = version) -> bytes:
            return f"{v} {dict(INBOUND_HEADERS.get())['x-request-id']}".encode()

        server = grpc.aio.server(interceptors=[mesh.grpc_server_interceptor()])
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


async def test_xds_channel_routes_header_canary_to_v2(backends: dict[str, int], tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    write_config(
        config,
        service_yaml(SERVICE_PORT, "GRPC", backends["v1"], backends["v2"]) + "---\n" + virtual_service({"v1": 100}),
    )
    source = FileSnapshotSource([config])
    source.load()
    async with ControlPlane(source, port=0) as plane:
        bootstrap = grpc_bootstrap(plane.address, "proxyless-test", cluster="interop")
        async with xds_channel(TARGET, bootstrap=bootstrap) as channel:
            call = channel.unary_unary(METHOD)
            # The first call waits for LDS/RDS/CDS/EDS to arrive.
            first = await call(b"hi", wait_for_ready=True, timeout=30, metadata=(("x-request-id", "first"),))
            assert first == b"v1 first"
            plain = Counter([(await call(b"hi", timeout=5)).split()[0] for _ in range(10)])
            canary = Counter(
                [(await call(b"hi", timeout=5, metadata=(("x-canary", "true"),))).split()[0] for _ in range(10)]
            )
    assert plain == {b"v1": 10}
    assert canary == {b"v2": 10}
    assert not [
        t["last_nack"] for s in plane.status()["streams"] for t in s["types"].values() if t["last_nack"] is not None
    ]


async def test_grpc_proxyless_example_runs_to_completion() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(90):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode()
    assert process.returncode == 0, text + err.decode()[-4000:]
    assert "without header: v1" in text and "with x-canary: true: v2" in text
    assert "CSDS:" in text and "ACKED" in text
    # gRPC's C-core log lines (xDS notes, GOAWAY) are silenced by the example: stderr stays empty.
    assert err.decode() == "", err.decode()[-4000:]
