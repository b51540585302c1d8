"""Helpers for the mTLS tests: a mesh CA, SVIDs, TLS servers on loopback and mesh YAML."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

import meshlib
from meshlib.security.bundle import CertBundle, CertificateSource, StaticCertificateSource
from meshlib.security.ca import WORKLOAD_CHAIN_FILE, WORKLOAD_KEY_FILE, WORKLOAD_ROOT_FILE, MeshCA
from meshlib.security.peer import peer_identity
from meshlib.security.spiffe import SpiffeId

SERVICE = "reviews.default.svc.cluster.local"
ONE_REQUEST_PER_CONNECTION = "\n    connectionPool: {http: {maxRequestsPerConnection: 1}}"


def svid(ca: MeshCA, service_account: str, *, namespace: str = "default", ttl: timedelta = timedelta(hours=1),
         dns: tuple[str, ...] = ()) -> CertBundle:
    return ca.issue_bundle(SpiffeId.for_workload(namespace, service_account, ca.trust_domain), dns_names=dns, ttl=ttl)


def write_bundle(directory: Path, bundle: CertBundle) -> dict[str, str]:
    """The bundle as files (cert chain, key, CA) for DestinationRule MUTUAL / Envoy."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "cert": directory / WORKLOAD_CHAIN_FILE,
        "key": directory / WORKLOAD_KEY_FILE,
        "ca": directory / WORKLOAD_ROOT_FILE,
    }
    paths["cert"].write_bytes(bundle.cert_chain_pem)
    paths["key"].write_bytes(bundle.private_key_pem)
    paths["ca"].write_bytes(bundle.trust_bundle_pem)
    return {name: str(path) for name, path in paths.items()}


def write_svid(ca: MeshCA, directory: Path, spiffe_id: SpiffeId) -> Path:
    """An SVID for ``spiffe_id`` from ``ca``, written as a workload certificate directory
    (``cert-chain.pem``, ``key.pem``, ``root-cert.pem``); returns ``directory``."""
    write_bundle(directory, ca.issue_bundle(spiffe_id))
    return directory


@dataclass
class IdentityServer:
    """A loopback aiohttp server behind a mesh's server middleware that answers with the caller's identity."""

    mesh: meshlib.Mesh
    port: int = 0
    seen: list[str | None] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)  # of the client certificates, in request order
    runner: web.AppRunner | None = None

    async def start(self, ssl_context: ssl.SSLContext | None) -> IdentityServer:
        async def handle(request: web.Request) -> web.Response:
            peer = peer_identity(request)
            self.seen.append(str(peer) if peer is not None else None)
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            cert = ssl_object.getpeercert() if ssl_object is not None else None
            if cert:
                self.serials.append(int(cert["serialNumber"], 16))
            return web.json_response({"peer": str(peer) if peer is not None else None, "scheme": request.scheme})

        app = web.Application(middlewares=[self.mesh.server_middleware()])
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def client_yaml(port: int, tls: str, *, service_account: str = "") -> str:
    """A ServiceEntry for reviews on ``127.0.0.1:port`` and a DestinationRule with ``tls``."""
    sans = f"\n  subjectAltNames: [{service_account}]" if service_account else ""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{SERVICE}]
  location: MESH_INTERNAL
  resolution: STATIC{sans}
  ports:
  - {{number: 9080, name: http, protocol: HTTP}}
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls}
"""


def peer_authentication(mode: str, *, namespace: str = "default", extra: str = "") -> str:
    return f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}{extra}
"""


def mesh_with(path: Path, text: str, bundle: CertBundle | None = None, **kwargs: object) -> meshlib.Mesh:
    path.write_text(text)
    mesh = meshlib.Mesh.from_files(path, **kwargs)  # type: ignore[arg-type]
    if bundle is not None:
        mesh.use_certificates(StaticCertificateSource(bundle))
    return mesh


@dataclass
class MutualPair:
    """A STRICT server mesh behind an :class:`IdentityServer`, and an ISTIO_MUTUAL client mesh for it."""

    server_mesh: meshlib.Mesh
    server: IdentityServer
    client: meshlib.Mesh


async def start_mutual_pair(
    directory: Path, server_certs: CertificateSource, client_certs: CertificateSource, server_id: str
) -> MutualPair:
    """Start the server; the client expects ``server_id`` and dials a new connection for every request,
    so each request handshakes with the certificates current at that moment."""
    server_mesh = mesh_with(directory / "server.yaml", peer_authentication("STRICT"))
    server_mesh.use_certificates(server_certs)
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    client = mesh_with(
        directory / "client.yaml",
        client_yaml(server.port, "{mode: ISTIO_MUTUAL}" + ONE_REQUEST_PER_CONNECTION, service_account=server_id),
    )
    client.use_certificates(client_certs)
    return MutualPair(server_mesh, server, client)


async def traffic_with_rotation(
    client: meshlib.Mesh,
    url: str,
    rotate: Callable[[], Awaitable[None]],
    *,
    workers: int,
    requests_each: int,
    rotate_after: int,
) -> list[int]:
    """``workers`` concurrent loops of ``requests_each`` GETs of ``url`` through ``client`` (started and
    stopped here); ``rotate()`` is awaited once, by the loop that sees the ``rotate_after``-th response.
    Returns every response status, in arrival order."""
    statuses: list[int] = []
    rotated = asyncio.Event()

    async def traffic(http: object) -> None:
        for _ in range(requests_each):
            async with http.get(url) as resp:  # type: ignore[attr-defined]
                statuses.append(resp.status)
                await resp.read()
            if len(statuses) >= rotate_after and not rotated.is_set():
                rotated.set()  # before awaiting, so no other loop starts a second rotation
                await rotate()

    async with client, client.session() as http:
        await asyncio.gather(*(traffic(http) for _ in range(workers)))
    assert rotated.is_set(), f"fewer than {rotate_after} responses: the rotation never ran"
    return statuses


Factory = Callable[[], MeshCA]
