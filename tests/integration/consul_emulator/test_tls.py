"""The emulator over HTTPS (an agent with TLS on its HTTP API), with and without client certificates."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlib.testing.consul import consul_emulator


def _issue(tmp: Path, name: str, issuer_key: ec.EllipticCurvePrivateKey | None = None,
           issuer: x509.Certificate | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is None or issuer_key is None:
        cert = (builder.issuer_name(subject).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
                .sign(key, hashes.SHA256()))
    else:
        cert = (builder.issuer_name(issuer.subject)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .sign(issuer_key, hashes.SHA256()))
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return key, cert


@pytest.mark.asyncio
async def test_https_with_client_certificates(tmp_path: Path) -> None:
    ca_key, ca = _issue(tmp_path, "ca")
    _issue(tmp_path, "server", ca_key, ca)
    _issue(tmp_path, "client", ca_key, ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client_ctx.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    async with consul_emulator(set_env=False, ssl_context=server_ctx) as consul:
        consul.add_service("web", 8080)
        assert consul.url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{consul.url}/v1/health/service/web", ssl=client_ctx) as resp:
                assert resp.status == 200
                assert [e["Service"]["Service"] for e in await resp.json()] == ["web"]
            no_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"{consul.url}/v1/health/service/web", ssl=no_cert) as resp:
                    await resp.read()
            await consul.go_down("refuse")
            await consul.come_back()  # the listener comes back with TLS
            async with http.get(f"{consul.url}/v1/catalog/services", ssl=client_ctx) as resp:
                assert await resp.json() == {"web": []}
