"""``@grpc/grpc-js-xds`` (npm), an xDS client independent of grpcio, routes by our control plane's resources.

Two grpc.aio servers on loopback (v1, v2) answer the same unary method with
their version. An Istio config (ServiceEntry + DestinationRule subsets +
VirtualService: ``x-canary: true`` → v2, otherwise v1) is compiled with
``load_snapshot`` and served as the GRPC_PROXYLESS resources by an embedded
ControlPlane. ``node client.js`` (grpc-js + grpc-js-xds, pinned in
package.json / package-lock.json) dials ``xds:///<fqdn>:<port>`` with the
bootstrap in ``GRPC_XDS_BOOTSTRAP_CONFIG`` and prints one JSON line per call.

The Node dependencies are installed by CI (``npm ci --prefix tests/interop/grpc_js``);
when they are missing this test fails and says so rather than skipping.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from meshlib.config import load_snapshot
from meshlib.config.model import Locality
from meshlib.controlplane import CLUSTER, ENDPOINT, LISTENER, ROUTE, ControlPlane, StatusBoard, render_status_table
from meshlib.xds import ClientKind, encode_resources, grpc_bootstrap

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
CLIENT_JS = HERE / "client.js"
NODE_MODULES = HERE / "node_modules"

FQDN = "echo.default.svc.cluster.local"
PORT = 50051
TARGET = f"xds:///{FQDN}:{PORT}"
METHOD = "/test.Echo/Call"
NODE_ID = "grpc-js-interop"
CALLS = 5
TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{fqdn}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {fqdn}
{policy}  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{fqdn}]
  http:
  - name: canary
    match: [{{headers: {{x-canary: {{exact: "true"}}}}}}]
    route: [{{destination: {{host: {fqdn}, subset: v2}}}}]
  - name: default
{route_extras}    route: [{{destination: {{host: {fqdn}, subset: v1}}}}]
"""


# Extra Istio features whose xDS the proxyless encoding must make acceptable to grpc-js (no NACK), while
# routing stays the same: LEAST_REQUEST (grpc-js NACKs it in CDS), circuit breaking, outlier detection,
# and on the default route a timeout, retries and a (0 %) fault.
TRAFFIC_POLICY = """\
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {http: {http2MaxRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
"""
ROUTE_EXTRAS = """\
    timeout: 3s
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: unavailable}
    fault: {delay: {percentage: {value: 0.0}, fixedDelay: 1s}}
"""


def _node_and_modules() -> str:
    """The ``node`` binary; fails (never skips) when Node or the pinned npm packages are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the grpc-js-xds interop test needs Node.js (>= 18)")
    missing = [p for p in ("@grpc/grpc-js", "@grpc/grpc-js-xds") if not (NODE_MODULES / p / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed in {NODE_MODULES}: "
            "run `npm ci --prefix tests/interop/grpc_js` (CI's .ci/run does this before pytest)"
        )
    return node


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """Two loopback grpc.aio servers answering ``/test.Echo/Call`` with their version: ``{version: port}``."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    for version in ("v1", "v2"):

        async def call(request: bytes, context: grpc.aio.ServicerContext, version: str = version) -> bytes:
            return version.encode()

        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})
        server.add_generic_rpc_handlers((handler,))
        ports[version] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    yield ports
    for server in servers:
        await server.stop(None)


def _grpc_js_streams(board: StatusBoard) -> list[Any]:
    return [s for s in board.streams.values() if s.node_id == NODE_ID]


def _all_synced(board: StatusBoard) -> bool:
    streams = _grpc_js_streams(board)
    return bool(streams) and all(any(t in s.types and s.types[t].state == "SYNCED" for s in streams) for t in TYPES)


async def _read_until_done(stdout: asyncio.StreamReader, events: list[dict[str, Any]]) -> None:
    """Append the client's JSON lines to ``events`` up to its ``done`` line (or its exit)."""
    while line := await stdout.readline():
        event = json.loads(line)
        events.append(event)
        if event.get("event") == "done":
            return


