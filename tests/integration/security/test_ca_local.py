"""Local trust: the CA's Unix socket identifies callers by their uid (SO_PEERCRED)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from meshlib.security import IssuanceRefused, MeshCA, SpiffeId, verify_svid
from meshlib.security.ca_client import CaClientCertificateSource
from meshlib.security.ca_local import LocalCaServer
from meshlib.security.ca_service import CertificateAuthorityService

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux-only"),
]
REVIEWS = SpiffeId.for_workload("default", "reviews")


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create_root()


async def test_known_uid_gets_its_identity(ca: MeshCA, tmp_path: Path) -> None:
    service = CertificateAuthorityService(ca)
    async with LocalCaServer(service, tmp_path / "ca.sock", {os.getuid(): REVIEWS}):
        source = CaClientCertificateSource(local_socket=tmp_path / "ca.sock", ca_trust_pem=ca.trust_bundle_pem)
        async with source:
            bundle = source.current()
    assert verify_svid(bundle.cert_chain_pem, ca.trust_bundle_pem, expected=REVIEWS) == REVIEWS
    assert service.stats.issued == 1


async def test_unknown_uid_and_other_identity_are_refused(ca: MeshCA, tmp_path: Path) -> None:
    service = CertificateAuthorityService(ca)
    socket_path = tmp_path / "ca.sock"
    async with LocalCaServer(service, socket_path, {os.getuid() + 1: REVIEWS}):
        source = CaClientCertificateSource(local_socket=socket_path, ca_trust_pem=ca.trust_bundle_pem)
        with pytest.raises(IssuanceRefused, match=f"PERMISSION_DENIED: uid {os.getuid()} has no identity"):
            await source.start()
    async with LocalCaServer(service, socket_path, {os.getuid(): REVIEWS}):
        other = CaClientCertificateSource(
            local_socket=socket_path, ca_trust_pem=ca.trust_bundle_pem, spiffe_id=SpiffeId.for_workload("x", "y")
        )
        with pytest.raises(IssuanceRefused, match="PERMISSION_DENIED: CSR asks for"):
            await other.start()
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(b"not json\n")
        await writer.drain()
        assert b"INVALID_ARGUMENT" in await reader.readline()
        writer.close()
    assert service.stats.issued == 0 and service.stats.refused == 3
