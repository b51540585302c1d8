"""mTLS on mesh-managed gRPC channels: per-cluster credentials, server credentials following rotation, peer identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

import meshlib
from meshlib.security.bundle import StaticCertificateSource
from meshlib.security.ca import MeshCA
from meshlib.security.peer import grpc_peer_identity
from tests.integration.security.mtls_setup import mesh_with, peer_authentication, svid, write_bundle

pytestmark = pytest.mark.asyncio
FQDN = "reviews.default.svc.cluster.local"
METHOD = "/test.Echo/Who"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/productpage"
CLUSTER = f"outbound|50051||{FQDN}"


@dataclass
class IdentityGrpcServer:
    port: int = 0
    seen: list[str | None] = field(default_factory=list)
    server: grpc.aio.Server | None = None

    async def start(
        self, credentials: grpc.ServerCredentials | None, interceptors: tuple[Any, ...] = ()
    ) -> IdentityGrpcServer:
        async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            peer = grpc_peer_identity(context)
            self.seen.append(str(peer) if peer is not None else None)
            return str(peer).encode()

        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
        )
        self.server = grpc.aio.server(interceptors=interceptors)
        self.server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


def grpc_yaml(port: int, tls: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{FQDN}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy: {{tls: {tls}}}
"""


@pytest_asyncio.fixture
async def ca() -> AsyncIterator[MeshCA]:
    yield MeshCA.create_root("cluster.local")


async def call(mesh: meshlib.Mesh) -> bytes:
    async with mesh.grpc_channel(f"{FQDN}:50051") as channel:
        reply: bytes = await channel.unary_unary(METHOD)(b"x", timeout=10)
        return reply


async def test_istio_mutual_grpc_channel_and_rotating_server(ca: MeshCA, tmp_path: Path) -> None:
    server_source = StaticCertificateSource(svid(ca, "reviews", dns=(FQDN,)))  # grpcio checks the DNS SAN
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"))
    server_mesh.use_certificates(server_source)
    server = await IdentityGrpcServer().start(server_mesh.inbound_tls().grpc_server_credentials())
    try:
        client = mesh_with(tmp_path / "client.yaml", grpc_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                           svid(ca, "productpage"))
        async with client:
            assert await call(client) == CLIENT_ID.encode()
            server_source.replace(svid(ca, "reviews", dns=(FQDN,)))  # rotated: new handshakes get the new one
            assert await call(client) == CLIENT_ID.encode()
        assert server.seen == [CLIENT_ID, CLIENT_ID]
    finally:
        await server.stop()


async def test_grpc_refusals(ca: MeshCA, tmp_path: Path) -> None:
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"),
                            svid(ca, "reviews", dns=(FQDN,)))
    server = await IdentityGrpcServer().start(server_mesh.inbound_tls().grpc_server_credentials())
    try:
        # No workload certificate: a clear local error, never a plaintext call.
        bare = mesh_with(tmp_path / "bare.yaml", grpc_yaml(server.port, "{mode: ISTIO_MUTUAL}"))
        async with bare:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(bare)
        assert error.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "no workload certificate" in (error.value.details() or "")
        # A client of another CA is refused in the handshake.
        stranger = mesh_with(tmp_path / "stranger.yaml", grpc_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                             svid(MeshCA.create_root("cluster.local"), "productpage"))
        async with stranger:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(stranger)
        assert error.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "transport failure reason: TLS_error: Tls handshake failed" in (error.value.details() or "")
        assert stranger.stats()["clusters"][CLUSTER]["ssl.connection_error"] >= 1
        # A server that is not the name the client verifies (grpcio checks the DNS SAN).
        wrong_tls = "{mode: ISTIO_MUTUAL, sni: other.example}"
        wrong_name = mesh_with(tmp_path / "wrong.yaml", grpc_yaml(server.port, wrong_tls), svid(ca, "productpage"))
        async with wrong_name:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(wrong_name)
        assert "Hostname Verification Check failed" in (error.value.details() or "")
        assert wrong_name.stats()["clusters"][CLUSTER]["ssl.fail_verify_san"] >= 1
        # A plaintext client never reaches the handler.
        plain = mesh_with(tmp_path / "plain.yaml", grpc_yaml(server.port, "{mode: DISABLE}"))
        async with plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await call(plain)
        # A URI-only subjectAltNames cannot be checked by grpcio: refused rather than widened.
        uri_only = mesh_with(
            tmp_path / "uri.yaml",
            grpc_yaml(server.port, "{mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/x]}"),
            svid(ca, "productpage"),
        )
        async with uri_only:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(uri_only)
        assert "grpcio cannot verify URI subjectAltNames" in (error.value.details() or "")
        assert server.seen == []
    finally:
        await server.stop()


async def test_strict_interceptor_refuses_plaintext_calls(ca: MeshCA, tmp_path: Path) -> None:
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"),
                            svid(ca, "reviews", dns=(FQDN,)))
    interceptor = server_mesh.grpc_server_interceptor()
    plain = await IdentityGrpcServer().start(None, (interceptor,))
    secure = await IdentityGrpcServer().start(server_mesh.inbound_tls().grpc_server_credentials(), (interceptor,))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{plain.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await channel.unary_unary(METHOD)(b"x", timeout=10)
        assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "plaintext refused: PeerAuthentication STRICT" in (error.value.details() or "")
        assert plain.seen == []
        client = mesh_with(tmp_path / "client.yaml", grpc_yaml(secure.port, "{mode: ISTIO_MUTUAL}"),
                           svid(ca, "productpage"))
        async with client:
            assert await call(client) == CLIENT_ID.encode()
        assert server_mesh.inbound_tls().counters["tls_inspector.plaintext_refused"] == 1
    finally:
        await plain.stop()
        await secure.stop()


async def test_mutual_files_on_a_grpc_channel(ca: MeshCA, tmp_path: Path) -> None:
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"),
                            svid(ca, "reviews", dns=(FQDN,)))
    server = await IdentityGrpcServer().start(server_mesh.inbound_tls().grpc_server_credentials())
    files = write_bundle(tmp_path / "certs", svid(ca, "productpage"))
    try:
        tls = (f"{{mode: MUTUAL, clientCertificate: {files['cert']}, privateKey: {files['key']}, "
               f"caCertificates: {files['ca']}, subjectAltNames: [{FQDN}]}}")
        client = mesh_with(tmp_path / "client.yaml", grpc_yaml(server.port, tls))
        async with client:
            assert await call(client) == CLIENT_ID.encode()
        assert server.seen == [CLIENT_ID]
    finally:
        await server.stop()
