"""gRPC unary overhead: plain ``grpc.aio`` vs ``mesh.grpc_channel`` vs a native ``xds:///`` channel, same run.

    python bench/grpc_overhead.py [--requests 3000] [--rounds 3] [--quick] [--no-xds]

The server ("echo", raw bytes, generic handler) runs in its own process. The
``xds`` path is grpcio's own xDS client fed by ``meshlib control-plane`` (a
second subprocess) serving the same Istio YAML as the mesh; its LB is
ROUND_ROBIN there because grpcio NACKs LEAST_REQUEST. Each path is measured
sequentially (concurrency 1) and at concurrency 16, in interleaved rounds so
machine drift hits every path alike. Printed: p50/p99 latency, throughput, and
ratios against plain measured in this run (target: meshlib p50 ≤ 1.10×).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from _harness import Send, free_port, pin_client, pin_server, report, wait_port  # bench/ is the script's directory

import meshlib

FQDN = "reviews.default.svc.cluster.local"
TARGET = f"{FQDN}:50051"
METHOD = "/bench.Echo/Call"

MESH_YAML = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{fqdn}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {port}}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: {lb}}}
    connectionPool:
      http: {{http2MaxRequests: 1000, http1MaxPendingRequests: 1000}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}}}]
  - name: default
    route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}, weight: 100}}]
    retries: {{attempts: 2, perTryTimeout: 1s, retryOn: "unavailable,cancelled,connect-failure"}}
"""


# ---------------------------------------------------------------------- server process


def serve(port_file: str) -> None:
    """The echo server (``--serve PORT_FILE``): writes its port to the file, runs until killed."""

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> None:
        server = grpc.aio.server()
        handlers = {"Call": grpc.unary_unary_rpc_method_handler(call)}
        handler = grpc.method_handlers_generic_handler("bench.Echo", handlers)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await server.wait_for_termination()

    asyncio.run(main())


# ---------------------------------------------------------------------- client side


def _start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "server.port"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(port_file)],
        preexec_fn=pin_server,  # noqa: PLW1509 - one sched_setaffinity call, before any thread here
    )
    deadline = time.monotonic() + 15
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def _start_control_plane(config: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.cli", "control-plane", "--config", str(config), "--port", str(port),
         "--status-port", "-1"],
        stdout=subprocess.DEVNULL,
        preexec_fn=pin_server,  # noqa: PLW1509 - see _start_server
    )
    return proc, port




def _sender(channel: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Send:
    call = channel.unary_unary(METHOD)
    payload = b"x" * 64

    async def send() -> None:
        reply = await call(payload, metadata=metadata)
        if len(reply) != len(payload):
            raise RuntimeError("bad reply")

    return send


async def run(requests: int, rounds: int, with_xds: bool) -> None:
    pin_client()  # before any gRPC thread exists: they inherit it
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server, port = _start_server(tmp)
        procs = [server]
        try:
            config = tmp / "mesh.yaml"
            config.write_text(MESH_YAML.format(fqdn=FQDN, port=port, lb="LEAST_REQUEST"))
            xds_port = None
            if with_xds:
                xds_config = tmp / "xds" / "mesh.yaml"
                xds_config.parent.mkdir()
                xds_config.write_text(MESH_YAML.format(fqdn=FQDN, port=port, lb="ROUND_ROBIN"))
                plane, xds_port = _start_control_plane(xds_config)
                procs.append(plane)
                await wait_port(xds_port)  # grpcio backs off for a while after a refused ADS connect
                from meshlib.xds import grpc_bootstrap

                # Process-wide in grpcio: set before the first xds:/// channel exists.
                os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(
                    grpc_bootstrap(f"127.0.0.1:{xds_port}", "grpc-overhead-bench")
                )
                os.environ.pop("GRPC_XDS_BOOTSTRAP", None)
            mesh = meshlib.Mesh.from_files(config)
            async with (
                mesh,
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain,
                mesh.grpc_channel(TARGET) as meshed,
            ):
                paths: dict[str, Send] = {"plain": _sender(plain), "meshlib": _sender(meshed)}
                xds_channel = None
                if xds_port is not None:
                    xds_channel = grpc.aio.insecure_channel(f"xds:///{TARGET}")
                    try:
                        # The first call waits for the control plane's resources (and the plane's start).
                        await xds_channel.unary_unary(METHOD)(b"warm", timeout=30, wait_for_ready=True)
                        paths["xds"] = _sender(xds_channel)
                    except grpc.aio.AioRpcError as exc:
                        print(f"xds:/// channel failed ({exc.code().name}: {exc.details()}): skipping that path")
                try:
                    grpc_version = f", grpcio {grpc.__version__}"
                    await report(paths, requests, rounds, baseline="plain", unit="calls", extra=grpc_version)
                finally:
                    if xds_channel is not None:
                        await xds_channel.close()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--no-xds", action="store_true", help="skip the native xds:/// path")
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.quick:
        args.requests, args.rounds = 300, 1
    asyncio.run(run(args.requests, args.rounds, not args.no_xds))


if __name__ == "__main__":
    main()
