"""Proxyless gRPC against the meshlib control plane, end to end in one process.

1. The meshlib control plane serves ``mesh.yaml`` (translated to xDS), plus the
   Listeners the xDS-enabled servers wait for (:func:`with_server_listeners`).
2. The process-wide gRPC bootstrap points at it (:func:`install_bootstrap`).
3. Two xDS-enabled sync servers (``grpc.server(executor, xds=True)``), v1 and
   v2, start serving once their Listener arrives.
4. An ``xds:///`` client (:func:`xds_channel`) calls without and with
   ``x-canary: true``: gRPC's own xDS client routes to v1 / v2.
5. CSDS (``grpc_csds.add_csds_servicer`` on an admin server) dumps what the
   process's xDS clients received, with each resource's ACK status.

Run: ``python examples/grpc_proxyless/main.py``. It prints the routing results
and the CSDS summary, then exits.

gRPC's C core writes its own log lines to stderr (INFO notes such as "xDS
Listener resource obtained", GOAWAY on shutdown). It reads ``GRPC_VERBOSITY``
once, when ``grpc`` is first imported, so the example sets it to ``ERROR``
before that import; an application does the same (or exports
``GRPC_VERBOSITY=ERROR``), and a value already in the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before the first `import grpc` (see above)

import asyncio
import socket
import string
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc_csds  # type: ignore[import-untyped]  # the grpcio-csds package ships no types
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from meshlib.controlplane import ControlPlane, FileSnapshotSource
from meshlib.grpc.proxyless import install_bootstrap, with_server_listeners, xds_channel
from meshlib.xds import grpc_bootstrap

HERE = Path(__file__).resolve().parent
TARGET = "xds:///greeter.default.svc.cluster.local:50051"
METHOD = "/example.Greeter/Hello"


def free_port() -> int:
    # An xDS server's Listener is named after its address, so the port must be known up front.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def xds_server(version: str, port: int) -> grpc.Server:
    """A sync xDS-enabled server answering ``METHOD`` with its version (the only kind grpcio offers)."""

    def hello(request: bytes, context: Any) -> bytes:
        return version.encode()

    server = grpc.server(ThreadPoolExecutor(max_workers=4), xds=True)
    handlers = {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("example.Greeter", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


async def csds_summary(admin_port: int) -> list[str]:
    """One line per resource the process's xDS clients hold: client scope, type, name, status."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
    lines = []
    for config in response.config:
        scope = config.client_scope or config.node.id
        for resource in config.generic_xds_configs:
            status = config_dump_shared_pb2.ClientResourceStatus.Name(resource.client_status)
            lines.append(f"CSDS: {scope} {resource.type_url.rsplit('.', 1)[-1]} {resource.name} {status}")
    return sorted(lines)


async def main() -> dict[str, Counter[str]]:
    ports = {"v1": free_port(), "v2": free_port()}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh.yaml"
        template = string.Template((HERE / "mesh.yaml").read_text())
        config.write_text(template.substitute(V1_PORT=ports["v1"], V2_PORT=ports["v2"]))
        source = FileSnapshotSource([config])
        source.load()
        serving = with_server_listeners(source, [("127.0.0.1", port) for port in ports.values()])
        async with ControlPlane(serving, port=0) as plane:
            # Process-wide: the xDS servers have no per-server bootstrap option.
            install_bootstrap(grpc_bootstrap(plane.address, "grpc-proxyless-example", cluster="example"))
            servers = [xds_server(version, port) for version, port in ports.items()]
            admin = grpc.server(ThreadPoolExecutor(max_workers=2))
            grpc_csds.add_csds_servicer(admin)
            admin_port = admin.add_insecure_port("127.0.0.1:0")
            admin.start()
            try:
                seen: dict[str, Counter[str]] = {"plain": Counter(), "canary": Counter()}
                async with xds_channel(TARGET) as channel:
                    call = channel.unary_unary(METHOD)
                    # wait_for_ready: the first call waits for the xDS config and for the servers' Listeners.
                    await call(b"hi", wait_for_ready=True, timeout=30)
                    for _ in range(5):
                        seen["plain"][(await call(b"hi", timeout=5)).decode()] += 1
                        reply = await call(b"hi", timeout=5, metadata=(("x-canary", "true"),))
                        seen["canary"][reply.decode()] += 1
                    print("without header:", ", ".join(sorted(seen["plain"])))
                    print("with x-canary: true:", ", ".join(sorted(seen["canary"])))
                    for line in await csds_summary(admin_port):
                        print(line)
            finally:
                for server in (*servers, admin):
                    server.stop(None)
    return seen


if __name__ == "__main__":
    asyncio.run(main())
