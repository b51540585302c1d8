"""The control plane's serving certificate rotates without restart (grpc dynamic SSL credentials)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from meshlib.controlplane import ControlPlane
from meshlib.security import MeshCA, SpiffeId
from meshlib.security.local_source import LocalCaCertificateSource
from meshlib.security.plane_security import ControlPlaneSecurity

pytestmark = pytest.mark.asyncio


async def served_certificate(port: int, client_ctx: ssl.SSLContext) -> x509.Certificate:
    """Handshake with the plane's mTLS port and return the certificate it presented."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


async def test_new_handshakes_get_the_rotated_certificate(tmp_path: Path) -> None:
    ca = MeshCA.create_root()
    security = ControlPlaneSecurity.from_ca(ca)
    assert isinstance(security.certificates, LocalCaCertificateSource)
    client = ca.issue_bundle(SpiffeId.for_workload("default", "reviews"))
    (tmp_path / "c.pem").write_bytes(client.cert_chain_pem)
    (tmp_path / "k.pem").write_bytes(client.private_key_pem)
    ctx = ssl.create_default_context(cadata=ca.trust_bundle_pem.decode())
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    ctx.set_alpn_protocols(["h2"])
    async with ControlPlane(port=0, security=security) as plane:
        first = await served_certificate(plane.port, ctx)
        assert first.serial_number == security.certificates.current().leaf.serial_number
        security.certificates.rotate_now()
        second = await served_certificate(plane.port, ctx)
        assert second.serial_number != first.serial_number
        assert second.serial_number == security.certificates.current().leaf.serial_number
        sans = second.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            "spiffe://cluster.local/ns/istio-system/sa/meshlib-control-plane"
        ]
