"""Run in a subprocess by test_proxyless_mtls.py (grpcio's xDS server bootstrap is process-wide).

meshlib's control plane serves a proxyless grpcio client and an xDS-enabled grpcio server:
CDS ``UpstreamTlsContext`` (ISTIO_MUTUAL) for the client, a STRICT ``DownstreamTlsContext``
Listener for the server, both naming the bootstrap's ``file_watcher`` certificate provider
(gRFC A29). The server's bootstrap (process-wide) carries its SVID files, the client's
(per channel) carries the client's. Prints the outcome of each call as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from meshlib.controlplane import ControlPlane, FileSnapshotSource
from meshlib.grpc.proxyless import install_bootstrap, with_server_listeners, xds_channel
from meshlib.security.peer import grpc_peer_identity
from meshlib.xds import grpc_bootstrap


def providers(directory: Path) -> dict[str, Any]:
    files = {
        "certificate_file": str(directory / "cert-chain.pem"),
        "private_key_file": str(directory / "key.pem"),
        "ca_certificate_file": str(directory / "root-cert.pem"),
    }
    return {"default": {"plugin_name": "file_watcher", "config": {**files, "refresh_interval": "1s"}}}


async def call(channel: grpc.aio.Channel, deadline_s: float) -> str:
    try:
        reply = await channel.unary_unary("/test.Echo/Who")(b"x", timeout=deadline_s, wait_for_ready=True)
        return f"OK {reply.decode()}"
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)


async def main(config: Path, port: int, server_certs: Path, client_certs: Path) -> dict[str, str]:
    source = FileSnapshotSource([config])
    source.load()
    serving = with_server_listeners(source, [("127.0.0.1", port)], mtls="STRICT")
    async with ControlPlane(serving, port=0) as plane:
        install_bootstrap(grpc_bootstrap(plane.address, "mtls-server", certificate_providers=providers(server_certs)))

        def who(request: bytes, context: Any) -> bytes:
            return str(grpc_peer_identity(context)).encode()

        server = grpc.server(ThreadPoolExecutor(max_workers=4), xds=True)
        handler = grpc.method_handlers_generic_handler("test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})
        server.add_generic_rpc_handlers((handler,))
        server.add_secure_port(f"127.0.0.1:{port}", grpc.xds_server_credentials(grpc.insecure_server_credentials()))
        server.start()
        client_boot = grpc_bootstrap(plane.address, "mtls-client", certificate_providers=providers(client_certs))
        credentials = grpc.xds_channel_credentials(grpc.local_channel_credentials())
        results: dict[str, str] = {}
        try:
            for name, deadline_s in (("reviews", 30.0), ("ratings", 4.0)):
                target = f"xds:///{name}.default.svc.cluster.local:{port}"
                async with xds_channel(target, bootstrap=client_boot, credentials=credentials) as channel:
                    results[name] = await call(channel, deadline_s)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                try:
                    await plain.unary_unary("/test.Echo/Who")(b"x", timeout=5)
                    results["plaintext"] = "OK"
                except grpc.aio.AioRpcError as error:
                    results["plaintext"] = error.code().name
        finally:
            server.stop(None)
    return results


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(asyncio.run(main(Path(args[0]), int(args[1]), Path(args[2]), Path(args[3])))))
