"""Certificates over time on real loopback peers: rotation under traffic, expiry, CA rotation; the old regression."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.security.bundle import StaticCertificateSource
from meshlib.security.ca import MeshCA
from tests.conftest import BackendFactory
from tests.integration.security.mtls_setup import (
    IdentityServer,
    client_yaml,
    mesh_with,
    peer_authentication,
    start_mutual_pair,
    svid,
    traffic_with_rotation,
    write_bundle,
)

pytestmark = pytest.mark.asyncio
URL = "http://reviews:9080/r"
REVIEWS_ID = "spiffe://cluster.local/ns/default/sa/reviews"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/productpage"


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificates(pem)[0].serial_number


async def test_rotation_under_traffic_without_a_failed_request(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    server_source = StaticCertificateSource(svid(ca, "reviews"))
    client_source = StaticCertificateSource(svid(ca, "productpage"))
    pair = await start_mutual_pair(tmp_path, server_source, client_source, REVIEWS_ID)
    server_mesh, server, client = pair.server_mesh, pair.server, pair.client
    first_client, first_server = client_source.current(), server_source.current()

    async def rotate() -> None:  # both sides, mid-stream (every request dials a new connection)
        client_source.replace(svid(ca, "productpage"))
        server_source.replace(svid(ca, "reviews"))

    try:
        statuses = await traffic_with_rotation(client, URL, rotate, workers=4, requests_each=30, rotate_after=40)
    finally:
        await server.stop()
    assert statuses == [200] * 120
    new_client = serial(client_source.current().cert_chain_pem)
    # The server saw the old client certificate first and the new one after the rotation, nothing else.
    assert set(server.serials) == {serial(first_client.cert_chain_pem), new_client}
    assert server.serials[-1] == new_client
    assert server_mesh.inbound_tls().counters["rotations"] == 1
    assert client.upstream_tls().generation >= 1
    assert serial(first_server.cert_chain_pem) != serial(server_source.current().cert_chain_pem)


async def test_ca_rotation_refuses_certificates_of_the_old_ca(tmp_path: Path) -> None:
    old_ca, new_ca = MeshCA.create_root("cluster.local"), MeshCA.create_root("cluster.local")
    server_source = StaticCertificateSource(svid(old_ca, "reviews"))
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"))
    server_mesh.use_certificates(server_source)
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    try:
        old_client = mesh_with(tmp_path / "old.yaml", client_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                               svid(old_ca, "productpage"))
        async with old_client, old_client.session() as http, http.get(URL) as resp:
            assert resp.status == 200
        server_source.replace(svid(new_ca, "reviews"))  # the trust bundle is now the new root only
        async with old_client, old_client.session() as http, http.get(URL) as resp:
            text = await resp.text()
        assert resp.status == 503
        assert "CERTIFICATE_VERIFY_FAILED" in text
        new_client = mesh_with(tmp_path / "new.yaml", client_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                               svid(new_ca, "productpage"))
        async with new_client, new_client.session() as http, http.get(URL) as resp:
            assert resp.status == 200
        assert server.seen == [CLIENT_ID, CLIENT_ID]
    finally:
        await server.stop()


async def test_expired_certificates_refused(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    past = ca.clock() - timedelta(days=2)
    expired_ca = MeshCA(ca.key, ca.chain, ca.trust_domain, clock=lambda: past)
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"),
                            svid(expired_ca, "reviews", ttl=timedelta(hours=1)))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    try:
        client = mesh_with(tmp_path / "client.yaml", client_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                           svid(ca, "productpage"))
        async with client, client.session() as http, http.get(URL) as resp:
            text = await resp.text()
        assert resp.status == 503 and resp.headers[LOCAL_REPLY_HEADER] == "UF"
        assert "certificate has expired" in text
    finally:
        await server.stop()
    # And a client whose own certificate expired is refused by a valid server.
    server_mesh = mesh_with(tmp_path / "server2.yaml", peer_authentication("STRICT"), svid(ca, "reviews"))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    try:
        client = mesh_with(tmp_path / "client2.yaml", client_yaml(server.port, "{mode: ISTIO_MUTUAL}"),
                           svid(expired_ca, "productpage", ttl=timedelta(hours=1)))
        async with client, client.session() as http, http.get(URL) as resp:
            await resp.read()
        assert resp.status == 503
        assert server.seen == []
    finally:
        await server.stop()


async def test_mutual_with_files_and_simple_with_host_name(tmp_path: Path) -> None:
    ca = MeshCA.create_root("cluster.local")
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("STRICT"),
                            svid(ca, "reviews", dns=("reviews.default.svc.cluster.local",)))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    files = write_bundle(tmp_path / "certs", svid(ca, "productpage"))
    try:
        mutual = (f"{{mode: MUTUAL, clientCertificate: {files['cert']}, privateKey: {files['key']}, "
                  f"caCertificates: {files['ca']}, subjectAltNames: [{REVIEWS_ID}]}}")
        client = mesh_with(tmp_path / "mutual.yaml", client_yaml(server.port, mutual))
        async with client, client.session() as http, http.get(URL) as resp:
            assert resp.status == 200
            assert (await resp.json())["peer"] == CLIENT_ID
        # SIMPLE without subjectAltNames: ssl checks the host the application called (a DNS SAN)...
        plain_server_mesh = mesh_with(tmp_path / "s2.yaml", peer_authentication("PERMISSIVE"),
                                      svid(ca, "reviews", dns=("reviews.default.svc.cluster.local",)))
        permissive = await IdentityServer(plain_server_mesh).start(plain_server_mesh.server_ssl_context())
        try:
            simple = f"{{mode: SIMPLE, caCertificates: {files['ca']}, sni: reviews.default.svc.cluster.local}}"
            client = mesh_with(tmp_path / "simple.yaml", client_yaml(permissive.port, simple))
            async with client, client.session() as http, http.get(URL) as resp:
                assert resp.status == 200
                assert (await resp.json())["peer"] is None  # no client certificate in SIMPLE
            # ...and refuses a server whose certificate does not carry the expected name.
            wrong = f"{{mode: SIMPLE, caCertificates: {files['ca']}, sni: ratings.default.svc.cluster.local}}"
            client = mesh_with(tmp_path / "wrong.yaml", client_yaml(permissive.port, wrong))
            async with client, client.session() as http, http.get(URL) as resp:
                text = await resp.text()
            assert resp.status == 503 and "Hostname mismatch" in text
        finally:
            await permissive.stop()
    finally:
        await server.stop()


@pytest.mark.parametrize("mode", ["SIMPLE", "ISTIO_MUTUAL"])
async def test_regression_tls_setting_never_goes_out_in_plaintext(
    backend: BackendFactory, tmp_path: Path, mode: str
) -> None:
    """Issue 12: a DestinationRule tls validated and the request then went out in plaintext with 200."""
    plaintext = await backend("plain")
    ca = MeshCA.create_root("cluster.local")
    client = mesh_with(tmp_path / "client.yaml", client_yaml(plaintext.port, f"{{mode: {mode}}}"),
                       svid(ca, "productpage"))
    async with client, client.session() as http, http.get(URL) as resp:
        text = await resp.text()
    assert resp.status == 503, text
    assert resp.headers[LOCAL_REPLY_HEADER] == "UF"
    assert "transport failure reason: TLS_error" in text
    assert plaintext.hits == 0  # not one plaintext request reached the backend


async def test_ca_crl_refuses_a_revoked_server_certificate(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes, serialization

    ca = MeshCA.create_root("cluster.local")
    server_bundle = svid(ca, "reviews", dns=("reviews.default.svc.cluster.local",))
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("PERMISSIVE"), server_bundle)
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    files = write_bundle(tmp_path / "certs", svid(ca, "productpage"))
    now = datetime.now(UTC)

    def crl(revoked: list[int]) -> Path:
        builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
        builder = builder.last_update(now - timedelta(minutes=1)).next_update(now + timedelta(hours=1))
        for number in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(number).revocation_date(now).build()
            )
        path = tmp_path / f"crl-{len(revoked)}.pem"
        path.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path

    tls = (f"{{mode: SIMPLE, caCertificates: {files['ca']}, caCrl: %s, "
           f"subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}}")
    try:
        clean = mesh_with(tmp_path / "clean.yaml", client_yaml(server.port, tls % crl([])))
        async with clean, clean.session() as http, http.get(URL) as resp:
            assert resp.status == 200
        revoked = mesh_with(tmp_path / "revoked.yaml",
                            client_yaml(server.port, tls % crl([serial(server_bundle.cert_chain_pem)])))
        async with revoked, revoked.session() as http, http.get(URL) as resp:
            text = await resp.text()
        assert resp.status == 503
        assert "certificate revoked" in text, text
    finally:
        await server.stop()


async def test_insecure_skip_verify_accepts_an_untrusted_server(tmp_path: Path) -> None:
    untrusted = MeshCA.create_root("cluster.local")
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("PERMISSIVE"), svid(untrusted, "reviews"))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())
    try:
        # Verifying against the system roots fails; insecureSkipVerify (as in Istio) verifies nothing.
        strict = mesh_with(tmp_path / "simple.yaml", client_yaml(server.port, "{mode: SIMPLE}"))
        async with strict, strict.session() as http, http.get(URL) as resp:
            assert resp.status == 503
        skip = mesh_with(tmp_path / "skip.yaml", client_yaml(server.port, "{mode: SIMPLE, insecureSkipVerify: true}"))
        async with skip, skip.session() as http, http.get(URL) as resp:
            assert resp.status == 200
            assert (await resp.json())["scheme"] == "https"
    finally:
        await server.stop()


async def test_passthrough_cluster_with_tls_is_never_plaintext(backend: BackendFactory, tmp_path: Path) -> None:
    """A resolution-NONE ServiceEntry dials the original destination: with a DestinationRule tls, over TLS."""
    plaintext = await backend("plain")
    ca = MeshCA.create_root("cluster.local")
    server_mesh = mesh_with(tmp_path / "server.yaml", peer_authentication("PERMISSIVE"), svid(ca, "ext"))
    server = await IdentityServer(server_mesh).start(server_mesh.server_ssl_context())

    def passthrough(port: int) -> str:
        return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext}}
spec:
  hosts: [ext.example]
  resolution: NONE
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ext}}
spec:
  host: ext.example
  trafficPolicy: {{tls: {{mode: SIMPLE, insecureSkipVerify: true}}}}
"""

    try:
        # Passthrough traffic fails as the application's own call would (no retries, no local reply).
        client = mesh_with(tmp_path / "to-plain.yaml", passthrough(plaintext.port))
        async with client, client.session() as http:
            host = {"Host": f"ext.example:{plaintext.port}"}
            with pytest.raises(aiohttp.ClientConnectorSSLError):
                await http.get(f"http://127.0.0.1:{plaintext.port}/r", headers=host)
        assert plaintext.hits == 0
        client = mesh_with(tmp_path / "to-tls.yaml", passthrough(server.port))
        async with client, client.session() as http, http.get(
            f"http://127.0.0.1:{server.port}/r", headers={"Host": f"ext.example:{server.port}"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["scheme"] == "https"
    finally:
        await server.stop()
