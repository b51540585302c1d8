"""How meshlib reaches Consul: https verified with CONSUL_CACERT (refused without it), and a Unix socket."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshlib.mesh import Mesh
from meshlib.testing.consul import ConsulEmulator
from tests.conftest import BackendFactory
from tests.integration.consul.conftest import emulator, served_by, until_status

pytestmark = pytest.mark.asyncio


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consul test CA")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "consul.pem", directory / "consul-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest_asyncio.fixture
async def https_consul(tmp_path: Path) -> AsyncIterator[tuple[ConsulEmulator, str, Path]]:
    """The emulator's HTTP API served over TLS on localhost (its certificate is its own CA)."""
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    emulator = ConsulEmulator()
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield emulator, f"https://localhost:{port}", cert_file
    finally:
        await emulator.go_down("error", status=503)  # release parked blocking queries
        await runner.cleanup()


async def test_https_consul_verified_with_consul_cacert(
    https_consul: tuple[ConsulEmulator, str, Path], backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, address, ca_file = https_consul
    a = await backend("a")
    emulator.add_service("web", a.port, service_id="web-a")
    monkeypatch.setenv("CONSUL_CACERT", str(ca_file))
    mesh = Mesh.from_consul(address)
    async with mesh:
        assert mesh.status()["synced"] is True
        assert served_by(mesh, "web") == {a.address}
    # by IP address, the certificate's name given as Consul's CLI takes it
    monkeypatch.setenv("CONSUL_TLS_SERVER_NAME", "localhost")
    by_ip = Mesh.from_consul(address.replace("localhost", "127.0.0.1"))
    async with by_ip:
        assert served_by(by_ip, "web") == {a.address}
    monkeypatch.delenv("CONSUL_TLS_SERVER_NAME")
    monkeypatch.delenv("CONSUL_CACERT")
    untrusted = Mesh.from_consul(address, initial_sync_timeout_s=0.3)
    async with untrusted:
        await until_status(untrusted, lambda st: all(w["last_error"] for w in st["watches"].values()))
        errors = " ".join(untrusted.status()["last_error"])
        assert "CERTIFICATE_VERIFY_FAILED" in errors or "certificate verify failed" in errors, errors
        assert untrusted.status()["synced"] is False


async def test_agent_on_a_unix_socket(tmp_path: Path, backend: BackendFactory) -> None:
    emulator = ConsulEmulator()
    a = await backend("a")
    emulator.add_service("web", a.port, service_id="web-a")
    runner = web.AppRunner(emulator.make_app(), access_log=None)
    await runner.setup()
    socket_path = tmp_path / "consul.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        mesh = Mesh.from_consul(f"unix://{socket_path}")
        async with mesh:
            assert mesh.status()["address"] == f"unix://{socket_path}"
            assert served_by(mesh, "web") == {a.address}
    finally:
        await emulator.go_down("error", status=503)
        await runner.cleanup()


async def test_large_answers_are_read_whole_and_oversized_ones_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import meshlib.discovery.consul.client as client_module

    async with emulator() as consul:
        for i in range(2000):  # one health answer of a few MB, many TCP reads
            consul.add_service("big", 10000 + i, service_id=f"big-{i}", address=f"10.1.{i // 250}.{i % 250 + 1}")
        client = client_module.ConsulClient(client_module.ConsulSettings.resolve(consul.address, env={}))
        try:
            response = await client.get("/v1/health/service/big")
            assert len(response.body) > 1_000_000
            assert len(response.json()) == 2000
            monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 100_000)
            with pytest.raises(client_module.ConsulError, match="larger than 100000 bytes"):
                await client.get("/v1/health/service/big")
        finally:
            await client.close()
