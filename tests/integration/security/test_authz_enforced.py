"""AuthorizationPolicy enforced on real servers: aiohttp (plaintext and mTLS peers) and ``grpc.aio``."""

from __future__ import annotations

import ssl
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web

import meshlib
from meshlib.grpc.server import InboundPolicy, MeshServerInterceptor
from meshlib.security import CertBundle, MeshCA, SpiffeId
from tests.ports import free_port

pytestmark = pytest.mark.asyncio

WORKLOAD = {"namespace": "foo", "labels": {"app": "httpbin"}}

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep-reads, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    to:
    - operation: {methods: [GET], paths: ["/ok*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/ok/admin"]}
"""


def write_mesh(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "authz.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return directory


def files_of(bundle: CertBundle, directory: Path, name: str) -> tuple[Path, Path, Path]:
    cert, key, ca = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}-ca.pem"
    cert.write_bytes(bundle.cert_chain_pem)
    key.write_bytes(bundle.private_key_pem)
    ca.write_bytes(bundle.trust_bundle_pem)
    return cert, key, ca


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root("cluster.local")


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, port


def echo_app(mesh: meshlib.Mesh) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"handled {request.path}")

    app = web.Application(middlewares=[mesh.server_middleware()])
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest_asyncio.fixture
async def mtls_server(tmp_path: Path, ca: MeshCA) -> AsyncIterator[tuple[meshlib.Mesh, int, Path]]:
    mesh = meshlib.Mesh.from_files(write_mesh(tmp_path / "mesh", POLICIES), **WORKLOAD)  # type: ignore[arg-type]
    server = ca.issue_bundle(SpiffeId.for_workload("foo", "httpbin"), dns_names=["localhost"])
    cert, key, trust = files_of(server, tmp_path, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(trust))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_OPTIONAL  # PERMISSIVE: plaintext-identity (no cert) callers still connect
    async with mesh:
        runner, port = await serve(echo_app(mesh), context)
        try:
            yield mesh, port, trust
        finally:
            await runner.cleanup()


def client_context(ca: MeshCA, tmp_path: Path, trust: Path, account: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust))
    context.check_hostname = False  # SPIFFE identities are URI SANs: the peer is checked by identity, not name
    if account is not None:
        bundle = ca.issue_bundle(SpiffeId.for_workload("default", account))
        cert, key, _ = files_of(bundle, tmp_path, account)
        context.load_cert_chain(str(cert), str(key))
    return context


async def get(port: int, path: str, context: ssl.SSLContext, method: str = "GET") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"https://127.0.0.1:{port}{path}", ssl=context) as resp,
    ):
        return resp.status, await resp.text()


async def test_the_peer_certificate_identity_decides(
    mtls_server: tuple[meshlib.Mesh, int, Path], ca: MeshCA, tmp_path: Path
) -> None:
    mesh, port, trust = mtls_server
    sleep = client_context(ca, tmp_path, trust, "sleep")
    other = client_context(ca, tmp_path, trust, "other")
    anonymous = client_context(ca, tmp_path, trust, None)

    assert await get(port, "/ok/1", sleep) == (200, "handled /ok/1")
    assert await get(port, "/ok/1", other) == (403, "RBAC: access denied")
    assert await get(port, "/ok/1", anonymous) == (403, "RBAC: access denied")
    assert await get(port, "/ok/1", sleep, method="POST") == (403, "RBAC: access denied")
    assert await get(port, "/nope", sleep) == (403, "RBAC: access denied")
    # The mesh-wide DENY in the root namespace wins over the ALLOW.
    assert await get(port, "/ok/admin", sleep) == (403, "RBAC: access denied")
    # Dot segments are resolved before matching: no way around the DENY.
    assert await get(port, "/ok/x/../admin", sleep) == (403, "RBAC: access denied")

    inbound = mesh.stats()["inbound"]
    assert inbound["rbac.allowed"] == 1
    assert inbound["rbac.denied"] == 6
    assert inbound["denied_by_policy"] == {"istio-system/no-admin": 2, "(no ALLOW policy matched)": 4}
    scrape = mesh.prometheus_text()
    assert 'envoy_http_rbac_denied{envoy_http_conn_manager_prefix="inbound"} 6' in scrape
    assert 'meshlib_inbound_rbac_denied_by_policy{policy="istio-system/no-admin"} 2' in scrape


async def test_explain_inbound_names_the_policy_and_rule(mtls_server: tuple[meshlib.Mesh, int, Path]) -> None:
    mesh, _, _ = mtls_server
    sleep = "spiffe://cluster.local/ns/default/sa/sleep"
    allowed = mesh.explain_inbound("GET", "http://httpbin.foo:8000/ok", principal=sleep)
    assert (allowed["allowed"], allowed["policy"], allowed["rule"]) == (True, "foo/sleep-reads", 0)
    denied = mesh.explain_inbound(
        "GET", "http://httpbin.foo:8000/ok/admin", principal=sleep.removeprefix("spiffe://")
    )
    assert (denied["status"], denied["policy"]) == (403, "istio-system/no-admin")
    assert denied["reason"] == "matched a DENY policy"
    assert denied["policies"] == {"deny": ["istio-system/no-admin"], "allow": ["foo/sleep-reads"], "audit": []}


async def test_a_policy_added_by_hot_reload_applies_to_the_next_request(tmp_path: Path) -> None:
    directory = write_mesh(tmp_path / "mesh", "")
    mesh = meshlib.Mesh.from_files(directory, poll_interval_s=0.05, **WORKLOAD)  # type: ignore[arg-type]
    async with mesh:
        runner, port = await serve(echo_app(mesh))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{port}/data") as resp:
                    assert resp.status == 200
                attempts = mesh.reload_attempts
                (directory / "authz.yaml").write_text(
                    textwrap.dedent("""
                    apiVersion: security.istio.io/v1
                    kind: AuthorizationPolicy
                    metadata: {name: read-only-from-loopback, namespace: foo}
                    spec:
                      rules:
                      - from:
                        - source: {ipBlocks: ["127.0.0.0/8"]}
                        to:
                        - operation: {methods: [GET, HEAD]}
                    """)
                )
                await mesh.wait_for_reload(attempts)
                async with http.post(f"http://127.0.0.1:{port}/data") as resp:
                    assert (resp.status, await resp.text()) == (403, "RBAC: access denied")
                async with http.get(f"http://127.0.0.1:{port}/data") as resp:
                    assert resp.status == 200
        finally:
            await runner.cleanup()


async def test_grpc_calls_get_permission_denied(tmp_path: Path) -> None:
    text = """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: no-secrets, namespace: foo}
    spec:
      action: DENY
      rules:
      - to:
        - operation: {paths: ["/test.Echo/Secret*"], ports: ["%d"]}
    """
    port = free_port()
    mesh = meshlib.Mesh.from_files(write_mesh(tmp_path / "mesh", text % port), **WORKLOAD)  # type: ignore[arg-type]

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(echo) for name in ("Open", "SecretThing")
    }
    server = grpc.aio.server(interceptors=[MeshServerInterceptor(mesh, InboundPolicy(port=port))])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    async with mesh:
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await channel.unary_unary("/test.Echo/Open")(b"hi", timeout=5) == b"hi"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary("/test.Echo/SecretThing")(b"hi", timeout=5)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert caught.value.details() == "RBAC: access denied"
        finally:
            await server.stop(None)
    assert mesh.stats()["inbound"]["rbac.denied"] == 1
    assert mesh.stats()["inbound"]["rbac.allowed"] == 1


async def test_no_policy_no_cost_and_no_counting(tmp_path: Path) -> None:
    mesh = meshlib.Mesh.from_files(write_mesh(tmp_path / "mesh", ""), **WORKLOAD)  # type: ignore[arg-type]
    assert mesh.state.authz is None
    async with mesh:
        runner, port = await serve(echo_app(mesh))
        try:
            async with aiohttp.ClientSession() as http, http.delete(f"http://127.0.0.1:{port}/x") as resp:
                assert resp.status == 200
        finally:
            await runner.cleanup()
    assert mesh.stats()["inbound"]["rbac.allowed"] == 0

