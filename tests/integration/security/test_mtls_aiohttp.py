"""mTLS between a meshlib aiohttp client and a meshlib aiohttp server: identities checked on both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.security.bundle import StaticCertificateSource
from meshlib.security.ca import MeshCA
from tests.conftest import BackendFactory
from tests.integration.security.mtls_setup import (
    IdentityServer,
    client_yaml,
    mesh_with,
    peer_authentication,
    svid,
)

pytestmark = pytest.mark.asyncio
URL = "http://reviews:9080/r"


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root("cluster.local")


@pytest_asyncio.fixture
async def strict_server(ca: MeshCA, tmp_path: Path) -> AsyncIterator[IdentityServer]:
    mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"), svid(ca, "reviews"))
    server = await IdentityServer(mesh).start(mesh.server_ssl_context())
    yield server
    await server.stop()


async def test_istio_mutual_identities_checked_both_sides(
    ca: MeshCA, strict_server: IdentityServer, tmp_path: Path
) -> None:
    client = mesh_with(
        tmp_path / "client.yaml",
        client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}", service_account="spiffe://cluster.local/ns/default/sa/reviews"),
        svid(ca, "productpage"),
    )
    async with client, client.session() as http:
        for _ in range(3):
            async with http.get(URL) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
    # The server saw the client's SVID, over TLS, although the application wrote http://.
    assert body == {"peer": "spiffe://cluster.local/ns/default/sa/productpage", "scheme": "https"}
    assert strict_server.seen == ["spiffe://cluster.local/ns/default/sa/productpage"] * 3


async def test_wrong_server_identity_refused_before_any_request_byte(
    ca: MeshCA, strict_server: IdentityServer, tmp_path: Path
) -> None:
    client = mesh_with(
        tmp_path / "client.yaml",
        client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}", service_account="spiffe://cluster.local/ns/default/sa/ratings"),
        svid(ca, "productpage"),
    )
    async with client, client.session() as http, http.get(URL) as resp:
        text = await resp.text()
    assert resp.status == 503
    assert resp.headers[LOCAL_REPLY_HEADER] == "UF"
    assert "transport failure reason: TLS_error: peer identity spiffe://cluster.local/ns/default/sa/reviews" in text
    assert strict_server.seen == []  # the server never got the request
    counters = client.stats()["clusters"]["outbound|9080||reviews.default.svc.cluster.local"]
    assert counters["ssl.fail_verify_san"] >= 1


async def test_wrong_trust_domain_refused(ca: MeshCA, strict_server: IdentityServer, tmp_path: Path) -> None:
    other = MeshCA.create_root("example.org")
    # The client trusts both roots, but a peer outside its own trust domain is still refused.
    bundle = svid(other, "productpage")
    client = mesh_with(tmp_path / "client.yaml", client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}"))
    from dataclasses import replace

    client.use_certificates(StaticCertificateSource(replace(bundle, trust_bundle_pem=ca.trust_bundle_pem)))
    async with client, client.session() as http, http.get(URL) as resp:
        text = await resp.text()
    assert resp.status == 503
    assert "is not in trust domain 'example.org'" in text
    assert strict_server.seen == []


async def test_untrusted_server_certificate_refused(ca: MeshCA, strict_server: IdentityServer, tmp_path: Path) -> None:
    other = MeshCA.create_root("cluster.local")
    client = mesh_with(tmp_path / "client.yaml", client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}"),
                       svid(other, "productpage"))
    async with client, client.session() as http, http.get(URL) as resp:
        text = await resp.text()
    assert resp.status == 503
    assert resp.headers[LOCAL_REPLY_HEADER] == "UF"
    assert "transport failure reason: TLS_error: CERTIFICATE_VERIFY_FAILED" in text
    counters = client.stats()["clusters"]["outbound|9080||reviews.default.svc.cluster.local"]
    assert counters["ssl.connection_error"] >= 1


async def test_istio_mutual_without_certificates_is_an_error_not_plaintext(
    tmp_path: Path, strict_server: IdentityServer
) -> None:
    client = mesh_with(tmp_path / "client.yaml", client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}"))
    async with client, client.session() as http, http.get(URL) as resp:
        text = await resp.text()
    assert resp.status == 503
    assert "uses ISTIO_MUTUAL but this mesh has no workload certificate" in text
    assert strict_server.seen == []


async def test_plaintext_to_strict_refused(ca: MeshCA, tmp_path: Path) -> None:
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"), svid(ca, "reviews"))
    server = await IdentityServer(server_mesh).start(None)  # the app also listens in plaintext
    try:
        client = mesh_with(tmp_path / "client.yaml", client_yaml(server.port, "{mode: DISABLE}"))
        async with client, client.session() as http, http.get(URL) as resp:
            text = await resp.text()
        assert resp.status == 403
        assert "plaintext refused: PeerAuthentication STRICT" in text
        assert server.seen == []
    finally:
        await server.stop()


async def test_missing_client_certificate_refused(ca: MeshCA, strict_server: IdentityServer, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.trust_bundle_pem)
    tls = f"{{mode: SIMPLE, caCertificates: {ca_file}, subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}}"
    client = mesh_with(tmp_path / "client.yaml", client_yaml(strict_server.port, tls))
    async with client, client.session() as http, http.get(URL) as resp:
        await resp.read()
    # TLS 1.3: the server's refusal of the missing certificate arrives after the client's handshake.
    assert resp.status == 503
    assert resp.headers[LOCAL_REPLY_HEADER] in ("UF", "UC")
    assert strict_server.seen == []


async def test_permissive_server_accepts_both(ca: MeshCA, tmp_path: Path) -> None:
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("PERMISSIVE"), svid(ca, "reviews"))
    tls_server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    plain_server = await IdentityServer(server_mesh).start(None)
    try:
        for server, tls, expected in (
            (tls_server, "{mode: ISTIO_MUTUAL}", "spiffe://cluster.local/ns/default/sa/productpage"),
            (plain_server, "{mode: DISABLE}", None),
        ):
            client = mesh_with(tmp_path / "client.yaml", client_yaml(server.port, tls), svid(ca, "productpage"))
            async with client, client.session() as http, http.get(URL) as resp:
                assert resp.status == 200
                assert (await resp.json())["peer"] == expected
    finally:
        await tls_server.stop()
        await plain_server.stop()


async def test_mirror_to_a_tls_cluster_goes_over_mtls(
    ca: MeshCA, strict_server: IdentityServer, backend: BackendFactory, tmp_path: Path
) -> None:
    primary = await backend("primary")
    mirror_yaml = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {primary.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings}}}}]
    mirror: {{host: reviews}}
    mirrorPercentage: {{value: 100}}
"""
    text = client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}") + "---\n" + mirror_yaml
    client = mesh_with(tmp_path / "client.yaml", text, svid(ca, "productpage"))
    async with client, client.session() as http:
        async with http.get("http://ratings:9080/r") as resp:
            assert resp.status == 200
        assert client._mirrors is not None
        await client._mirrors.drain()
    # The shadow reached the STRICT server over mTLS, with the workload's identity.
    assert strict_server.seen == ["spiffe://cluster.local/ns/default/sa/productpage"]
    # Without a workload certificate the mirror cluster's TLS cannot be honoured: no shadow at all.
    bare = mesh_with(tmp_path / "bare.yaml", text)
    async with bare, bare.session() as http:
        async with http.get("http://ratings:9080/r") as resp:
            assert resp.status == 200
        assert bare._mirrors is not None
        await bare._mirrors.drain()
    assert len(strict_server.seen) == 1
    assert primary.hits == 2


