"""grpcio's native xDS client talking mTLS to the secure control plane (bootstrap channel_creds ``tls``, gRFC A65).

The client process gets a bootstrap from ``secure_bootstrap`` (SVID files for the xDS channel and a
``file_watcher`` certificate provider). With the right identity it routes; with an identity that
may not claim its node id it gets no configuration, and the plane records why.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from meshlib.controlplane import ControlPlane
from meshlib.security import MeshCA, SpiffeId
from meshlib.security.bootstrap_tls import secure_bootstrap
from meshlib.security.ca import WORKLOAD_ROOT_FILE
from meshlib.security.plane_security import ControlPlaneSecurity
from tests.integration.security.mtls_setup import write_svid
from tests.unit.controlplane import resources as r

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

TARGET = "echo.default.svc.cluster.local:50051"

CLIENT = """
import sys
import grpc

target, timeout = sys.argv[1], float(sys.argv[2])
with grpc.insecure_channel("xds:///" + target) as channel:
    try:
        print(channel.unary_unary("/test.Echo/Call")(b"ping", timeout=timeout, wait_for_ready=True).decode())
    except grpc.RpcError as exc:
        print("ERR:" + exc.code().name)
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


async def run_client(bootstrap: dict[str, object], timeout_s: float) -> str:
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
    env.pop("GRPC_XDS_BOOTSTRAP", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        TARGET,
        str(timeout_s),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s + 30):
        out, err = await process.communicate()
    result = out.decode().strip()
    if not result:
        pytest.fail(f"grpcio client printed nothing:\n{err.decode()[-3000:]}")
    return result


async def test_grpcio_xds_client_over_mtls(backend_port: int, tmp_path: Path) -> None:
    ca = MeshCA.create_root()
    security = ControlPlaneSecurity.from_ca(ca)
    async with ControlPlane(port=0, security=security) as plane:
        plane.set_resources("GRPC_PROXYLESS", r.service(TARGET, ("127.0.0.1", backend_port)))
        good = write_svid(ca, tmp_path / "good", SpiffeId.for_workload("default", "echo-client"))
        boot = secure_bootstrap(f"127.0.0.1:{plane.port}", "echo-client.default~grpcio", good)
        assert await run_client(boot, 20) == "pong:ping"
        streams = [s for s in plane.status()["streams"] if s["node_id"] == "echo-client.default~grpcio"]
        assert all(s["group"] == "GRPC_PROXYLESS" for s in streams)
        assert plane.status()["security"]["denied_total"] == 0

        # the same client certificate claiming another workload's node id: no configuration at all
        boot = secure_bootstrap(f"127.0.0.1:{plane.port}", "payments.default~grpcio", good)
        assert (await run_client(boot, 3)).startswith("ERR:")
        denied = plane.status()["security"]["denied"]
        assert denied and denied[0]["identity"] == "spiffe://cluster.local/ns/default/sa/echo-client"
        assert denied[0]["node_id"] == "payments.default~grpcio"

        # a certificate from another CA: the TLS handshake fails, nothing is served
        stranger = write_svid(MeshCA.create_root(), tmp_path / "stranger", SpiffeId.for_workload("default", "x"))
        (stranger / WORKLOAD_ROOT_FILE).write_bytes(ca.trust_bundle_pem)  # it trusts the plane, the plane not it
        boot = secure_bootstrap(f"127.0.0.1:{plane.port}", "x.default", stranger)
        assert (await run_client(boot, 3)).startswith("ERR:")
