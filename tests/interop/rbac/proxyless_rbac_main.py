"""Run in a subprocess by test_proxyless_rbac.py (grpcio's xDS server bootstrap is process-wide).

A meshlib control plane serves an xDS-enabled ``grpc.server(xds=True)`` its Listener with the
AuthorizationPolicies of mesh.yaml as RBAC filters (gRFC A41); a plain client calls three
methods and prints each status code as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from meshlib.config import load_snapshot
from meshlib.config.model import Labels, WorkloadIdentity
from meshlib.controlplane import ControlPlane, FileSnapshotSource
from meshlib.grpc.proxyless import install_bootstrap, with_server_listeners
from meshlib.security.rbac_xds import rbac_http_filters
from meshlib.xds import grpc_bootstrap


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main(config: Path) -> dict[str, str]:
    port = free_port()
    workload = WorkloadIdentity(namespace="foo", labels=Labels({"app": "echo"}))
    snapshot = load_snapshot([config], workload)
    source = FileSnapshotSource([config])
    source.load()
    filters = rbac_http_filters(snapshot.security, workload)
    serving = with_server_listeners(source, [("127.0.0.1", port)], http_filters=filters)
    async with ControlPlane(serving, port=0) as plane:
        install_bootstrap(grpc_bootstrap(plane.address, "rbac-test", cluster="interop"))

        def echo(request: bytes, context: Any) -> bytes:
            return request

        server = grpc.server(ThreadPoolExecutor(max_workers=4), xds=True)
        handlers = {name: grpc.unary_unary_rpc_method_handler(echo) for name in ("Open", "Secret", "Other")}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        results: dict[str, str] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                # The server serves only once its Listener (with the RBAC filters) has arrived.
                await channel.unary_unary("/test.Echo/Open")(b"x", wait_for_ready=True, timeout=30)
                for name in ("Open", "Secret", "Other"):
                    try:
                        await channel.unary_unary(f"/test.Echo/{name}")(b"x", timeout=10)
                        results[name] = "OK"
                    except grpc.aio.AioRpcError as error:
                        results[name] = error.code().name
        finally:
            server.stop(None)
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