async def test_mesh_fed_by_xds_executes_istio_mutual(ca: MeshCA, strict_server: IdentityServer, tmp_path: Path) -> None:
    """DestinationRule tls travels control plane → CDS transport_socket → meshlib's xDS client → TLS on the wire."""
    from meshlib.config import load_snapshot
    from meshlib.controlplane import ControlPlane
    from meshlib.mesh import Mesh
    from meshlib.xds import ClientKind, encode_resources

    config = tmp_path / "client.yaml"
    config.write_text(client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}",
                                  service_account="spiffe://cluster.local/ns/default/sa/reviews"))
    async with ControlPlane(port=0, debounce_after=0.0) as plane:
        plane.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot([config]), ClientKind.MESHLIB))
        mesh = Mesh.from_xds(f"127.0.0.1:{plane.port}", node_id="tls-client")
        mesh.use_certificates(StaticCertificateSource(svid(ca, "productpage")))
        async with mesh, mesh.session() as http, http.get(URL) as resp:
            assert resp.status == 200
            assert (await resp.json())["peer"] == "spiffe://cluster.local/ns/default/sa/productpage"
        tls = mesh.snapshot.clusters["outbound|9080||reviews.default.svc.cluster.local"].policy.tls
    assert (tls.mode, tls.subject_alt_names) == ("ISTIO_MUTUAL", ("spiffe://cluster.local/ns/default/sa/reviews",))


