"""Workload identity end to end: a mesh CA, bootstrap tokens, SVIDs from the CA, an mTLS call.

    python examples/workload_identity.py

1. creates a mesh CA and a CA service (the API Istio's agents use) on a loopback TLS port,
   with one bootstrap token per workload;
2. ``reviews`` and ``productpage`` each get a short-lived SVID from it (CSR + token);
3. ``reviews`` serves HTTPS with ``mesh.server_ssl_context()`` under PeerAuthentication STRICT;
   ``productpage`` calls it through ``mesh.session()`` with DestinationRule ``ISTIO_MUTUAL`` —
   the server sees the caller's SPIFFE ID;
4. a stolen-looking request (a token for another identity) is refused by the CA.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

import meshlib
from meshlib.security import IssuanceRefused, MeshCA, SpiffeId, StaticCertificateSource
from meshlib.security.ca_client import CaClientCertificateSource
from meshlib.security.ca_service import BootstrapTokens, CertificateAuthorityService
from meshlib.security.grpc_credentials import rotating_server_credentials
from meshlib.security.peer import peer_identity

REVIEWS = SpiffeId.for_workload("default", "reviews")
PRODUCTPAGE = SpiffeId.for_workload("default", "productpage")

SERVER_MESH = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""

CLIENT_MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  subjectAltNames: [{reviews}]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"""


async def main() -> dict[str, Any]:
    ca = MeshCA.create_root("cluster.local")
    tokens = {"reviews-bootstrap-token-0001": REVIEWS, "productpage-bootstrap-token-0001": PRODUCTPAGE}
    service = CertificateAuthorityService(ca, tokens=BootstrapTokens({t: (i, []) for t, i in tokens.items()}))
    ca_identity = StaticCertificateSource(
        ca.issue_bundle(SpiffeId.for_workload("istio-system", "ca"), ip_addresses=["127.0.0.1"])
    )
    ca_server = grpc.aio.server()
    service.add_to_server(ca_server)
    ca_port = ca_server.add_secure_port(
        "127.0.0.1:0", rotating_server_credentials(ca_identity, require_client_auth=False)
    )
    await ca_server.start()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def source(token: str) -> CaClientCertificateSource:
            (work / token).write_text(token)
            return CaClientCertificateSource(
                f"127.0.0.1:{ca_port}", ca_trust_pem=ca.trust_bundle_pem, token_file=work / token
            )

        async with (
            source("reviews-bootstrap-token-0001") as reviews_certs,
            source("productpage-bootstrap-token-0001") as productpage_certs,
        ):
            print(f"reviews got {reviews_certs.current().spiffe_id}, valid until {reviews_certs.current().not_after}")
            print(f"productpage got {productpage_certs.current().spiffe_id}")

            (work / "server.yaml").write_text(SERVER_MESH)
            server_mesh = meshlib.Mesh.from_files(work / "server.yaml")
            server_mesh.use_certificates(reviews_certs)

            async def handle(request: web.Request) -> web.Response:
                return web.json_response({"caller": str(peer_identity(request))})

            app = web.Application(middlewares=[server_mesh.server_middleware()])
            app.router.add_get("/reviews/1", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_mesh.server_ssl_context())
            await site.start()
            port = runner.addresses[0][1]
            try:
                (work / "client.yaml").write_text(CLIENT_MESH.format(reviews=REVIEWS, port=port))
                client = meshlib.Mesh.from_files(work / "client.yaml")
                client.use_certificates(productpage_certs)
                async with client, client.session() as http, http.get("http://reviews:9080/reviews/1") as resp:
                    result["status"] = resp.status
                    result["caller"] = (await resp.json())["caller"]
                print(f"productpage → reviews over mTLS: {result['status']}, reviews saw {result['caller']}")
            finally:
                await runner.cleanup()

        (work / "wrong").write_text("reviews-bootstrap-token-0001")
        impostor = CaClientCertificateSource(
            f"127.0.0.1:{ca_port}", ca_trust_pem=ca.trust_bundle_pem, token_file=work / "wrong", spiffe_id=PRODUCTPAGE
        )
        try:
            await impostor.start()
        except IssuanceRefused as exc:
            result["refused"] = str(exc)
            print(f"a reviews token asking for productpage: {exc}")
    await ca_server.stop(None)
    return result


if __name__ == "__main__":
    asyncio.run(main())
