"""grpcio's native xDS client (``xds:///``) against the control plane: it accepts all four types and routes.

The xDS bootstrap is process-wide in grpcio, so the client runs in a
subprocess with ``GRPC_XDS_BOOTSTRAP_CONFIG``; the control plane and the
backend run on loopback in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, StatusBoard, render_status_table
from tests.unit.controlplane import resources as r

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

TARGET = "svc.test:50051"
NODE_ID = "grpcio-interop"

CLIENT = f"""
import sys
import grpc

with grpc.insecure_channel("xds:///{TARGET}") as channel:
    call = channel.unary_unary("/test.Echo/Call")
    print(call(b"ping", timeout=30, wait_for_ready=True).decode(), flush=True)
    sys.stdin.readline()  # keep the ADS stream open until the test has read the control plane's status
"""


@pytest_asyncio.fixture
async def backend_port() -> AsyncIterator[int]:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"pong:" + request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


def _bootstrap(port: int) -> str:
    return json.dumps({
        "xds_servers": [{
            "server_uri": f"127.0.0.1:{port}",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": NODE_ID, "cluster": "interop", "locality": {"zone": "z1"}},
    })


def _all_synced(board: StatusBoard) -> bool:
    streams = [s for s in board.streams.values() if s.node_id == NODE_ID]
    types = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
    return bool(streams) and all(any(t in s.types and s.types[t].state == "SYNCED" for s in streams) for t in types)


async def test_grpcio_xds_client_routes_through_our_resources(backend_port: int) -> None:
    async with ControlPlane(port=0) as plane:  # default node grouping: grpcio is the GRPC_PROXYLESS kind
        plane.set_resources("GRPC_PROXYLESS", r.service(TARGET, ("127.0.0.1", backend_port)))
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": _bootstrap(plane.port)}
        env.pop("GRPC_XDS_BOOTSTRAP", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        try:
            async with asyncio.timeout(60):
                line = await process.stdout.readline()
            if line.decode().strip() != "pong:ping":
                process.kill()
                pytest.fail(f"the xDS client failed: {line!r}\n{(await process.stderr.read()).decode()[-3000:]}")
            # The client ACKs each type as it accepts it; the last ACK may trail the RPC by a moment.
            try:
                async with asyncio.timeout(10):
                    await plane.wait_until(_all_synced)
            except TimeoutError:
                pytest.fail("not all types ACKed:\n" + json.dumps(plane.status(), indent=1))
            status: dict[str, Any] = plane.status()
            process.stdin.write(b"done\n")
            async with asyncio.timeout(30):
                await process.wait()
            assert process.returncode == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        streams = [s for s in status["streams"] if s["node_id"] == NODE_ID]
        assert streams and all(s["group"] == "GRPC_PROXYLESS" for s in streams)
        for stream in streams:
            for type_status in stream["types"].values():
                assert type_status["last_nack"] is None, type_status
        print(render_status_table(status))