async def test_peer_authentication_reload_to_strict_is_enforced(ca: MeshCA, tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    server_mesh = mesh_with(config, peer_authentication("PERMISSIVE"), svid(ca, "reviews"), poll_interval_s=0.05)
    async with server_mesh:
        server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())  # client cert optional
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(ca.trust_bundle_pem)
        tls = f"{{mode: SIMPLE, caCertificates: {ca_file}, subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}}"
        client = mesh_with(tmp_path / "client.yaml", client_yaml(server.port, tls))  # TLS, no client certificate
        try:
            async with client, client.session() as http:
                async with http.get(URL) as resp:
                    assert resp.status == 200 and (await resp.json())["peer"] is None
                attempts = server_mesh.reload_attempts
                config.write_text(peer_authentication("STRICT"))
                await server_mesh.wait_for_reload(attempts)
                async with http.get(URL) as resp:
                    text = await resp.text()
            assert resp.status == 403
            assert "TLS without a client certificate refused" in text
            assert server_mesh.inbound_tls().counters["ssl.no_certificate_refused"] == 1
            assert server.seen == [None]
        finally:
            await server.stop()


async def test_istio_mutual_without_certificates_is_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = mesh_with(tmp_path / "client.yaml", client_yaml(9, "{mode: ISTIO_MUTUAL}"))
    with caplog.at_level("WARNING", logger="meshlib.tls"):
        async with client:
            pass
    assert "use DestinationRule tls ISTIO_MUTUAL (e.g. outbound|9080||reviews.default.svc.cluster.local)" in caplog.text


async def test_bootstrap_certificate_provider_is_the_xds_mesh_identity(
    ca: MeshCA, strict_server: IdentityServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gRFC A29 file_watcher provider of the bootstrap (as `meshlib bootstrap --certs` writes) is used by
    ``Mesh.from_xds()`` for ISTIO_MUTUAL too: the workload needs no separate use_certificates call."""
    import json

    from meshlib.config import load_snapshot
    from meshlib.controlplane import ControlPlane
    from meshlib.mesh import Mesh
    from meshlib.xds import ClientKind, encode_resources, grpc_bootstrap
    from tests.integration.security.mtls_setup import write_bundle

    files = write_bundle(tmp_path / "certs", svid(ca, "productpage"))
    config = tmp_path / "client.yaml"
    config.write_text(client_yaml(strict_server.port, "{mode: ISTIO_MUTUAL}"))
    async with ControlPlane(port=0, debounce_after=0.0) as plane:
        plane.set_resources(ClientKind.MESHLIB, encode_resources(load_snapshot([config]), ClientKind.MESHLIB))
        providers = {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": files["cert"], "private_key_file": files["key"], "ca_certificate_file": files["ca"],
            "refresh_interval": "60s"}}}
        boot = grpc_bootstrap(f"127.0.0.1:{plane.port}", "bootstrapped", certificate_providers=providers)
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(boot))
        monkeypatch.delenv("GRPC_XDS_BOOTSTRAP", raising=False)
        mesh = Mesh.from_xds()
        assert mesh.certificates is not None
        async with mesh, mesh.session() as http, http.get(URL) as resp:
            assert resp.status == 200
            assert (await resp.json())["peer"] == "spiffe://cluster.local/ns/default/sa/productpage"