@pytest.mark.parametrize(
    ("policy", "route_extras"), [("", ""), (TRAFFIC_POLICY, ROUTE_EXTRAS)], ids=["plain", "traffic-policy"]
)
async def test_grpc_js_xds_routes_by_header(
    backends: dict[str, int], tmp_path: Path, policy: str, route_extras: str
) -> None:
    node = _node_and_modules()
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH.format(fqdn=FQDN, port=PORT, policy=policy, route_extras=route_extras, **backends))
    resources = encode_resources(load_snapshot([config]), ClientKind.GRPC_PROXYLESS)

    async with ControlPlane(port=0) as plane:  # default node grouping: grpc-js must be recognised as proxyless
        plane.set_resources(ClientKind.GRPC_PROXYLESS, resources)
        # grpc-js-xds rejects a bootstrap whose node has no "locality" ("locality field missing in node element").
        bootstrap = grpc_bootstrap(plane.address, NODE_ID, cluster="interop", locality=Locality("local", "z1"))
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
        env.pop("GRPC_XDS_BOOTSTRAP", None)
        process = await asyncio.create_subprocess_exec(
            node, str(CLIENT_JS), "--target", TARGET, "--method", METHOD, "--deadline-ms", "8000",
            "--count", str(CALLS),
            "--count", str(CALLS), "--metadata", "x-canary=true",
            "--hold",
            cwd=HERE, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        events: list[dict[str, Any]] = []

        async def client_failed(why: str) -> None:
            if process.returncode is None:
                process.kill()
            stderr = (await process.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
            pytest.fail(
                f"{why}\nclient output: {json.dumps(events, indent=1)}\n"
                f"control plane status: {json.dumps(plane.status(), indent=1)}\nclient stderr:\n{stderr[-3000:]}"
            )

        try:
            try:
                async with asyncio.timeout(15):
                    await _read_until_done(process.stdout, events)
            except TimeoutError:
                await client_failed("grpc-js client did not finish its calls within 15 s")
            if not events or events[-1].get("event") != "done":
                await client_failed("grpc-js client exited before its `done` line")
            # The client ACKs each type as it accepts it; the last ACK may trail the first RPC.
            try:
                async with asyncio.timeout(5):
                    await plane.wait_until(_all_synced)
            except TimeoutError:
                await client_failed("grpc-js did not ACK all four types")
            status: dict[str, Any] = plane.status()
            process.stdin.write(b"done\n")
            await process.stdin.drain()
            async with asyncio.timeout(10):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    print(render_status_table(status))
    calls = [e for e in events if e.get("event") == "call"]
    failed = [e for e in calls if not e["ok"]]
    assert not failed, f"grpc-js calls failed: {failed}"
    assert len(calls) == 2 * CALLS
    without = Counter(e["reply"] for e in calls if e["batch"] == 0)
    with_header = Counter(e["reply"] for e in calls if e["batch"] == 1)
    assert without == {"v1": CALLS}, f"calls without x-canary went to {dict(without)}"
    assert with_header == {"v2": CALLS}, f"calls with x-canary: true went to {dict(with_header)}"
    assert process.returncode == 0

    streams = [s for s in status["streams"] if s["node_id"] == NODE_ID]
    assert streams, status
    for stream in streams:
        assert stream["user_agent"].startswith("gRPC Node"), stream["user_agent"]
        assert stream["group"] == ClientKind.GRPC_PROXYLESS, f"grpc-js ({stream['user_agent']}) not seen as proxyless"
        for type_url, type_status in stream["types"].items():
            assert type_status["last_nack"] is None, f"grpc-js NACKed {type_url}: {type_status['last_nack']}"
    for type_url in TYPES:
        assert any(s["types"].get(type_url, {}).get("state") == "SYNCED" for s in streams), (type_url, streams)
